use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"

[log]
fsync = "always"
retention_age = "7d"

[[tables]]
name = "transactions"
partitions = 4
key = "card_id"
allowed_lateness = "5m"
segment_granularity = "1h"
time = { field = "ts", formats = ["rfc3339", "epoch_millis"] }
dimensions = [
  { name = "card_id", type = "string", required = true },
  { name = "category", type = "string" },
  { name = "country", type = "string" },
]
metrics = [{ name = "amount", type = "float64", required = true }]

[[tables.rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["category", "country"]
aggregations = [
  { name = "events", fn = "count" },
  { name = "amount_sum", fn = "sum", field = "amount" },
  { name = "cards", fn = "hll", field = "card_id", precision = 12 },
]
"#;

#[test]
fn a_good_config_parses() {
    let c = WeirConfig::from_toml(GOOD).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000");
    assert_eq!(c.log.fsync, FsyncPolicy::Always);
    assert_eq!(c.log.retention.max_age, Some(Duration::from_secs(7 * 86400)));
    let t = c.table("transactions").unwrap();
    assert_eq!(t.partitions, 4);
    assert_eq!(t.allowed_lateness_ms, 300_000);
    assert_eq!(t.max_future_ms, 300_000, "max_future defaults to 5 minutes");
    assert_eq!(t.segment_granularity_ms, 3_600_000);
    assert_eq!(t.rollups[0].granularity_ms, 60_000);
    assert_eq!(t.rollups[0].aggregations[2].func, AggFn::Hll { field: "card_id".into(), precision: 12 });
    assert_eq!(t.rollup_relation("per_minute"), "transactions_per_minute");
    assert!(t.field("amount").unwrap().required);
}

fn error_of(src: &str) -> ConfigError {
    WeirConfig::from_toml(src).expect_err("config should be refused")
}

#[test]
fn an_unknown_rollup_dimension_names_the_field_and_line() {
    let bad = GOOD.replace(r#"dimensions = ["category", "country"]"#, r#"dimensions = ["category", "colour"]"#);
    let e = error_of(&bad);
    assert_eq!(e.path, "tables[0].rollups[0].dimensions[1]");
    let line = bad.lines().position(|l| l.contains("colour")).unwrap() + 1;
    assert_eq!(e.line, Some(line));
    assert!(e.to_string().contains("`colour` is not a dimension"), "{e}");
}

#[test]
fn a_syntax_error_has_a_line() {
    let e = error_of("[server]\nlisten = \n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn a_wrong_type_has_a_line() {
    let bad = GOOD.replace("partitions = 4", "partitions = \"four\"");
    let e = error_of(&bad);
    let line = bad.lines().position(|l| l.contains("four")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
}

#[test]
fn semantic_errors_are_refused_with_paths() {
    let cases = [
        (GOOD.replace("\"1m\"", "\"7m\""), "tables[0].rollups[0].granularity"),
        (
            GOOD.replace("fn = \"sum\", field = \"amount\"", "fn = \"sum\", field = \"country\""),
            "tables[0].rollups[0].aggregations[1].field",
        ),
        (GOOD.replace("fn = \"count\"", "fn = \"median\""), "tables[0].rollups[0].aggregations[0].fn"),
        (GOOD.replace("precision = 12", "precision = 30"), "tables[0].rollups[0].aggregations[2].precision"),
        (GOOD.replace("key = \"card_id\"", "key = \"nope\""), "tables[0].key"),
        (GOOD.replace("\"5m\"", "\"5 minutes\""), "tables[0].allowed_lateness"),
        (GOOD.replace("fsync = \"always\"", "fsync = \"sometimes\""), "log.fsync"),
        (
            GOOD.replace("name = \"amount\", type = \"float64\"", "name = \"amount\", type = \"string\""),
            "tables[0].metrics[0]",
        ),
        (GOOD.replace("name = \"country\", type", "name = \"category\", type"), "tables[0].dimensions[2].name"),
        (GOOD.replace("name = \"transactions\"", "name = \"Bad-Name\""), "tables[0].name"),
    ];
    for (src, path) in cases {
        let e = error_of(&src);
        assert_eq!(e.path, path, "{e}");
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn session_windows_parse_and_are_checked() {
    let with = format!(
        "{GOOD}\n[[tables.sessions]]\nname = \"card_sessions\"\nkey = \"card_id\"\ngap = \"10m\"\naggregations = [{{ name = \"events\", fn = \"count\" }}, {{ name = \"spend\", fn = \"sum\", field = \"amount\" }}]\n"
    );
    let c = WeirConfig::from_toml(&with).unwrap();
    let t = c.table("transactions").unwrap();
    assert_eq!(t.sessions[0].gap_ms, 600_000);
    assert_eq!(t.session_relation("card_sessions"), "transactions_card_sessions");
    let e = error_of(&with.replace("key = \"card_id\"\ngap", "key = \"amount\"\ngap"));
    assert_eq!(e.path, "tables[0].sessions[0].key");
    let e = error_of(&with.replace("\"10m\"", "\"0s\""));
    assert_eq!(e.path, "tables[0].sessions[0].gap");
    let e = error_of(&with.replace("name = \"card_sessions\"", "name = \"per_minute\""));
    assert_eq!(e.path, "tables[0].sessions[0].name");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert!(parse_duration("h").is_err());
    assert!(parse_duration("5y").is_err());
}

#[test]
fn duplicate_relations_are_refused() {
    let two = format!("{GOOD}\n[[tables]]\nname = \"transactions\"\ntime = {{ field = \"ts\" }}\n");
    let e = error_of(&two);
    assert_eq!(e.path, "tables[1]");
}

#[test]
fn tokens_come_from_config_or_environment() {
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("WEIR_TEST_TOKEN_A", "0123456789abcdef-from-env") };
    let src = r#"
[auth]
tokens = [
  { name = "dash", token = "0123456789abcdef-dash", scopes = ["query"] },
  { name = "ops", token_env = "WEIR_TEST_TOKEN_A", scopes = ["admin", "query", "admin"] },
]
"#;
    let c = WeirConfig::from_toml(src).unwrap();
    assert_eq!(c.auth.tokens[1].secret, "0123456789abcdef-from-env");
    assert_eq!(c.auth.tokens[1].scopes, vec![Scope::Query, Scope::Admin]);
    assert!(!format!("{:?}", c.auth).contains("0123456789abcdef"), "secrets never in Debug output");
    let e = error_of(&src.replace("WEIR_TEST_TOKEN_A", "WEIR_TEST_TOKEN_UNSET"));
    assert_eq!((e.path.as_str(), e.line), ("auth.tokens[1].token_env", Some(5)));
    let e = error_of(&src.replace("0123456789abcdef-dash", "short"));
    assert_eq!(e.path, "auth.tokens[0].token");
    let e = error_of(&src.replace("[\"query\"]", "[\"root\"]"));
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn storage_retention_and_dedup_are_validated_by_name() {
    let table = r#"
[[tables]]
name = "t"
time = { field = "ts" }
dimensions = [{ name = "id", type = "string" }, { name = "ok", type = "bool" }]
"#;
    let c = WeirConfig::from_toml(&format!(
        "[storage]\nurl = \"s3://b/p\"\nendpoint = \"http://127.0.0.1:9000\"\n{table}retention = \"2h\"\ndedup = {{ field = \"id\", window = \"1h\" }}\n"
    ))
    .unwrap();
    assert_eq!(c.storage.url.as_deref(), Some("s3://b/p"));
    assert_eq!(c.tables[0].retention_ms, Some(7_200_000));
    assert_eq!(c.tables[0].dedup.as_ref().map(|d| (d.field.as_str(), d.window_ms)), Some(("id", 3_600_000)));
    assert_eq!(error_of("[storage]\nurl = \"gs://b\"\n").path, "storage.url");
    assert_eq!(error_of("[storage]\nendpoint = \"127.0.0.1:9000\"\n").path, "storage.endpoint");
    assert_eq!(error_of(&format!("{table}retention = \"1m\"\n")).path, "tables[0].retention");
    let e = error_of(&format!("{table}dedup = {{ field = \"nope\", window = \"1h\" }}\n"));
    assert_eq!(e.path, "tables[0].dedup.field");
    let e = error_of(&format!("{table}dedup = {{ field = \"ok\", window = \"1h\" }}\n"));
    assert!(e.message.contains("string or int64"), "{e}");
}

#[test]
fn a_kafka_source_is_parsed_with_defaults_and_its_mistakes_named() {
    let table = r#"
[[tables]]
name = "t"
time = { field = "ts" }
dimensions = [{ name = "id", type = "string" }]
"#;
    let c = WeirConfig::from_toml(&format!(
        "{table}[tables.kafka]\nbootstrap_servers = \"b1:9092,b2:9092\"\nproperties = {{ \"security.protocol\" = \"SSL\" }}\n"
    ))
    .unwrap();
    let k = c.tables[0].kafka.as_ref().unwrap();
    assert_eq!((k.topic.as_str(), k.group_id.as_str()), ("t", "weir-t"));
    assert_eq!(k.properties["security.protocol"], "SSL");
    assert!(k.partitions_from_topic);
    assert_eq!(c.tables[0].topic(), "t");
    let c = WeirConfig::from_toml(&format!(
        "{table}partitions = 3\n[tables.kafka]\nbootstrap_servers = \"b:9092\"\ntopic = \"events\"\ngroup_id = \"g\"\n"
    ))
    .unwrap();
    let k = c.tables[0].kafka.as_ref().unwrap();
    assert!(!k.partitions_from_topic);
    assert_eq!((c.tables[0].topic(), k.group_id.as_str()), ("events", "g"));
    let e = error_of(&format!("{table}[tables.kafka]\nbootstrap_servers = \" \"\n"));
    assert_eq!(e.path, "tables[0].kafka.bootstrap_servers");
    let e = error_of(&format!(
        "{table}[tables.kafka]\nbootstrap_servers = \"b:1\"\nproperties = {{ \"enable.auto.commit\" = \"true\" }}\n"
    ));
    assert!(e.message.contains("`enable.auto.commit` is set by Weir"), "{e}");
    let e = error_of(&format!("{table}[tables.kafka]\nbootstrap = \"b:1\"\n"));
    assert!(e.to_string().contains("bootstrap"), "{e}");
}

#[test]
fn avro_needs_kafka_and_one_way_to_find_its_schema() {
    let table = "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\n";
    let kafka = "[tables.kafka]\nbootstrap_servers = \"b:9092\"\n";
    let c =
        WeirConfig::from_toml(&format!("{table}{kafka}[tables.avro]\nconfluent = {{ \"7\" = \"{{}}\" }}\n")).unwrap();
    assert_eq!(c.tables[0].avro.as_ref().unwrap().confluent.keys().copied().collect::<Vec<_>>(), vec![7]);
    let e = error_of(&format!("{table}[tables.avro]\nschema = \"{{}}\"\n"));
    assert!(e.message.contains("need a Kafka source"), "{e}");
    let e = error_of(&format!("{table}{kafka}[tables.avro]\n"));
    assert!(e.message.contains("give the writer schema"), "{e}");
    let e = error_of(&format!("{table}{kafka}[tables.avro]\nschema = \"{{}}\"\nconfluent = {{ \"1\" = \"{{}}\" }}\n"));
    assert!(e.message.contains("not both"), "{e}");
    let e = error_of(&format!("{table}{kafka}[tables.avro]\nconfluent = {{ \"x\" = \"{{}}\" }}\n"));
    assert!(e.message.contains("`x` is not a schema id"), "{e}");
}

#[test]
fn rebalancing_refuses_per_key_state_and_node_ids_are_identifiers() {
    let table =
        "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"k\", type = \"string\" }]\n";
    let kafka = "[tables.kafka]\nbootstrap_servers = \"b:9092\"\nrebalance = true\n";
    let c = WeirConfig::from_toml(&format!("[server]\nnode_id = \"ingest_1\"\n{table}{kafka}")).unwrap();
    assert!(c.tables[0].kafka.as_ref().unwrap().rebalance);
    assert_eq!(c.server.node_id.as_deref(), Some("ingest_1"));
    let e = error_of(&format!("{table}dedup = {{ field = \"k\", window = \"1h\" }}\n{kafka}"));
    assert!(e.message.contains("cannot have session windows or dedup"), "{e}");
    assert_eq!(error_of("[server]\nnode_id = \"Node 1\"\n").path, "server.node_id");
    let e = error_of(&format!(
        "{table}{kafka}properties = {{ \"partition.assignment.strategy\" = \"cooperative-sticky\" }}\n"
    ));
    assert!(e.message.contains("cooperative-sticky is not supported"), "{e}");
}

#[test]
fn a_query_process_names_its_ingest_processes_by_base_url() {
    let c = WeirConfig::from_toml(
        "[server]\nquery_only = true\ningest_nodes = [\"http://ingest-1:8080\", \"http://10.0.0.2:8080/\"]\n",
    )
    .unwrap();
    assert!(c.server.query_only);
    assert_eq!(c.server.ingest_nodes, ["http://ingest-1:8080", "http://10.0.0.2:8080/"]);
    let c = WeirConfig::from_toml("").unwrap();
    assert!(!c.server.query_only && c.server.ingest_nodes.is_empty());
    for bad in ["https://a:8080", "a:8080", "http://a:8080/v1", "http://"] {
        let e = error_of(&format!("[server]\ningest_nodes = [\"{bad}\"]\n"));
        assert_eq!(e.path, "server.ingest_nodes", "{bad}");
        assert!(e.message.contains(bad), "{e}");
    }
}

fn table_error(dimensions: &str, extra: &str) -> ConfigError {
    let src =
        format!("[[tables]]\nname = \"t\"\n{extra}\ntime = {{ field = \"ts\" }}\ndimensions = [\n{dimensions}\n]\n");
    WeirConfig::from_toml(&src).unwrap_err()
}

#[test]
fn json_paths_parse_and_print_back() {
    let p = JsonPath::parse("user.geo[2][0].country code").unwrap();
    assert_eq!(
        p.0,
        vec![
            PathStep::Key("user".into()),
            PathStep::Key("geo".into()),
            PathStep::Index(2),
            PathStep::Index(0),
            PathStep::Key("country code".into()),
        ]
    );
    assert_eq!(p.to_string(), "user.geo[2][0].country code");
    for (bad, why) in [
        ("", "empty"),
        ("a..b", "empty key"),
        (".a", "empty key"),
        ("a.", "ends with a dot"),
        ("a[x]", "not an array index"),
        ("a[1", "without its `]`"),
        ("a[0]b", "expected `.` or `[`"),
        ("[0]", "empty key"),
        ("a[99999999]", "larger than"),
    ] {
        let e = JsonPath::parse(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert!(JsonPath::parse(&vec!["a"; 40].join(".")).unwrap_err().contains("32 steps"));
}

#[test]
fn paths_and_expressions_are_checked_where_they_are_declared() {
    let e = table_error(r#"{ name = "c", type = "string", path = "user..c" }"#, "");
    assert_eq!(e.path, "tables[0].dimensions[0].path");
    assert_eq!(e.line, Some(6));
    let e = table_error(r#"{ name = "c", type = "string", path = "a.b", expr = "1" }"#, "");
    assert_eq!(e.path, "tables[0].dimensions[0].expr");
    assert!(e.message.contains("not both"));
    let e = table_error(r#"{ name = "c", type = "string", expr = "  " }"#, "");
    assert!(e.message.contains("empty"));
    let long = "x".repeat(MAX_EXPRESSION_BYTES + 1);
    let e = table_error(&format!(r#"{{ name = "c", type = "string", expr = "{long}" }}"#), "");
    assert!(e.message.contains("longer than"));
    let e = table_error(r#"{ name = "c", type = "string" }"#, r#"filter = """#);
    assert_eq!(e.path, "tables[0].filter");
}

#[test]
fn two_fields_cannot_read_the_same_json_value() {
    let e = table_error(
        r#"{ name = "a", type = "string", path = "u.id" }, { name = "b", type = "string", path = "u.id" }"#,
        "",
    );
    assert_eq!(e.path, "tables[0].dimensions[1].path");
    assert!(e.message.contains("`b` reads `u.id`, which `a` reads already"), "{}", e.message);
    let e = table_error(r#"{ name = "u", type = "string" }, { name = "b", type = "string", path = "u.id" }"#, "");
    assert!(e.message.contains("inside `u`, which `u` reads whole"), "{}", e.message);
    let e = table_error(r#"{ name = "b", type = "string", path = "ts.x" }"#, "");
    assert_eq!(e.path, "tables[0].time.field");
    // A derived field reads nothing, so it takes no path.
    let ok = "[[tables]]\nname = \"t\"\ntime = { field = \"ts\", path = \"m.at\" }\ndimensions = [{ name = \"m\", type = \"string\", expr = \"'x'\" }, { name = \"k\", type = \"string\", path = \"m.k\" }]\n";
    let t = WeirConfig::from_toml(ok).unwrap().tables.remove(0);
    assert_eq!(t.time.path.as_ref().unwrap().to_string(), "m.at");
    assert!(!t.field("m").unwrap().is_read());
}

#[test]
fn the_key_must_be_read_from_the_top_level() {
    let e = table_error(r#"{ name = "k", type = "string", path = "a.k" }"#, r#"key = "k""#);
    assert_eq!(e.path, "tables[0].key");
    assert!(e.message.contains("top level"));
}

/// GOOD's table as the table API takes it: the `[[tables]]` entry on its own.
fn definition_of(config: &str) -> String {
    let table = &config[config.find("[[tables]]").unwrap() + "[[tables]]".len()..];
    table.replace("[[tables.rollups]]", "[[rollups]]")
}

#[test]
fn a_definition_parses_like_the_configs_table() {
    let (t, toml) = TableConfig::from_definition(&definition_of(GOOD), DefinitionFormat::Toml).unwrap();
    assert_eq!(&t, WeirConfig::from_toml(GOOD).unwrap().table("transactions").unwrap());
    assert_eq!(TableConfig::from_definition(&toml, DefinitionFormat::Toml).unwrap().0, t);
    let json = r#"{"name": "transactions", "partitions": 4, "key": "card_id", "allowed_lateness": "5m",
        "segment_granularity": "1h", "time": {"field": "ts", "formats": ["rfc3339", "epoch_millis"]},
        "dimensions": [{"name": "card_id", "type": "string", "required": true},
                       {"name": "category", "type": "string"}, {"name": "country", "type": "string"}],
        "metrics": [{"name": "amount", "type": "float64", "required": true}],
        "rollups": [{"name": "per_minute", "granularity": "1m", "dimensions": ["category", "country"],
          "aggregations": [{"name": "events", "fn": "count"}, {"name": "amount_sum", "fn": "sum", "field": "amount"},
                           {"name": "cards", "fn": "hll", "field": "card_id", "precision": 12}]}]}"#;
    let (from_json, stored) = TableConfig::from_definition(json, DefinitionFormat::Json).unwrap();
    assert_eq!(from_json, t);
    assert_eq!(TableConfig::from_definition(&stored, DefinitionFormat::Toml).unwrap().0, t, "{stored}");
}

#[test]
fn a_bad_definition_is_refused_as_the_config_parser_refuses_it() {
    let cases = [
        GOOD.replace("\"1m\"", "\"7m\""),
        GOOD.replace("fn = \"count\"", "fn = \"median\""),
        GOOD.replace("key = \"card_id\"", "key = \"nope\""),
        GOOD.replace(r#"dimensions = ["category", "country"]"#, r#"dimensions = ["category", "colour"]"#),
        GOOD.replace("name = \"transactions\"", "name = \"Bad-Name\""),
        // An upsert table with a rollup would count every version.
        GOOD.replace("key = \"card_id\"", "key = \"card_id\"\nupsert = true"),
        GOOD.replace(
            "{ name = \"country\", type = \"string\" },",
            "{ name = \"country\", type = \"string\", path = \"u..c\" },",
        ),
    ];
    for src in cases {
        let config = error_of(&src);
        let api = TableConfig::from_definition(&definition_of(&src), DefinitionFormat::Toml).unwrap_err();
        assert_eq!(format!("tables[0].{}", api.path), config.path, "{api} / {config}");
        assert_eq!(api.message, config.message);
        assert!(api.line.is_some());
    }
}

#[test]
fn a_json_definition_names_what_is_wrong() {
    let e =
        TableConfig::from_definition(r#"{"name": "t", "time": {"field": null}}"#, DefinitionFormat::Json).unwrap_err();
    assert_eq!((e.path.as_str(), e.line), ("time.field", None), "{e}");
    let e = TableConfig::from_definition("[1]", DefinitionFormat::Json).unwrap_err();
    assert!(e.message.contains("JSON object"), "{e}");
    let e = TableConfig::from_definition("{", DefinitionFormat::Json).unwrap_err();
    assert!(e.message.starts_with("not JSON"), "{e}");
    let e = TableConfig::from_definition(
        r#"{"name": "t", "time": {"field": "ts"}, "rollups": [{"name": "r", "granularity": "7m", "dimensions": [], "aggregations": [{"name": "n", "fn": "count"}]}]}"#,
        DefinitionFormat::Json,
    )
    .unwrap_err();
    assert_eq!((e.path.as_str(), e.line), ("rollups[0].granularity", None), "{e}");
}

#[test]
fn an_upsert_table_needs_a_key_and_no_rollups() {
    let src = GOOD.replace("key = \"card_id\"", "key = \"card_id\"\nupsert = true");
    let e = error_of(&src);
    assert_eq!(e.path, "tables[0].upsert");
    assert!(e.message.contains("cannot have rollups"), "{e}");
    let without_rollups = &src[..src.find("[[tables.rollups]]").unwrap()];
    let t = WeirConfig::from_toml(without_rollups).unwrap().tables.remove(0);
    assert!(t.upsert);
    assert!(t.relation_names().contains(&"transactions_changes".to_string()));
    let e = error_of(&without_rollups.replace("key = \"card_id\"\n", ""));
    assert_eq!(e.path, "tables[0].upsert");
    assert!(e.message.contains("needs `key`"), "{e}");
}
