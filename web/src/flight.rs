//! Arrow Flight SQL, for Arrow-native clients: ADBC (`adbc-driver-flightsql`,
//! and DuckDB or Polars through it), JDBC/ODBC Flight SQL drivers.
//!
//! `[server] flight_listen` (on in `weir demo`, off in `weir serve` unless
//! set) opens a gRPC listener (`tonic`, `arrow-flight`'s `FlightSqlService`).
//! Statements are Weir's SQL, checked by the same guard as `POST /v1/sql` and
//! run under the same limits; results are streamed: each batch is sent as the
//! plan makes it, with room for two in flight, and the whole stream must be
//! taken within `query.timeout` (a client that stops reading is cut off then,
//! holding nothing).
//!
//! - **Auth.** With `[auth]` tokens, each call carries `authorization: Bearer
//!   <token>` (a token with the `query` scope, or `admin`), or the client does
//!   the Flight handshake with Basic auth whose password is the token and gets
//!   the token back as its bearer. TLS when the server has it.
//! - **Calls.** `CommandStatementQuery` (GetFlightInfo, then DoGet),
//!   prepared statements (create, bind parameters with DoPut, execute, close),
//!   `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas),
//!   `GetTableTypes`. Updates, Substrait plans, transactions and cancellation
//!   answer `UNIMPLEMENTED`.
//! - **Errors** are gRPC statuses: `PERMISSION_DENIED` for a refused statement,
//!   `INVALID_ARGUMENT` for SQL that does not plan, `DEADLINE_EXCEEDED`,
//!   `RESOURCE_EXHAUSTED` for the limits, `UNAVAILABLE` when busy, each with
//!   Weir's message. Messages larger than `limits.max_body_bytes` are refused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use base64::Engine;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use weir_query::guard::Checked;
use weir_query::{Error as QueryError, QueryOptions};
use weir_storage::config::Scope;

use crate::serving::Serving;

/// Batches in flight between the plan and the client.
const IN_FLIGHT: usize = 2;

/// Serves Flight SQL on `listener` until the task is aborted.
pub async fn serve<S: Serving>(
    listener: tokio::net::TcpListener,
    app: Arc<S>,
    tls: Option<&weir_storage::config::TlsConfig>,
) -> anyhow::Result<()> {
    let max = app.config().limits.max_body_bytes;
    let service = FlightServiceServer::new(FlightSql { app })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let cert = std::fs::read(&tls.cert)?;
        let key = std::fs::read(&tls.key)?;
        server = server.tls_config(
            tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
    }
    let incoming = tokio_stream_listener(listener);
    server.add_service(service).serve_with_incoming(incoming).await?;
    Ok(())
}

/// The accepted connections of `listener`, as tonic takes them.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(socket, _)| {
            let _ = socket.set_nodelay(true);
            socket
        });
        Some((accepted, listener))
    })
}

/// The Flight SQL service of a process.
pub struct FlightSql<S> {
    app: Arc<S>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl<S: Serving> FlightSql<S> {
    /// Lets a call through when it carries a token with the `query` scope (or
    /// when no tokens are configured).
    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = &self.app.config().auth;
        if auth.tokens.is_empty() {
            return Ok(());
        }
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(token) = header.strip_prefix("Bearer ") else {
            return Err(Status::unauthenticated("send `authorization: Bearer <token>` or do the handshake"));
        };
        scoped(auth, token.trim())
    }

    fn count(&self, ok: bool) {
        let m = self.app.metrics();
        let counter = if ok { &m.flight_queries_ok } else { &m.flight_queries_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Checks and describes a statement: its result schema and parameters.
    async fn describe(&self, sql: &str) -> Result<(Checked, weir_query::postgres::Described), Status> {
        let query = self.app.query();
        let checked = query.check(sql).await.map_err(status)?;
        let described = query.describe_checked(checked.clone(), false).await.map_err(status)?;
        Ok((checked, described))
    }

    /// Runs a statement and streams its batches as Flight data.
    async fn stream(
        &self,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Stream_<arrow_flight::FlightData>, Status> {
        let checked = match self.app.query().check(sql).await {
            Ok(c) => c,
            Err(e) => {
                self.count(false);
                return Err(status(e));
            }
        };
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
        let (tx, mut rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let app = Arc::clone(&self.app);
        let failed = tx.clone();
        tokio::spawn(async move {
            let result = app.query().execute_into(checked, parameters, QueryOptions::default(), schema_tx, tx).await;
            let m = app.metrics();
            let counter = if result.is_ok() { &m.flight_queries_ok } else { &m.flight_queries_failed };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                let _ = failed.try_send(Err(e));
            }
        });
        let schema = match schema_rx.await {
            Ok(schema) => schema,
            // It failed before it had a schema: the error is in the channel.
            Err(_) => {
                return Err(match rx.recv().await {
                    Some(Err(e)) => status(e),
                    _ => Status::internal("the query ended without a result"),
                });
            }
        };
        let batches = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .map(|b: weir_query::Result<RecordBatch>| b.map_err(|e| FlightError::Tonic(Box::new(status(e)))));
        let data = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        Ok(Box::pin(data))
    }
}

#[allow(clippy::result_large_err)]
fn scoped(auth: &weir_storage::config::AuthConfig, token: &str) -> Result<(), Status> {
    match crate::auth::scopes_of(auth, token) {
        None => Err(Status::unauthenticated("unknown token")),
        Some(scopes) if scopes.contains(&Scope::Query) || scopes.contains(&Scope::Admin) => Ok(()),
        Some(_) => Err(Status::permission_denied("this token lacks the `query` scope")),
    }
}

/// A query error as a gRPC status with Weir's message.
fn status(e: QueryError) -> Status {
    let message = e.to_string();
    match e {
        QueryError::Refused { .. } => Status::permission_denied(message),
        QueryError::Sql { .. } | QueryError::UnknownFormat { .. } => Status::invalid_argument(message),
        QueryError::Timeout { .. } => Status::deadline_exceeded(message),
        QueryError::ResourcesExhausted { .. } | QueryError::Limit { .. } => Status::resource_exhausted(message),
        QueryError::Busy { .. } | QueryError::Unavailable { .. } => Status::unavailable(message),
        QueryError::Execution { .. } | QueryError::Encode { .. } | QueryError::Live { .. } => {
            Status::failed_precondition(message)
        }
        QueryError::Internal { .. } => Status::internal(message),
    }
}

/// What `GetSqlInfo` answers.
fn sql_info() -> SqlInfoData {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Weir");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.build().expect("a fixed set of infos")
}

/// A prepared statement's handle: its SQL and, once bound, its parameters (an
/// Arrow IPC stream of one row).
#[derive(Clone, PartialEq, prost::Message)]
struct Handle {
    #[prost(string, tag = "1")]
    sql: String,
    #[prost(bytes = "vec", tag = "2")]
    parameters: Vec<u8>,
}

impl Handle {
    #[allow(clippy::result_large_err)]
    fn decode(bytes: &[u8]) -> Result<Handle, Status> {
        <Handle as Message>::decode(bytes)
            .map_err(|e| Status::invalid_argument(format!("not a Weir prepared statement handle: {e}")))
    }

    /// The bound values, `$1` first; none when nothing was bound.
    #[allow(clippy::result_large_err)]
    fn values(&self) -> Result<Option<Vec<ScalarValue>>, Status> {
        if self.parameters.is_empty() {
            return Ok(None);
        }
        let bad = |e: arrow::error::ArrowError| Status::invalid_argument(format!("the bound parameters: {e}"));
        let reader = StreamReader::try_new(self.parameters.as_slice(), None).map_err(bad)?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.map_err(bad)?;
            if batch.num_rows() != 1 {
                return Err(Status::invalid_argument(format!(
                    "bind one row of parameters; {} were sent",
                    batch.num_rows()
                )));
            }
            for column in batch.columns() {
                values
                    .push(ScalarValue::try_from_array(column, 0).map_err(|e| Status::invalid_argument(e.to_string()))?);
            }
        }
        Ok(Some(values))
    }
}

/// A schema as the IPC bytes Flight SQL carries.
#[allow(clippy::result_large_err)]
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// A FlightInfo whose one endpoint's ticket is `ticket`.
#[allow(clippy::result_large_err)]
fn info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// One batch as a Flight data stream.
fn one<E>(batch: Result<RecordBatch, E>, schema: SchemaRef) -> Stream_<arrow_flight::FlightData>
where
    FlightError: From<E>,
{
    let batch = batch.map_err(FlightError::from);
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from),
    )
}

#[tonic::async_trait]
impl<S: Serving> FlightSqlService for FlightSql<S> {
    type FlightService = FlightSql<S>;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream_<HandshakeResponse>>, Status> {
        let auth = &self.app.config().auth;
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let token = if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Status::invalid_argument("the Basic credentials are not base64 of user:password"))?;
            decoded.split_once(':').map(|(_, password)| password.to_string()).unwrap_or(decoded)
        } else if let Some(bearer) = header.strip_prefix("Bearer ") {
            bearer.trim().to_string()
        } else {
            String::new()
        };
        if !auth.tokens.is_empty() {
            scoped(auth, &token)?;
        }
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into_bytes().into() };
        let mut response: Response<Stream_<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !token.is_empty()
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let (_, described) = self.describe(&query.query).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        info(&described.schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not a Weir statement"))?;
        Ok(Response::new(self.stream(&sql, None).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let (_, described) = self.describe(&query.query).await?;
        let parameters: Vec<Field> = described
            .parameters
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("${}", i + 1), t.clone().unwrap_or(DataType::Utf8), true))
            .collect();
        let handle = Handle { sql: query.query, parameters: Vec::new() };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema: schema_bytes(&described.schema)?,
            parameter_schema: schema_bytes(&Schema::new(parameters))?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let mut handle = Handle::decode(&query.prepared_statement_handle)?;
        let data = request.into_inner().map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let mut received = Vec::new();
        while let Some(batch) = batches.next().await {
            received.push(batch.map_err(|e| Status::invalid_argument(format!("the bound parameters: {e}")))?);
        }
        let mut parameters = Vec::new();
        if let Some(first) = received.first() {
            let internal = |e: arrow::error::ArrowError| Status::internal(e.to_string());
            let mut w = StreamWriter::try_new(&mut parameters, &first.schema()).map_err(internal)?;
            for batch in &received {
                w.write(batch).map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            w.finish().map_err(internal)?;
        }
        handle.parameters = parameters;
        handle.values()?;
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(handle.encode_to_vec().into()) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let (_, described) = self.describe(&handle.sql).await?;
        info(&described.schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let values = handle.values()?;
        Ok(Response::new(self.stream(&handle.sql, values).await?))
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // The handle holds everything: nothing is kept on the server to free.
        self.authorize(&request)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder(&sql_info()).schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let infos = sql_info();
        let builder = query.into_builder(&infos);
        let schema = builder.schema();
        Ok(Response::new(one(builder.build(), schema)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(weir_query::catalog::CATALOG);
        let schema = builder.schema();
        Ok(Response::new(one(builder.build(), schema)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(weir_query::catalog::CATALOG, weir_query::catalog::SCHEMA);
        let schema = builder.schema();
        Ok(Response::new(one(builder.build(), schema)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let relations = self.app.query().relations().await.map_err(status)?;
        let mut builder = query.into_builder();
        for (name, schema) in relations {
            builder
                .append(weir_query::catalog::CATALOG, weir_query::catalog::SCHEMA, name, "TABLE", &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = builder.schema();
        Ok(Response::new(one(builder.build(), schema)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        let schema = builder.schema();
        Ok(Response::new(one(builder.build(), schema)))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(format!("Weir does not answer a ticket of type `{}`", message.type_url)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
