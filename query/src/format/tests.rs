use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;

use super::*;
use crate::testing::{T0, timestamp_type};

fn output() -> QueryOutput {
    let schema = Arc::new(Schema::new(vec![
        Field::new("bucket", timestamp_type(), false),
        Field::new("country", DataType::Utf8, true),
        Field::new("events", DataType::Int64, false),
        Field::new("users", DataType::Binary, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![T0, T0 + 60_123]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![Some("de"), None])),
        Arc::new(Int64Array::from(vec![3, 4])),
        Arc::new(BinaryArray::from(vec![Some(&[1u8, 14, 0xab][..]), None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    // Two batches: the writers must join them.
    QueryOutput { schema, batches: vec![batch.slice(0, 1), batch.slice(1, 1)] }
}

fn empty() -> QueryOutput {
    let output = output();
    QueryOutput { schema: output.schema, batches: vec![] }
}

fn text(output: &QueryOutput, format: Format) -> String {
    String::from_utf8(encode(output, format).unwrap()).unwrap()
}

#[test]
fn names_parse_and_unknown_names_list_the_choices() {
    for format in Format::ALL {
        assert_eq!(Format::parse(format.name()).unwrap(), format);
        assert_eq!(format.name().to_uppercase().parse::<Format>().unwrap(), format);
    }
    let err = Format::parse("xml").unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }));
    assert_eq!(err.to_string(), "unknown format `xml`: use one of json, ndjson, csv, arrow");
    assert_eq!(Format::Json.content_type(), "application/json");
    assert_eq!(Format::Ndjson.content_type(), "application/x-ndjson");
    assert!(Format::Csv.content_type().starts_with("text/csv"));
    assert_eq!(Format::Arrow.content_type(), "application/vnd.apache.arrow.stream");
}

#[test]
fn json_is_an_array_of_row_objects() {
    assert_eq!(
        text(&output(), Format::Json),
        r#"[{"bucket":"2026-01-01T10:00:00Z","country":"de","events":3,"users":"010eab"},{"bucket":"2026-01-01T10:01:00.123Z","country":null,"events":4,"users":null}]"#
    );
    assert_eq!(text(&empty(), Format::Json), "[]");
    let parsed: serde_json::Value = serde_json::from_slice(&encode(&output(), Format::Json).unwrap()).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
}

#[test]
fn ndjson_is_one_object_per_line() {
    assert_eq!(
        text(&output(), Format::Ndjson),
        "{\"bucket\":\"2026-01-01T10:00:00Z\",\"country\":\"de\",\"events\":3,\"users\":\"010eab\"}\n\
         {\"bucket\":\"2026-01-01T10:01:00.123Z\",\"country\":null,\"events\":4,\"users\":null}\n"
    );
    assert_eq!(text(&empty(), Format::Ndjson), "");
}

#[test]
fn csv_has_a_header_and_rows() {
    assert_eq!(
        text(&output(), Format::Csv),
        "bucket,country,events,users\n\
         2026-01-01T10:00:00Z,de,3,010eab\n\
         2026-01-01T10:01:00.123Z,,4,\n"
    );
    assert_eq!(text(&empty(), Format::Csv), "bucket,country,events,users\n");
}

#[test]
fn arrow_is_an_ipc_stream() {
    for output in [output(), empty()] {
        let bytes = encode(&output, Format::Arrow).unwrap();
        let reader = StreamReader::try_new(bytes.as_slice(), None).unwrap();
        assert_eq!(reader.schema(), output.schema);
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches, output.batches);
    }
}

#[test]
fn nested_columns_cannot_be_csv() {
    let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int64Type, _, _>(vec![Some(vec![
        Some(1),
        Some(2),
    ])]);
    let schema = Arc::new(Schema::new(vec![Field::new("l", list.data_type().clone(), true)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list)]).unwrap();
    let output = QueryOutput { schema, batches: vec![batch] };
    assert_eq!(text(&output, Format::Json), r#"[{"l":[1,2]}]"#);
    match encode(&output, Format::Csv) {
        Err(Error::Encode { format: "csv", message }) => assert!(message.contains("Nested"), "{message}"),
        other => panic!("{other:?}"),
    }
}
