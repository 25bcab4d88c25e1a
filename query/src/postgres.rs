//! The Postgres dialect of the query path, for clients of the Postgres wire
//! protocol (`weir-web`'s `pg.rs`): psql, Grafana's PostgreSQL data source,
//! psycopg, SQLAlchemy.
//!
//! The same read-only path as `/v1/sql`, with three differences:
//!
//! - SQL is parsed by `datafusion-pg-catalog`'s [`PostgresCompatibilityParser`]
//!   (the Postgres dialect, with the rewrites that make the catalog queries of
//!   psql, Grafana and SQLAlchemy plan in DataFusion), and a simple query may
//!   hold several statements. Each statement is then classified by the same
//!   guard as `/v1/sql` ([`guard::check_statement`]), except the session
//!   commands drivers send on connect and around queries (`SET`, `SHOW`,
//!   `BEGIN`, `COMMIT`, `ROLLBACK`, savepoints, `DISCARD`, `DEALLOCATE`): those
//!   are [`Command`]s, answered by the wire layer and never planned.
//! - The session also holds a `pg_catalog` schema (the crate's tables:
//!   `pg_class`, `pg_attribute`, `pg_namespace`, ... over Weir's catalog, plus
//!   its static tables such as `pg_type`), the catalog functions clients call
//!   (`format_type`, `pg_table_is_visible`, `current_schema`, ...), a
//!   `version()` that names a PostgreSQL version (drivers parse it), and the
//!   planner of oid-alias types (`::regclass`). Every call is still bounded by
//!   `BoundFunctions`.
//! - Statements may hold parameters (`$1`): [`Described`] gives their types
//!   and the result's schema without running the statement, and
//!   [`crate::QueryService::execute_postgres`] runs it with values bound.
//!
//! One `pg_catalog` schema serves every query of a service, so that the OIDs it
//! hands out (one per schema and table, on first sight) stay the same from one
//! query to the next: psql looks a table's OID up in one query and its columns
//! by that OID in the next.

use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProvider, SchemaProvider};
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, SelectItem, Set, SetExpr, Statement, TableFactor, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pgc, PgCatalogSchemaProvider, PgCatalogStaticTables, format_type, has_privilege_udf, pg_get_expr_udf,
    quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::catalog::{CATALOG, SCHEMA};
use crate::guard::{self, Checked};
use crate::{Error, Result};

/// The PostgreSQL version Weir answers to `version()` and `server_version`:
/// drivers parse it to pick their features.
pub const SERVER_VERSION: &str = "16.0";

/// A statement of a Postgres client, classified.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A statement the read-only guard allowed: planned and run.
    Query(Checked),
    /// A session command, answered without planning.
    Command(Command),
}

/// The session commands clients send on connect and around queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET name = value` / `SET name TO value` / `SET TIME ZONE value`.
    Set {
        name: String,
        value: String,
    },
    /// `SHOW name` (`SHOW ALL` included).
    Show {
        name: String,
    },
    /// `BEGIN` / `START TRANSACTION`: every statement reads, so a
    /// transaction only groups reads.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name`, `RELEASE name`, `ROLLBACK TO name`: drivers nest
    /// transactions so; with reads only there is nothing to undo.
    Savepoint,
    Release,
    RollbackTo,
    /// `DISCARD ALL` and friends.
    Discard,
    /// `DEALLOCATE name`: forgets a prepared statement.
    Deallocate {
        name: String,
    },
}

/// What a prepared statement needs before it runs: its parameters' types,
/// in order (`$1` first; `None` where the plan leaves one open), and its
/// result's schema.
#[derive(Debug, Clone)]
pub struct Described {
    pub parameters: Vec<Option<DataType>>,
    pub schema: datafusion::arrow::datatypes::SchemaRef,
}

/// The parser, built once: it tokenizes its rewrite patterns when made.
static PARSER: LazyLock<PostgresCompatibilityParser> = LazyLock::new(PostgresCompatibilityParser::new);

/// Splits `sql` into statements and classifies each.
pub fn parse(sql: &str) -> Result<Vec<Parsed>> {
    guard::check_operators_in(sql)?;
    let statements = PARSER.parse(sql).map_err(|e| Error::Sql { message: e.to_string() })?;
    statements.into_iter().map(classify).collect()
}

/// DataFusion plans a correlated scalar subquery only when it aggregates;
/// the catalog queries of clients (SQLAlchemy's column reflection) select one
/// column of one catalog row without. Such a subquery, reading only
/// `pg_catalog` tables, gets its column wrapped in `max()`: one row gives the
/// same answer and none gives NULL, as in Postgres. Other subqueries are left
/// as written.
fn aggregate_catalog_subqueries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        if let SqlExpr::Subquery(query) = e
            && let SetExpr::Select(select) = query.body.as_mut()
            && select.projection.len() == 1
            && matches!(&select.group_by, GroupByExpr::Expressions(by, _) if by.is_empty())
            && !select.from.is_empty()
            && select.from.iter().all(|t| is_catalog(&t.relation) && t.joins.iter().all(|j| is_catalog(&j.relation)))
            && let SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. } =
                &mut select.projection[0]
            && !is_aggregate(column)
            && let Ok(wrapped) = Parser::new(&PostgreSqlDialect {}).try_with_sql(&format!("max({column})"))
            && let Ok(wrapped) = { wrapped }.parse_expr()
        {
            *column = wrapped;
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_catalog(relation: &TableFactor) -> bool {
    let TableFactor::Table { name, .. } = relation else { return false };
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_lowercase()).collect();
    match parts.as_slice() {
        [schema, _] => schema == "pg_catalog",
        [table] => table.starts_with("pg_"),
        _ => false,
    }
}

fn is_aggregate(e: &SqlExpr) -> bool {
    let SqlExpr::Function(f) = e else { return false };
    let name = f.name.to_string().to_lowercase();
    ["max", "min", "count", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or"]
        .iter()
        .any(|a| name == *a || name.ends_with(&format!(".{a}")))
}

fn classify(mut statement: Statement) -> Result<Parsed> {
    aggregate_catalog_subqueries(&mut statement);
    let command = match &statement {
        Statement::Set(set) => set_command(set)?,
        Statement::ShowVariable { variable } => {
            Command::Show { name: variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" ") }
        }
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback { savepoint: Some(_), .. } => Command::RollbackTo,
        Statement::Rollback { .. } => Command::Rollback,
        Statement::Savepoint { .. } => Command::Savepoint,
        Statement::ReleaseSavepoint { .. } => Command::Release,
        Statement::Discard { .. } => Command::Discard,
        Statement::Deallocate { name, .. } => Command::Deallocate { name: name.value.clone() },
        _ => return Ok(Parsed::Query(guard::check_statement(DfStatement::Statement(Box::new(statement)))?)),
    };
    Ok(Parsed::Command(command))
}

fn set_command(set: &Set) -> Result<Command> {
    let (name, values) = match set {
        Set::SingleAssignment { variable, values, .. } => (variable.to_string().to_lowercase(), values.as_slice()),
        Set::SetTimeZone { value, .. } => ("timezone".to_string(), std::slice::from_ref(value)),
        other => {
            return Err(Error::Refused { reason: format!("`{other}` is not supported: SET one parameter at a time") });
        }
    };
    let value = values.iter().map(set_value).collect::<Vec<_>>().join(", ");
    Ok(Command::Set { name, value })
}

/// A `SET` value as text: quoted strings without their quotes.
fn set_value(e: &SqlExpr) -> String {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        SqlExpr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// The `pg_catalog` schema and functions, shared by a service's queries.
pub struct PgCatalog {
    schema: Arc<dyn SchemaProvider>,
    static_tables: Arc<PgCatalogStaticTables>,
}

impl fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgCatalog")
    }
}

impl PgCatalog {
    /// A `pg_catalog` over the tables of `catalogs` (Weir's own list, which
    /// does not hold `pg_catalog` itself).
    pub fn new(catalogs: Arc<dyn CatalogProviderList>) -> Result<Self> {
        let static_tables = Arc::new(
            PgCatalogStaticTables::try_new()
                .map_err(|e| Error::internal(format!("loading pg_catalog's static tables: {e}")))?,
        );
        let schema = PgCatalogSchemaProvider::try_new(catalogs, Arc::clone(&static_tables), EmptyContextProvider)
            .map_err(|e| Error::internal(format!("building pg_catalog: {e}")))?;
        Ok(PgCatalog { schema: Arc::new(schema), static_tables })
    }

    /// The catalogs a Postgres query resolves names in: Weir's `weir.public`
    /// and, beside it, `weir.pg_catalog`.
    pub(crate) fn catalogs(&self, weir: &Arc<dyn CatalogProviderList>) -> Result<Arc<dyn CatalogProviderList>> {
        let catalog = MemoryCatalogProvider::new();
        if let Some(public) = weir.catalog(CATALOG).and_then(|c| c.schema(SCHEMA)) {
            catalog.register_schema(SCHEMA, public)?;
        }
        catalog.register_schema("pg_catalog", Arc::clone(&self.schema))?;
        let list = datafusion::catalog::MemoryCatalogProviderList::new();
        list.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        Ok(Arc::new(list))
    }

    /// `state` with the functions and the type planner of Postgres clients.
    pub(crate) fn install(&self, state: SessionState) -> Result<SessionState> {
        let state = SessionStateBuilder::new_from_existing(state).with_type_planner(Arc::new(PgOidTypePlanner)).build();
        let ctx = SessionContext::new_with_state(state);
        for udf in [
            pgc::create_current_database_udf(CATALOG),
            pgc::create_current_schema_udf(),
            pgc::create_current_schemas_udf(),
            pgc::create_pg_get_userbyid_udf(),
            has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
            has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
            has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
            has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
            pgc::create_pg_table_is_visible(),
            format_type::create_format_type_udf(),
            pgc::create_session_user_udf(),
            pg_get_expr_udf::create_pg_get_expr_udf(),
            pgc::create_pg_get_partkeydef_udf(),
            pgc::create_pg_relation_is_publishable_udf(),
            pgc::create_pg_get_statisticsobjdef_columns_udf(),
            pgc::create_pg_encoding_to_char_udf(),
            pgc::create_pg_backend_pid_udf(),
            pgc::create_pg_relation_size_udf(),
            pgc::create_pg_total_relation_size_udf(),
            pgc::create_pg_stat_get_numscans(),
            pgc::create_pg_get_constraintdef(),
            pgc::create_pg_get_partition_ancestors_udf(),
            quote_ident_udf::create_quote_ident_udf(),
            quote_ident_udf::create_parse_ident_udf(),
            ScalarUDF::new_from_impl(Version::new()),
            ScalarUDF::new_from_impl(ToRegtype::new()),
            ScalarUDF::new_from_impl(Constant::new("pg_get_serial_sequence", 2, ScalarValue::Utf8(None))),
            ScalarUDF::new_from_impl(Constant::new("pg_collation_is_visible", 1, ScalarValue::Boolean(Some(true)))),
            ScalarUDF::new_from_impl(JsonBuildObject::new()),
        ] {
            ctx.register_udf(udf);
        }
        ctx.register_udtf("pg_get_keywords", self.static_tables.pg_get_keywords.clone());
        CoerceIntArgsToBigInt::widen(&ctx);
        Ok(ctx.state())
    }
}

/// The parameters of `plan` in order, `$1` first: a statement's placeholders
/// are numbered, and a number left out is an open parameter. A parameter
/// whose type the plan leaves open takes the type it is cast to (`$1::BIGINT`).
pub(crate) fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let mut found = plan.get_parameter_types()?;
    if found.values().any(Option::is_none) {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|e| {
                e.apply(|e| {
                    if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                        && let Expr::Placeholder(p) = expr.as_ref()
                        && let Some(slot @ None) = found.get_mut(&p.id)
                    {
                        *slot = Some(field.data_type().clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
    }
    let mut numbered = Vec::new();
    for (id, ty) in found {
        let n: usize = id.strip_prefix('$').and_then(|n| n.parse().ok()).filter(|n| *n >= 1).ok_or_else(|| {
            Error::Sql { message: format!("parameter `{id}`: Postgres parameters are numbered, $1, $2, ...") }
        })?;
        numbered.push((n, ty));
    }
    let count = numbered.iter().map(|(n, _)| *n).max().unwrap_or(0);
    if count > MAX_PARAMETERS {
        return Err(Error::Limit {
            message: format!("the statement names parameter ${count}; a statement may have at most {MAX_PARAMETERS}"),
        });
    }
    let mut types = vec![None; count];
    for (n, ty) in numbered {
        types[n - 1] = ty;
    }
    Ok(types)
}

/// The most parameters one statement may have (the protocol's own limit).
pub const MAX_PARAMETERS: usize = u16::MAX as usize;

/// `version()`: a PostgreSQL version string, which drivers parse.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl Version {
    fn new() -> Self {
        Version { signature: Signature::nullary(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version_text()))))
    }
}

/// `to_regtype(name)`: the OID of a built-in type by name (Postgres's fixed
/// OIDs), NULL for any other name, as in Postgres. Drivers ask it for the
/// types they can adapt (psycopg's `TypeInfo.fetch`, SQLAlchemy's `hstore`
/// check).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl ToRegtype {
    fn new() -> Self {
        ToRegtype { signature: Signature::string(1, Volatility::Immutable) }
    }
}

/// Built-in type names and their OIDs (fixed in every Postgres).
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("char", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("record", 2249),
    ("uuid", 2950),
    ("jsonb", 3802),
];

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let names = args.args[0].to_array(args.number_rows)?;
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let names = datafusion::arrow::array::AsArray::as_string::<i32>(&names);
        let oids: datafusion::arrow::array::Int32Array = names
            .iter()
            .map(|n| {
                let n = n?.trim().trim_start_matches("pg_catalog.").to_lowercase();
                TYPE_OIDS.iter().find(|(name, _)| *name == n).map(|(_, oid)| *oid)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(oids)))
    }
}

/// A catalog function whose answer is the same for every argument in Weir:
/// `pg_get_serial_sequence` (no table has a sequence: NULL),
/// `pg_collation_is_visible` (the one collation is).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl Constant {
    fn new(name: &'static str, args: usize, value: ScalarValue) -> Self {
        Constant { name, signature: Signature::any(args, Volatility::Immutable), value }
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `json_build_object(key, value, ...)`: a JSON object as text, keys and
/// values in pairs (SQLAlchemy's column reflection builds its identity and
/// collation details so).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        JsonBuildObject { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        if !args.len().is_multiple_of(2) {
            return datafusion::common::plan_err!(
                "json_build_object takes keys and values in pairs; it was given {} arguments",
                args.len()
            );
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args.args.iter().map(|a| a.to_array(rows)).collect::<DfResult<Vec<_>>>()?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in columns.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                let value = match value {
                    v if v.is_null() => serde_json::Value::Null,
                    ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(b),
                    ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                        serde_json::Value::String(s)
                    }
                    v if v.data_type().is_numeric() => {
                        serde_json::from_str(&v.to_string()).unwrap_or(serde_json::Value::String(v.to_string()))
                    }
                    v => serde_json::Value::String(v.to_string()),
                };
                object.insert(key.to_string(), value);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// What `version()` answers.
pub fn version_text() -> String {
    format!("PostgreSQL {SERVER_VERSION} (Weir {}, DataFusion)", env!("CARGO_PKG_VERSION"))
}
