//! The Postgres wire protocol: psql, Grafana's PostgreSQL data source,
//! psycopg, SQLAlchemy and other Postgres drivers query Weir as they are.
//!
//! `[server] pg_listen` (on in `weir demo`, off in `weir serve` unless set)
//! opens a second listener. The protocol is `pgwire`'s; rows are encoded by
//! `arrow-pg` (the Postgres type of every Arrow type, text and binary);
//! statements go through the query service's Postgres dialect
//! (`weir_query::postgres`): the same guard, limits, timeout, memory and
//! rollup routing as `POST /v1/sql`.
//!
//! - **Auth.** With `[auth]` tokens, the password is a token (the user name is
//!   not checked); it needs the `query` scope (or `admin`), as `/v1/sql` does.
//!   Cleartext password: when the server has TLS (`[server] tls_cert`), only TLS
//!   connections are taken (`sslmode=require`), so the token never crosses in
//!   clear. Without tokens, anyone who can connect can query (the demo, on
//!   127.0.0.1).
//! - **Protocols.** Simple query (several statements in one message) and the
//!   extended protocol (Parse/Bind/Describe/Execute, parameters in text or
//!   binary, results in either). Session commands (`SET`, `SHOW`, `BEGIN`,
//!   `COMMIT`, ...) are answered here; `SET TIME ZONE` takes only UTC (Weir's
//!   timestamps are UTC). An Execute that asks for a row count gets every row
//!   (no portal suspension).
//! - **Errors** carry a SQLSTATE for what went wrong ([`sqlstate`]) and Weir's
//!   own message.
//! - **Hostile clients.** [`Guarded`] reads the length of every message as it
//!   arrives: one larger than `limits.max_body_bytes` closes the connection
//!   with an error before its body is read. A message of an unknown type closes
//!   it with an error. A client that does not take the bytes of a response for
//!   `limits.pg_send_timeout` is disconnected. At most
//!   `limits.max_pg_connections` connections are open at once; more are refused
//!   with SQLSTATE 53300, and one connection holds at most
//!   [`MAX_NAMED`] named prepared statements and as many named portals. None of
//!   this stops the server or other connections.

use std::collections::HashSet;
use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, NoopHandler, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::extendedquery::{TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, negotiate_tls, process_error, process_message};
use pgwire::types::format::FormatOptions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};
use weir_query::guard::Checked;
use weir_query::postgres::{self, Command, Described, Parsed};
use weir_query::{Error as QueryError, QueryOptions};
use weir_storage::config::Scope;

use crate::serving::Serving;

/// Named prepared statements (and, apart, named portals) one connection may hold.
pub const MAX_NAMED: usize = 1024;

/// Serves the Postgres wire protocol on `listener`, forever (the task is
/// aborted at shutdown).
pub async fn serve<S: Serving>(listener: TcpListener, app: Arc<S>, tls: Option<TlsAcceptor>) {
    let handlers = Arc::new(Handlers::new(Arc::clone(&app), tls.is_some()));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a Postgres connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let m = app.metrics();
        let limit = app.config().limits.max_pg_connections;
        if m.pg_connections_open.load(Ordering::Relaxed) >= limit as u64 {
            m.pg_connections_refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(socket, limit));
            continue;
        }
        m.pg_connections.fetch_add(1, Ordering::Relaxed);
        m.pg_connections_open.fetch_add(1, Ordering::Relaxed);
        let (app, handlers, tls) = (Arc::clone(&app), Arc::clone(&handlers), tls.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(socket, &*app, handlers, tls).await {
                tracing::debug!(%peer, error = %e, "a Postgres connection ended with an error");
            }
            app.metrics().pg_connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers a connection over the limit with SQLSTATE 53300, as Postgres does.
async fn refuse(socket: TcpStream, limit: usize) {
    let Ok(peer) = socket.peer_addr() else { return };
    let codec = PgWireMessageServerCodec::<Prepared>::new(pgwire::api::DefaultClient::new(peer, false));
    let mut framed = Framed::new(socket, codec);
    let info = fatal("53300", format!("too many Postgres connections: limits.max_pg_connections = {limit}"));
    let said = framed.send(PgWireBackendMessage::ErrorResponse(info.into()));
    if tokio::time::timeout(Duration::from_secs(5), said).await.is_ok() {
        linger(framed.into_inner()).await;
    }
}

/// Closes a connection after an error was sent: stops writing, then reads
/// what the client still sends (for at most 2 s), so that the close does not
/// reset the connection before the client has read the error.
async fn linger<T: AsyncRead + AsyncWrite + Unpin>(mut socket: T) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// One connection: TLS negotiation, then messages until the client leaves or
/// breaks the protocol.
async fn connection<S: Serving>(
    socket: TcpStream,
    app: &S,
    handlers: Arc<Handlers<S>>,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    let limits = app.config().limits;
    // The time a client has to negotiate TLS, start up and authenticate.
    let startup = tokio::time::sleep(limits.header_timeout.max(Duration::from_secs(10)));
    tokio::pin!(startup);
    let negotiated = tokio::select! {
        _ = &mut startup => return Ok(()),
        n = negotiate_tls::<Prepared>(socket, tls) => n?,
    };
    let Some(socket) = negotiated else { return Ok(()) };
    let old = socket.into_parts();
    let mut guarded = Guarded::new(old.io, limits.max_body_bytes, limits.pg_send_timeout);
    guarded.observe(&old.read_buf);
    let mut parts = FramedParts::new(guarded, old.codec);
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);
    let mut names = Names::default();
    let noop = Arc::new(NoopHandler);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if starting {
            tokio::select! {
                _ = &mut startup => {
                    let info = fatal("08006", "the client did not finish starting up in time");
                    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                    return Ok(());
                }
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            None => return Ok(()),
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                // The stream cannot be read on: say why, then close.
                app.metrics().pg_protocol_errors.fetch_add(1, Ordering::Relaxed);
                let info = protocol_error(e);
                let said = socket.send(PgWireBackendMessage::ErrorResponse(info.into()));
                if tokio::time::timeout(Duration::from_secs(5), said).await.is_ok() {
                    linger(socket.into_inner().inner).await;
                }
                return Ok(());
            }
        };
        let extended = message.is_extended_query();
        let result = match names.admit(&message) {
            Err(info) => Err(PgWireError::UserError(info)),
            Ok(()) => {
                process_message(
                    message,
                    &mut socket,
                    Arc::clone(&handlers.startup),
                    Arc::clone(&handlers.queries),
                    Arc::clone(&handlers.queries),
                    Arc::clone(&noop),
                    Arc::clone(&noop),
                )
                .await
            }
        };
        if let Err(e) = result {
            if let PgWireError::IoError(e) = e {
                // The client stopped reading (or went away) mid-response.
                app.metrics().pg_protocol_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            let info = ErrorInfo::from(e);
            let fatal = info.is_fatal();
            process_error(&mut socket, PgWireError::UserError(Box::new(info)), extended).await?;
            if fatal {
                return Ok(());
            }
        }
    }
}

/// The names of the prepared statements and portals a connection holds.
#[derive(Default)]
struct Names {
    statements: HashSet<String>,
    portals: HashSet<String>,
}

impl Names {
    /// Counts a Parse or Bind of a new name, refusing one past [`MAX_NAMED`];
    /// forgets a closed one.
    fn admit(&mut self, message: &PgWireFrontendMessage) -> Result<(), Box<ErrorInfo>> {
        let (set, name, what) = match message {
            PgWireFrontendMessage::Parse(p) => (&mut self.statements, p.name.as_deref(), "prepared statements"),
            PgWireFrontendMessage::Bind(b) => (&mut self.portals, b.portal_name.as_deref(), "portals"),
            PgWireFrontendMessage::Close(c) => {
                let set = match c.target_type {
                    TARGET_TYPE_BYTE_STATEMENT => &mut self.statements,
                    TARGET_TYPE_BYTE_PORTAL => &mut self.portals,
                    _ => return Ok(()),
                };
                if let Some(name) = &c.name {
                    set.remove(name);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        match name {
            Some(name) if !name.is_empty() && !set.contains(name) => {
                if set.len() >= MAX_NAMED {
                    return Err(Box::new(error(
                        "54000",
                        format!("this connection holds {MAX_NAMED} named {what}, the most it may: close some first"),
                    )));
                }
                set.insert(name.to_string());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The handlers of every connection.
struct Handlers<S> {
    startup: Arc<Startup<S>>,
    queries: Arc<Queries<S>>,
}

impl<S: Serving> Handlers<S> {
    fn new(app: Arc<S>, tls: bool) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = postgres::SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = "UTC".to_string();
        Handlers {
            startup: Arc::new(Startup {
                app: Arc::clone(&app),
                tls,
                parameters,
                keys: RandomPidSecretKeyGenerator::default(),
            }),
            queries: Arc::new(Queries { app: Arc::clone(&app), parser: Arc::new(Parser { app }) }),
        }
    }
}

/// Startup and authentication: cleartext password = API token.
struct Startup<S> {
    app: Arc<S>,
    /// Whether the server has TLS: then only TLS connections are taken.
    tls: bool,
    parameters: DefaultServerParameterProvider,
    keys: RandomPidSecretKeyGenerator,
}

impl<S: Serving> Startup<S> {
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, key);
        finish_authentication(client, &self.parameters).await
    }
}

#[async_trait]
impl<S: Serving> StartupHandler for Startup<S> {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.tls && !client.is_secure() {
                    return Err(PgWireError::UserError(Box::new(fatal(
                        "28000",
                        "this server takes TLS connections only (it has [server] tls_cert): connect with sslmode=require",
                    ))));
                }
                if self.app.config().auth.tokens.is_empty() {
                    self.finish(client).await?;
                } else {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                if !matches!(client.state(), PgWireConnectionState::AuthenticationInProgress) {
                    return Err(PgWireError::UserError(Box::new(fatal("08P01", "a password was not asked for"))));
                }
                let password = password.into_password()?;
                match crate::auth::scopes_of(&self.app.config().auth, &password.password) {
                    None => {
                        return Err(PgWireError::UserError(Box::new(fatal(
                            "28P01",
                            "password authentication failed: the password must be a Weir API token, and this one is unknown",
                        ))));
                    }
                    Some(scopes) if !scopes.contains(&Scope::Query) && !scopes.contains(&Scope::Admin) => {
                        return Err(PgWireError::UserError(Box::new(fatal(
                            "28000",
                            "this token lacks the `query` scope",
                        ))));
                    }
                    Some(_) => self.finish(client).await?,
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A statement a client prepared (extended protocol).
#[derive(Debug, Clone)]
pub enum Prepared {
    Query { statement: Checked, described: Described },
    Command(Command),
}

/// Parses and describes statements for the extended protocol.
struct Parser<S> {
    app: Arc<S>,
}

#[async_trait]
impl<S: Serving> QueryParser for Parser<S> {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let query = self.app.query();
        let mut parsed = query.parse_postgres(sql).await.map_err(user_error)?;
        if parsed.len() > 1 {
            return Err(PgWireError::UserError(Box::new(error(
                "42601",
                format!("a prepared statement holds one statement; this one holds {}", parsed.len()),
            ))));
        }
        match parsed.pop() {
            None => Ok(None),
            Some(Parsed::Command(c)) => Ok(Some(Prepared::Command(c))),
            Some(Parsed::Query(statement)) => {
                let described = query.describe_postgres(statement.clone()).await.map_err(user_error)?;
                Ok(Some(Prepared::Query { statement, described }))
            }
        }
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        match statement {
            Prepared::Query { described, .. } => {
                described.parameters.iter().map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect()
            }
            Prepared::Command(_) => Ok(Vec::new()),
        }
    }

    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match statement {
            Prepared::Query { described, .. } => arrow_schema_to_pg_fields(&described.schema, format, None),
            Prepared::Command(Command::Show { name }) => arrow_schema_to_pg_fields(&show_schema(name), format, None),
            Prepared::Command(_) => Ok(Vec::new()),
        }
    }
}

/// Runs statements: the simple and the extended protocol.
struct Queries<S> {
    app: Arc<S>,
    parser: Arc<Parser<S>>,
}

impl<S: Serving> Queries<S> {
    /// Runs a checked statement and encodes its rows in `format`.
    async fn run<C: ClientInfo>(
        &self,
        client: &C,
        statement: Checked,
        parameters: Vec<datafusion::common::ScalarValue>,
        format: &Format,
    ) -> PgWireResult<Response> {
        let started = Instant::now();
        let result = self.app.query().execute_postgres(statement, parameters, QueryOptions::default()).await;
        self.app.metrics().query_latency.observe(started.elapsed());
        let (output, _rollups) = result.map_err(user_error)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        rows(output.schema.as_ref(), output.batches, format, Some(options))
    }

    /// Answers a session command.
    fn command<C: ClientInfo + ClientPortalStore>(
        &self,
        client: &mut C,
        command: &Command,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C::PortalStore: PortalStore,
    {
        Ok(match command {
            Command::Set { name, value } => {
                if is_time_zone(name) && !is_utc(value) {
                    return Err(PgWireError::UserError(Box::new(error(
                        "22023",
                        format!("time zone `{value}`: Weir answers timestamps in UTC only"),
                    ))));
                }
                client.metadata_mut().insert(name.clone(), value.clone());
                Response::Execution(Tag::new("SET"))
            }
            Command::Show { name } => {
                let value = show(client, name)?;
                let schema = show_schema(name);
                let column: ArrayRef = Arc::new(StringArray::from(vec![value]));
                let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![column])
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                rows(&schema, vec![batch], format, None)?
            }
            Command::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Command::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Command::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Command::Savepoint => Response::Execution(Tag::new("SAVEPOINT")),
            Command::Release => Response::Execution(Tag::new("RELEASE")),
            Command::RollbackTo => Response::Execution(Tag::new("ROLLBACK")),
            Command::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Command::Deallocate { name } => {
                client.portal_store().rm_statement(name);
                Response::Execution(Tag::new("DEALLOCATE"))
            }
        })
    }

    fn count(&self, ok: bool) {
        let m = self.app.metrics();
        let counter = if ok { &m.pg_queries_ok } else { &m.pg_queries_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<S: Serving> SimpleQueryHandler for Queries<S> {
    async fn do_query<C>(&self, client: &mut C, sql: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parsed = match self.app.query().parse_postgres(sql).await {
            Ok(parsed) => parsed,
            Err(e) => {
                self.count(false);
                return Err(user_error(e));
            }
        };
        let mut responses = Vec::with_capacity(parsed.len());
        for statement in parsed {
            let format = Format::UnifiedText;
            let response = match statement {
                Parsed::Command(c) => self.command(client, &c, &format),
                Parsed::Query(checked) => self.run(client, checked, Vec::new(), &format).await,
            };
            self.count(response.is_ok());
            match response {
                Ok(r) => responses.push(r),
                Err(e) => {
                    // Like Postgres: the statements after a failed one do not run.
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

#[async_trait]
impl<S: Serving> ExtendedQueryHandler for Queries<S> {
    type Statement = Prepared;
    type QueryParser = Parser<S>;

    fn query_parser(&self) -> Arc<Parser<S>> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let response = match &portal.statement.statement {
            Prepared::Command(c) => self.command(client, c, &portal.result_column_format),
            Prepared::Query { statement, described } => {
                let types: Vec<Option<&DataType>> = described.parameters.iter().map(Option::as_ref).collect();
                match deserialize_parameters(portal, &types) {
                    Ok(ParamValues::List(values)) => {
                        let values = values.into_iter().map(|v| v.value).collect();
                        self.run(client, statement.clone(), values, &portal.result_column_format).await
                    }
                    Ok(ParamValues::Map(_)) => Err(PgWireError::UserError(Box::new(error(
                        "42P02",
                        "parameters are numbered ($1, $2, ...), not named",
                    )))),
                    Err(e) => Err(e),
                }
            }
        };
        self.count(response.is_ok());
        response
    }
}

/// A query response holding `batches`, encoded in `format`.
fn rows(
    schema: &Schema,
    batches: Vec<RecordBatch>,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, options)?);
    let encode = Arc::clone(&fields);
    let rows = futures::stream::iter(batches.into_iter().flat_map(move |b| encode_recordbatch(Arc::clone(&encode), b)));
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

/// The schema of `SHOW name`'s answer: one text column named after it.
fn show_schema(name: &str) -> Schema {
    let column = match name {
        "transaction isolation level" => "transaction_isolation",
        other => other,
    };
    Schema::new(vec![Field::new(column, DataType::Utf8, false)])
}

/// The value `SHOW name` answers: what the client set, else the server's.
fn show<C: ClientInfo>(client: &C, name: &str) -> PgWireResult<String> {
    if let Some(v) = client.metadata().get(name) {
        return Ok(v.clone());
    }
    let value = postgres::server_setting(name).ok_or_else(|| {
        PgWireError::UserError(Box::new(error("42704", format!("unrecognized configuration parameter \"{name}\""))))
    })?;
    Ok(value.to_string())
}

fn is_time_zone(name: &str) -> bool {
    matches!(name, "timezone" | "time zone" | "time_zone")
}

fn is_utc(zone: &str) -> bool {
    let z = zone.trim().trim_matches('\'');
    ["utc", "gmt", "etc/utc", "etc/gmt", "z", "zulu", "+00:00", "00:00", "0"].contains(&z.to_lowercase().as_str())
}

/// The SQLSTATE of a query error.
pub fn sqlstate(e: &QueryError) -> &'static str {
    match e {
        QueryError::Refused { .. } => "25006",
        QueryError::Sql { message } => sql_state(message),
        QueryError::Timeout { .. } => "57014",
        QueryError::ResourcesExhausted { .. } => "53200",
        QueryError::Execution { .. } | QueryError::Encode { .. } | QueryError::Live { .. } => "22000",
        QueryError::UnknownFormat { .. } => "22023",
        QueryError::Unavailable { .. } => "57P03",
        QueryError::Limit { .. } => "54000",
        QueryError::Busy { .. } => "53000",
        QueryError::Internal { .. } => "XX000",
    }
}

/// The SQLSTATE of a statement that does not parse or plan, told apart by
/// DataFusion's message: an unknown table, column or function, else syntax.
fn sql_state(message: &str) -> &'static str {
    let m = message.to_lowercase();
    if m.contains("table '") && m.contains("not found") {
        "42P01"
    } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
        "42703"
    } else if m.contains("invalid function") {
        "42883"
    } else {
        "42601"
    }
}

fn user_error(e: QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(error(sqlstate(&e), e.to_string())))
}

fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), code.to_string(), message.into())
}

fn fatal(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("FATAL".to_string(), code.to_string(), message.into())
}

/// What a client that broke the protocol is told before the connection closes.
fn protocol_error(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::IoError(io) if io.kind() == io::ErrorKind::InvalidData => fatal("54000", io.to_string()),
        PgWireError::IoError(io) => fatal("08006", io.to_string()),
        other => {
            let mut info = ErrorInfo::from(other);
            info.severity = "FATAL".to_string();
            info
        }
    }
}

/// The connection's stream, guarded: the length of each message the client
/// sends is read as it arrives, and one over `max` fails the read before its
/// body is buffered; a write the client does not take for `send_timeout`
/// fails too.
struct Guarded<T> {
    inner: T,
    max: usize,
    /// The next message is the startup message, which has no type byte.
    startup: bool,
    /// The header of the message being read: type byte and length.
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message's body not read yet.
    body_left: usize,
    /// A message over the limit was seen: the next read fails with this.
    refused: Option<String>,
    send_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Guarded<T> {
    fn new(inner: T, max: usize, send_timeout: Duration) -> Self {
        Guarded {
            inner,
            max,
            startup: true,
            header: [0; 5],
            have: 0,
            body_left: 0,
            refused: None,
            send_timeout,
            stalled: None,
        }
    }

    /// Walks bytes the client sent, message by message.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.refused.is_none() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header_len = if self.startup { 4 } else { 5 };
            let n = (header_len - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < header_len {
                continue;
            }
            let at = header_len - 4;
            let len =
                u32::from_be_bytes([self.header[at], self.header[at + 1], self.header[at + 2], self.header[at + 3]])
                    as usize;
            let total = len + usize::from(!self.startup);
            if len < 4 {
                self.refused = Some(format!("the client sent a message whose length field says {len}, below 4"));
            } else if total > self.max {
                self.refused = Some(format!(
                    "the client sent a message of {total} bytes; limits.max_body_bytes allows {}",
                    self.max
                ));
            }
            self.body_left = len - 4.min(len);
            self.have = 0;
            self.startup = false;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.refused.take() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T> Guarded<T> {
    /// Passes on the result of a write or flush; one still pending after the
    /// send timeout fails.
    fn watch<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.send_timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {timeout:?} (limits.pg_send_timeout)"),
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn message_lengths_are_read_across_reads() {
        let mut g = Guarded::new((), 100, Duration::from_secs(1));
        let mut bytes = (12u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend(tagged(b'Q', b"SELECT 1\0"));
        bytes.extend(tagged(b'X', b""));
        // One byte at a time: every header is split.
        for b in &bytes {
            g.observe(std::slice::from_ref(b));
        }
        assert!(g.refused.is_none());
        assert_eq!((g.have, g.body_left, g.startup), (0, 0, false));
        g.observe(&tagged(b'Q', &[b'x'; 96]));
        assert!(
            g.refused.as_deref().unwrap().contains("101 bytes; limits.max_body_bytes allows 100"),
            "{:?}",
            g.refused
        );
    }

    #[test]
    fn a_startup_message_over_the_limit_is_refused() {
        let mut g = Guarded::new((), 100, Duration::from_secs(1));
        g.observe(&(1u32 << 30).to_be_bytes());
        assert!(g.refused.as_deref().unwrap().contains("1073741824 bytes"), "{:?}", g.refused);
        let mut g = Guarded::new((), 100, Duration::from_secs(1));
        g.observe(&[0, 0, 0, 2]);
        assert!(g.refused.as_deref().unwrap().contains("below 4"));
    }

    #[test]
    fn named_statements_are_bounded_and_closing_frees_them() {
        use pgwire::messages::extendedquery::{Close, Parse};
        let parse =
            |name: &str| PgWireFrontendMessage::Parse(Parse::new(Some(name.to_string()), "SELECT 1".into(), vec![]));
        let mut names = Names::default();
        for i in 0..MAX_NAMED {
            names.admit(&parse(&format!("s{i}"))).unwrap();
        }
        // The same name again replaces, and the unnamed statement is not counted.
        names.admit(&parse("s0")).unwrap();
        names.admit(&parse("")).unwrap();
        let refused = names.admit(&parse("one_more")).unwrap_err();
        assert_eq!(refused.code, "54000");
        assert!(refused.message.contains("1024 named prepared statements"), "{}", refused.message);
        names
            .admit(&PgWireFrontendMessage::Close(Close::new(TARGET_TYPE_BYTE_STATEMENT, Some("s1".to_string()))))
            .unwrap();
        names.admit(&parse("one_more")).unwrap();
    }

    #[test]
    fn only_utc_is_a_time_zone() {
        for z in ["UTC", "'utc'", "Etc/UTC", "GMT", "+00:00"] {
            assert!(is_utc(z), "{z}");
        }
        for z in ["Europe/Paris", "+01:00", "local"] {
            assert!(!is_utc(z), "{z}");
        }
    }
}
