//! The `weir` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use weir_ingest::generator::DEMO_CONFIG;
use weir_storage::config::WeirConfig;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Weir: a real-time OLAP store. Events from a log, queryable in milliseconds."
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "WEIR_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server with the demo table `transactions`, an embedded log and a
    /// generator of card transactions (some out of order, a few late, a few malformed).
    Demo {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080", env = "WEIR_LISTEN")]
        listen: String,
        /// Where the Postgres wire protocol listens (psql, Grafana, psycopg), or
        /// `off`; default: --listen's host, port 5433 (port 0 when --listen's
        /// port is 0).
        #[arg(long, env = "WEIR_PG_LISTEN")]
        pg_listen: Option<String>,
        /// Where Arrow Flight SQL listens (ADBC, Flight SQL drivers), or `off`;
        /// default: --listen's host, port 8815 (port 0 when --listen's port is 0).
        #[arg(long, env = "WEIR_FLIGHT_LISTEN")]
        flight_listen: Option<String>,
        /// Where the log and other state are kept.
        #[arg(long, default_value = "weir-data", env = "WEIR_DATA_DIR")]
        data_dir: PathBuf,
        /// Events per second the generator appends; 0 runs no generator.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Where sealed segments go: s3://bucket/prefix (endpoint and credentials
        /// from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        /// AWS_REGION) or file:///path; default DATA_DIR/cold.
        #[arg(long, env = "WEIR_STORE")]
        store: Option<String>,
        /// Read the demo table from this Kafka cluster (bootstrap servers, like
        /// 127.0.0.1:9092) instead of the embedded log; the generator produces to
        /// it. Needs a `weir` built with `--features weir-web/kafka`.
        #[arg(long, env = "WEIR_KAFKA")]
        kafka: Option<String>,
        /// The demo's Kafka topic (with --kafka).
        #[arg(long, default_value = "transactions", requires = "kafka")]
        topic: String,
    },
    /// Run the server with the tables of a config file.
    Serve {
        /// The TOML config (see `ingest/src/demo.toml` for an example).
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long, env = "WEIR_LISTEN")]
        listen: Option<String>,
        /// Overrides `server.data_dir`.
        #[arg(long, env = "WEIR_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Overrides `storage.url` (s3://bucket/prefix or file:///path).
        #[arg(long, env = "WEIR_STORE")]
        store: Option<String>,
        /// Overrides `server.node_id`: this process's name among those sharing a
        /// Kafka topic's partitions (tables with `kafka.rebalance`).
        #[arg(long, env = "WEIR_NODE_ID")]
        node_id: Option<String>,
        /// Run as a query process (or `server.query_only`): SQL, live tiles,
        /// metrics and the dashboard over the sealed segments in the store
        /// (--store or the data directory's, shared with the ingest processes)
        /// and the hot data the ingest processes (--ingest) hold in memory. It
        /// opens no log and runs no reader or sealer; ingest, seal, compact and
        /// replay requests are refused with 409, to be sent to an ingest process.
        #[arg(long, env = "WEIR_QUERY_ONLY")]
        query_only: bool,
        /// With --query-only: the ingest processes' base URLs, comma-separated,
        /// like http://ingest-1:8080,http://ingest-2:8080 (overrides
        /// `server.ingest_nodes`). List every ingest process: a query fails,
        /// naming it, while one does not answer.
        #[arg(long = "ingest", env = "WEIR_INGEST_NODES", value_delimiter = ',', value_name = "URL")]
        ingest: Vec<String>,
        /// With --query-only: the API token sent to the ingest processes (needs
        /// the `internal` scope); by default the first token of the config's
        /// [auth] with the `internal` (or `admin`) scope.
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// List a table's sealed segments: time range, rows, bytes and the log offsets
    /// each covers. Reads the manifest from the object store; no server needed.
    Segments {
        /// The table.
        #[arg(long)]
        table: String,
        /// The config naming the table and its store; the demo's when absent.
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
        /// Overrides `server.data_dir` (the default store is DATA_DIR/cold).
        #[arg(long, env = "WEIR_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Overrides `storage.url`.
        #[arg(long, env = "WEIR_STORE")]
        store: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running server to seal everything a table holds in memory now.
    Seal(TableOnServer),
    /// Ask a running server to compact a table: merge the segments of each time
    /// range that has two or more into one (rollups re-aggregated, sketches merged).
    Compact(TableOnServer),
    /// Re-derive a table from its log, from any offset, with its current config:
    /// a new version built beside the live one and switched in once it has
    /// caught up (or, with --into, a new table). Runs on the server when one
    /// answers, standalone on the data directory otherwise.
    Replay(crate::replay::ReplayArgs),
    /// Append NDJSON records (one JSON object per line) to a table through a running
    /// server. Reads FILE, or standard input when FILE is absent or `-`.
    Produce {
        /// The table to append to.
        #[arg(long)]
        table: String,
        /// The NDJSON file.
        file: Option<PathBuf>,
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "WEIR_SERVER")]
        server: String,
        /// Records per request.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// An API token with the `ingest` scope, when the server requires one.
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// A table of a running server, for operator requests.
#[derive(Args, Debug)]
pub struct TableOnServer {
    /// The table.
    #[arg(long)]
    table: String,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "WEIR_SERVER")]
    server: String,
    /// An API token with the `admin` scope, when the server requires one.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl TableOnServer {
    fn request(&self, action: &str) -> anyhow::Result<()> {
        crate::segments::request(&self.server, &self.table, action, self.token.as_deref())
    }
}

/// `default` is the level when `WEIR_LOG` is unset.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // A replay draws its own progress; its threads' info logs would tear the line.
    let default = if matches!(cli.command, Command::Replay(_)) { "warn" } else { "info" };
    init_logging(cli.log_format, default);
    match cli.command {
        Command::Demo { listen, pg_listen, flight_listen, data_dir, rate, store, kafka, topic } => {
            let mut config = WeirConfig::from_toml(DEMO_CONFIG).context("the built-in demo config")?;
            if let Some(bootstrap_servers) = kafka {
                let t = &mut config.tables[0];
                t.kafka = Some(weir_storage::config::KafkaConfig {
                    bootstrap_servers,
                    topic,
                    group_id: "weir-demo".into(),
                    properties: Default::default(),
                    partitions_from_topic: true,
                    rebalance: false,
                });
                ensure_demo_topic(t)?;
            }
            config.server.pg_listen = demo_listen(&listen, pg_listen, 5433);
            config.server.flight_listen = demo_listen(&listen, flight_listen, 8815);
            config.server.listen = listen;
            config.server.data_dir = data_dir;
            if store.is_some() {
                config.storage.url = store;
            }
            crate::server::run(config, Some(rate))
        }
        Command::Seal(target) => target.request("seal"),
        Command::Replay(args) => crate::replay::run(args),
        Command::Compact(target) => target.request("compact"),
        Command::Segments { table, config, data_dir, store, json } => {
            crate::segments::run(&table, config, data_dir, store, json)
        }
        Command::Serve { config, listen, data_dir, store, node_id, query_only, ingest, token } => {
            let src = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let mut cfg = WeirConfig::from_toml(&src).with_context(|| format!("in {}", config.display()))?;
            weir_ingest::transform::check(&cfg).with_context(|| format!("in {}", config.display()))?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.server.data_dir = d;
            }
            if store.is_some() {
                cfg.storage.url = store;
            }
            if node_id.is_some() {
                cfg.server.node_id = node_id;
            }
            if !ingest.is_empty() {
                for url in &ingest {
                    weir_storage::config::check_node_url(url).map_err(|e| anyhow::anyhow!("--ingest {e}"))?;
                }
                cfg.server.ingest_nodes = ingest;
            }
            cfg.server.query_only |= query_only;
            if cfg.server.query_only {
                if cfg.server.ingest_nodes.is_empty() {
                    anyhow::bail!(
                        "a query process asks ingest processes for their hot data: give their URLs with --ingest http://host:port[,...] (or `server.ingest_nodes`)"
                    );
                }
                return crate::server::run_query_node(cfg, token);
            }
            if !cfg.server.ingest_nodes.is_empty() {
                anyhow::bail!(
                    "--ingest (server.ingest_nodes) is for a query process: add --query-only (server.query_only = true)"
                );
            }
            crate::server::run(cfg, None)
        }
        Command::Produce { table, file, server, batch, token } => {
            crate::produce::run(&server, &table, file.as_deref(), batch, token.as_deref())
        }
    }
}

/// The demo's address of a second protocol: as given (`off`: none), else
/// `listen`'s host with port `default`, or port 0 when `listen` picks a free
/// port.
fn demo_listen(listen: &str, given: Option<String>, default: u16) -> Option<String> {
    match given.as_deref() {
        Some("off") => None,
        Some(_) => given,
        None => {
            let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8080"));
            Some(if port == "0" { format!("{host}:0") } else { format!("{host}:{default}") })
        }
    }
}

/// Creates the demo's Kafka topic (4 partitions) unless it exists.
#[cfg(feature = "kafka")]
fn ensure_demo_topic(t: &weir_storage::config::TableConfig) -> anyhow::Result<()> {
    let k = t.kafka.clone().expect("set above");
    let created = weir_storage::runtime::block_on(async move { weir_ingest::kafka::ensure_topic(&k, 4).await })?;
    if created {
        tracing::info!(topic = %t.topic(), "created the demo's Kafka topic with 4 partitions");
    }
    Ok(())
}

#[cfg(not(feature = "kafka"))]
fn ensure_demo_topic(_: &weir_storage::config::TableConfig) -> anyhow::Result<()> {
    anyhow::bail!("--kafka needs a `weir` built with Kafka support: `cargo build --release --features weir-web/kafka`")
}
