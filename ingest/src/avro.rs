//! Avro message values (feature `kafka`): a datum decoded with its writer schema
//! (given in the table's config, or found by the id of Confluent's wire format)
//! and handed to the JSON decoder as the equivalent JSON object, so validation,
//! types and dead-letter reasons are the same as for JSON.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use weir_storage::config::AvroConfig;

/// The largest allocation one Avro value may make while decoding.
pub const MAX_AVRO_ALLOCATION: usize = weir_storage::log::MAX_RECORD_BYTES;

/// The writer schemas of one table.
#[derive(Debug)]
pub struct AvroFormat {
    plain: Option<Schema>,
    confluent: BTreeMap<u32, Schema>,
}

impl AvroFormat {
    /// Parses the configured schemas; the error names the one that is invalid.
    pub fn new(cfg: &AvroConfig) -> Result<AvroFormat, String> {
        // A datum's length prefixes are the producer's word: no string, bytes
        // or array of one may take more than a log record can hold (apache-avro
        // refuses larger claims instead of allocating them; set once per process).
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let parse = |what: &str, text: &str| {
            Schema::parse_str(text).map_err(|e| format!("the Avro {what} is not a valid schema: {e}"))
        };
        let plain = cfg.schema.as_deref().map(|s| parse("schema", s)).transpose()?;
        let mut confluent = BTreeMap::new();
        for (id, text) in &cfg.confluent {
            confluent.insert(*id, parse(&format!("schema {id}"), text)?);
        }
        Ok(AvroFormat { plain, confluent })
    }

    /// One message value as a JSON object; the error is the dead-letter reason.
    pub fn to_json(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let (schema, mut datum) = match &self.plain {
            Some(s) => (s, bytes),
            None => {
                if bytes.len() < 5 || bytes[0] != 0 {
                    return Err(
                        "invalid Avro: not Confluent's wire format (a zero byte and a 4-byte schema id first)".into()
                    );
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                let schema = self
                    .confluent
                    .get(&id)
                    .ok_or_else(|| format!("invalid Avro: schema id {id} is not in the table's config"))?;
                (schema, &bytes[5..])
            }
        };
        let value = apache_avro::from_avro_datum(schema, &mut datum, None).map_err(|e| format!("invalid Avro: {e}"))?;
        if !datum.is_empty() {
            return Err(format!("invalid Avro: {} bytes left after the datum", datum.len()));
        }
        let Value::Record(fields) = value else {
            return Err("invalid Avro: the datum is not a record".into());
        };
        let mut object = serde_json::Map::with_capacity(fields.len());
        for (name, v) in fields {
            let json = serde_json::Value::try_from(millis(v)).map_err(|e| format!("field `{name}`: {e}"))?;
            object.insert(name, json);
        }
        Ok(serde_json::to_vec(&object).expect("JSON serializes"))
    }
}

/// Timestamps in milliseconds, as the table's `epoch_millis` time format reads them.
fn millis(v: Value) -> Value {
    match v {
        Value::Union(i, inner) => Value::Union(i, Box::new(millis(*inner))),
        Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Value::Long(t.div_euclid(1_000)),
        Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Value::Long(t.div_euclid(1_000_000)),
        Value::LocalTimestampMillis(t) => Value::Long(t),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "tx", "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "card", "type": "string"},
        {"name": "amount", "type": ["null", "double"]}
    ]}"#;

    fn datum(ts_us: i64, card: &str, amount: Option<f64>) -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let v = Value::Record(vec![
            ("ts".into(), Value::TimestampMicros(ts_us)),
            ("card".into(), Value::String(card.into())),
            (
                "amount".into(),
                match amount {
                    Some(a) => Value::Union(1, Box::new(Value::Double(a))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
        ]);
        apache_avro::to_avro_datum(&schema, v).unwrap()
    }

    #[test]
    fn plain_and_confluent_datums_become_json_objects() {
        let plain = AvroFormat::new(&AvroConfig { schema: Some(SCHEMA.into()), confluent: BTreeMap::new() }).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&plain.to_json(&datum(1_700_000_000_123_456, "c1", Some(2.5))).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"ts": 1_700_000_000_123i64, "card": "c1", "amount": 2.5}));
        let null: serde_json::Value = serde_json::from_slice(&plain.to_json(&datum(0, "c2", None)).unwrap()).unwrap();
        assert_eq!(null["amount"], serde_json::Value::Null);

        let wire = AvroFormat::new(&AvroConfig { schema: None, confluent: BTreeMap::from([(7, SCHEMA.to_string())]) })
            .unwrap();
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend(datum(5_000, "c3", Some(1.0)));
        let json: serde_json::Value = serde_json::from_slice(&wire.to_json(&framed).unwrap()).unwrap();
        assert_eq!(json["card"], "c3");
        framed[4] = 8;
        assert!(wire.to_json(&framed).unwrap_err().contains("schema id 8 is not in the table's config"));
        assert!(wire.to_json(b"{\"json\": 1}").unwrap_err().contains("not Confluent's wire format"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Arbitrary bytes, and valid datums with bytes flipped or cut, never
        /// panic or allocate past the bound: each is JSON or a named error.
        #[test]
        fn arbitrary_and_mutated_datums_never_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            at in 0usize..64,
            byte in proptest::num::u8::ANY,
            cut in 0usize..64,
        ) {
            let plain = AvroFormat::new(&AvroConfig { schema: Some(SCHEMA.into()), confluent: BTreeMap::new() }).unwrap();
            let _ = plain.to_json(&noise);
            let mut d = datum(1_700_000_000_000_000, "card", Some(1.5));
            let i = at % d.len();
            d[i] = byte;
            if let Ok(json) = plain.to_json(&d) {
                serde_json::from_slice::<serde_json::Value>(&json).unwrap();
            }
            d.truncate(cut.min(d.len()));
            let _ = plain.to_json(&d);
        }
    }

    #[test]
    fn a_length_prefix_past_the_bound_is_an_error_not_an_allocation() {
        let plain = AvroFormat::new(&AvroConfig { schema: Some(SCHEMA.into()), confluent: BTreeMap::new() }).unwrap();
        // ts = 1 (zigzag 2), then a string whose length says 32 MiB: under
        // apache-avro's own default bound (512 MiB), over Weir's.
        let mut d = vec![2u8];
        let mut n: u64 = (32u64 << 20) << 1; // zigzag
        while n >= 0x80 {
            d.push((n as u8) | 0x80);
            n >>= 7;
        }
        d.push(n as u8);
        let e = plain.to_json(&d).unwrap_err();
        assert!(e.starts_with("invalid Avro") && e.contains(&MAX_AVRO_ALLOCATION.to_string()), "{e}");
    }

    #[test]
    fn garbage_and_bad_schemas_are_named() {
        let plain = AvroFormat::new(&AvroConfig { schema: Some(SCHEMA.into()), confluent: BTreeMap::new() }).unwrap();
        assert!(plain.to_json(&[0xff, 0xff, 0xff]).unwrap_err().starts_with("invalid Avro"));
        let mut long = datum(1, "c", Some(1.0));
        long.push(42);
        assert!(plain.to_json(&long).unwrap_err().contains("1 bytes left"));
        let e = AvroFormat::new(&AvroConfig {
            schema: None,
            confluent: BTreeMap::from([(3, "{\"type\": \"nope\"}".to_string())]),
        })
        .unwrap_err();
        assert!(e.contains("schema 3 is not a valid schema"), "{e}");
    }
}
