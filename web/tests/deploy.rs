//! The deployment files carry Weir configs that must stay valid.

use weir_storage::config::WeirConfig;

#[test]
fn the_container_config_is_valid_and_listens_on_all_interfaces() {
    let src = include_str!("../../deploy/weir.toml");
    let c = WeirConfig::from_toml(src).unwrap_or_else(|e| panic!("deploy/weir.toml: {e}"));
    assert_eq!(c.server.listen, "0.0.0.0:8080");
    assert_eq!(c.server.data_dir.to_str(), Some("/var/lib/weir"));
    assert_eq!(c.tables[0].name, "transactions");
}

#[test]
fn the_kubernetes_config_map_holds_a_valid_config() {
    let manifest = include_str!("../../deploy/k8s/weir.yaml");
    let start = manifest.find("weir.toml: |\n").expect("the ConfigMap's weir.toml") + "weir.toml: |\n".len();
    let end = start + manifest[start..].find("\n---").expect("end of the ConfigMap");
    let toml: String =
        manifest[start..end].lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    for var in ["WEIR_QUERY_TOKEN", "WEIR_INGEST_TOKEN", "WEIR_INTERNAL_TOKEN", "WEIR_ADMIN_TOKEN"] {
        // SAFETY: this test binary runs no other code that reads these variables.
        unsafe { std::env::set_var(var, "a-test-secret-of-enough-bytes") };
    }
    let c = WeirConfig::from_toml(&toml).unwrap_or_else(|e| panic!("the ConfigMap's weir.toml: {e}\n{toml}"));
    assert_eq!(c.auth.tokens.len(), 4);
    assert!(
        c.auth.tokens.iter().any(|t| t.scopes == [weir_storage::config::Scope::Internal]),
        "query pods need an internal token"
    );
    assert_eq!(c.server.listen, "0.0.0.0:8080");
}

#[test]
fn the_compose_file_runs_a_command_line_weir_accepts_with_its_bucket() {
    use clap::Parser;
    let compose = include_str!("../../deploy/compose.yaml");
    let line = compose
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("command: [\"demo\""))
        .expect("the weir service's command");
    let args: Vec<String> = serde_json::from_str(line.trim_start_matches("command:").trim()).expect("a JSON list");
    let cli = weir_web::cli::Cli::try_parse_from(std::iter::once("weir".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("deploy/compose.yaml runs `weir {}`: {e}", args.join(" ")));
    match cli.command {
        weir_web::cli::Command::Demo { kafka, store, .. } => {
            assert_eq!(kafka.as_deref(), Some("kafka:9092"));
            let bucket = store.as_deref().and_then(|s| s.strip_prefix("s3://")).and_then(|s| s.split('/').next());
            assert!(
                compose.contains(&format!("mc mb --ignore-existing local/{}", bucket.unwrap())),
                "the bucket is created"
            );
        }
        other => panic!("the compose file runs {other:?}, not the demo"),
    }
}

#[test]
fn the_compose_file_runs_a_query_process_over_the_demo_s_bucket() {
    use clap::Parser;
    let compose = include_str!("../../deploy/compose.yaml");
    let parse = |prefix: &str| -> Vec<String> {
        let line = compose
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("a command starting {prefix}"));
        serde_json::from_str(line.trim_start_matches("command:").trim()).expect("a JSON list")
    };
    let demo = parse("command: [\"demo\"");
    let args = parse("command: [\"serve\"");
    let cli = weir_web::cli::Cli::try_parse_from(std::iter::once("weir".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("deploy/compose.yaml runs `weir {}`: {e}", args.join(" ")));
    match cli.command {
        weir_web::cli::Command::Serve { query_only, ingest, store, .. } => {
            assert!(query_only);
            assert_eq!(ingest, ["http://weir:8080"]);
            let demo_store = demo.iter().skip_while(|a| *a != "--store").nth(1).cloned();
            assert_eq!(store, demo_store, "the query process reads the demo's bucket");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_kubernetes_query_deployment_names_the_ingest_pods_by_their_headless_service() {
    let ingest = include_str!("../../deploy/k8s/weir.yaml");
    let query = include_str!("../../deploy/k8s/weir-query.yaml");
    assert!(ingest.contains("serviceName: weir-ingest") && ingest.contains("clusterIP: None"));
    assert!(query.contains("- --query-only") && query.contains("- http://weir-0.weir-ingest:8080"));
    for key in ["name: weir-store, key: url", "name: weir-s3, key: access_key_id"] {
        assert!(ingest.contains(key) && query.contains(key), "both read {key}");
    }
}
