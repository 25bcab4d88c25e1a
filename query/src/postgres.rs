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
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemTable, MemoryCatalogProvider, SchemaProvider, TableProvider,
};
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

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Query, Select, SelectItem, Set, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut, visit_expressions,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pgc, ArrowTable, PgCatalogSchemaProvider, PgCatalogStaticTables, format_type, has_privilege_udf,
    pg_get_expr_udf, quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{self, SqlStatementRewriteRule};

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

/// The crate's statement rewrites, in its order, without
/// `RemoveSubqueryFromProjection`: that one answers NULL for any scalar
/// subquery of a select list it takes for correlated (one naming a derived
/// table's column, or holding a parameter), where `/v1/sql` gives the value.
static RULES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| {
    vec![
        Box::new(rules::AliasDuplicatedProjectionRewrite),
        Box::new(rules::ResolveUnqualifiedIdentifier),
        Box::new(rules::RewriteArrayAnyAllOperation),
        Box::new(rules::PrependUnqualifiedPgTableName),
        Box::new(rules::StripCallableQualifier),
        Box::new(rules::FixArrayLiteral),
        Box::new(rules::CurrentUserVariableToSessionUserFunctionCall),
        Box::new(rules::StripCollate),
        Box::new(rules::RewritePgCatalogOperator),
        Box::new(rules::RewriteRegCastToSubquery::new()),
    ]
});

/// Splits `sql` into statements and classifies each.
pub fn parse(sql: &str) -> Result<Vec<Parsed>> {
    guard::check_operators_in(sql)?;
    statements(sql)?.into_iter().map(classify).collect()
}

/// `sql`'s statements, rewritten as [`PARSER`] does, except that no scalar
/// subquery becomes NULL ([`RULES`]). The crate's parser also replaces a few
/// whole client queries it knows (and reads `ABORT`); when its answer is not
/// what its rules make of the plain parse, one of those fired, and its answer
/// is taken.
fn statements(sql: &str) -> Result<Vec<Statement>> {
    let crate_parsed = PARSER.parse(sql).map_err(|e| Error::Sql { message: e.to_string() })?;
    let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return Ok(crate_parsed) };
    let ours: Vec<Statement> = plain.into_iter().map(|s| RULES.iter().fold(s, |s, r| r.rewrite(s))).collect();
    let as_crate: Vec<Statement> = ours
        .iter()
        .map(|s| rules::FixVersionColumnName.rewrite(rules::RemoveSubqueryFromProjection.rewrite(s.clone())))
        .collect();
    if as_crate != crate_parsed {
        return Ok(crate_parsed);
    }
    Ok(ours.into_iter().map(|s| rules::FixVersionColumnName.rewrite(s)).collect())
}

/// The part of `RemoveSubqueryFromProjection` that catalog queries need, and
/// only for them: a scalar subquery that is a column of a select list, reads
/// only `pg_catalog` tables and correlates by more than equalities (which
/// DataFusion cannot decorrelate) is NULL. psql's `\d` asks so for a
/// column's collation when it differs from its type's (never, in Weir).
/// Subqueries over Weir's tables are never touched.
struct CorrelatedCatalogColumns;

impl VisitorMut for CorrelatedCatalogColumns {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                    && let SqlExpr::Subquery(sub) = e
                    && let SetExpr::Select(inner) = sub.body.as_ref()
                    && !inner.from.is_empty()
                    && inner
                        .from
                        .iter()
                        .all(|t| is_catalog(&t.relation) && t.joins.iter().all(|j| is_catalog(&j.relation)))
                    && is_correlated(inner)
                {
                    *e = SqlExpr::Value(Value::Null.into());
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether a conjunct of a subquery's `WHERE` compares its own columns with
/// the enclosing query's other than by `=`.
fn is_correlated(select: &Select) -> bool {
    let inner = from_names(select);
    let Some(selection) = select.selection.clone() else { return false };
    let mut conjuncts = Vec::new();
    split_conjuncts(selection, &mut conjuncts);
    conjuncts.iter().any(|c| {
        let (mut own, mut outer) = (false, false);
        let _ = visit_expressions(c, |e| {
            match e {
                SqlExpr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    if inner.contains(&parts[parts.len() - 2].value.to_lowercase()) { own = true } else { outer = true }
                }
                SqlExpr::Identifier(_) => own = true,
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        own && outer && !matches!(c, SqlExpr::BinaryOp { op: BinaryOperator::Eq, .. })
    })
}

/// DataFusion plans a correlated scalar subquery only when it aggregates;
/// the catalog queries of clients (SQLAlchemy's column reflection) select one
/// column of one catalog row without. Such a subquery, reading only
/// `pg_catalog` tables, gets its column wrapped in `max()`: one row gives the
/// same answer and none gives NULL, as in Postgres. Other subqueries are left
/// as written; its `WHERE` conjuncts that read only the enclosing row move
/// out ([`hoist_outer_conjuncts`]). And `generate_subscripts()` is planned
/// as `unnest()` ([`generate_subscripts`]).
fn rewrite_catalog_queries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        let (mut guard, mut empty) = (None, false);
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
            if select.from.iter().any(|t| is_empty_catalog(&t.relation)) {
                empty = true;
            } else {
                guard = hoist_outer_conjuncts(select);
            }
        } else if let SqlExpr::Function(f) = e
            && let Some(subscripts) = generate_subscripts(f)
        {
            *e = subscripts;
        }
        if empty {
            *e = SqlExpr::Value(Value::Null.into());
        } else if let Some(guard) = guard {
            *e = SqlExpr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![CaseWhen { condition: guard, result: e.clone() }],
                else_result: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = statement.visit(&mut CorrelatedCatalogColumns);
}

/// Takes out of a catalog subquery's `WHERE` the conjuncts that read only
/// the enclosing query's columns (SQLAlchemy's `pg_attribute.atthasdef`
/// inside its subquery over `pg_attrdef`), which DataFusion cannot
/// decorrelate, and returns them joined by `AND`: the subquery, whose column
/// is aggregated by `max()`, is then the same as `CASE WHEN <them> THEN
/// <subquery> END` (when they do not hold, no row passes and `max()` gives
/// NULL). A conjunct counts as outer when every column it names is qualified
/// by a table that is not in the subquery's `FROM`; unqualified columns and
/// nested subqueries keep it inside.
fn hoist_outer_conjuncts(select: &mut Select) -> Option<SqlExpr> {
    let inner = from_names(select);
    let selection = select.selection.take()?;
    let mut conjuncts = Vec::new();
    split_conjuncts(selection, &mut conjuncts);
    let (outer, kept): (Vec<_>, Vec<_>) = conjuncts.into_iter().partition(|c| is_outer_only(c, &inner));
    select.selection = kept.into_iter().reduce(and);
    outer.into_iter().reduce(and)
}

/// The names a select's `FROM` gives its tables (the last part of a table's
/// name, and its alias), lowercase.
fn from_names(select: &Select) -> Vec<String> {
    select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .flat_map(|r| match r {
            TableFactor::Table { name, alias, .. } => {
                let last = name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase());
                let alias = alias.as_ref().map(|a| a.name.value.to_lowercase());
                vec![last, alias].into_iter().flatten().collect()
            }
            _ => vec![],
        })
        .collect()
}

fn split_conjuncts(e: SqlExpr, out: &mut Vec<SqlExpr>) {
    match e {
        SqlExpr::BinaryOp { left, op: BinaryOperator::And, right } => {
            split_conjuncts(*left, out);
            split_conjuncts(*right, out);
        }
        SqlExpr::Nested(inner) if matches!(inner.as_ref(), SqlExpr::BinaryOp { op: BinaryOperator::And, .. }) => {
            split_conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn and(left: SqlExpr, right: SqlExpr) -> SqlExpr {
    SqlExpr::BinaryOp { left: Box::new(left), op: BinaryOperator::And, right: Box::new(right) }
}

fn is_outer_only(e: &SqlExpr, inner: &[String]) -> bool {
    let mut columns = 0;
    let mut outer = true;
    let _ = visit_expressions(e, |e| {
        match e {
            SqlExpr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                columns += 1;
                let table = parts[parts.len() - 2].value.to_lowercase();
                outer &= !inner.contains(&table);
            }
            SqlExpr::Identifier(_) | SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
                outer = false
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer && columns > 0
}

/// `generate_subscripts(array, dim)`, a set-returning function DataFusion
/// does not have, as `unnest(range(1, cardinality(array) + 1))` when `dim`
/// is 1 and no row otherwise: the same rows (the subscripts of a
/// one-dimensional array, from 1), zipped with the
/// other `unnest`s of the select list as Postgres zips set-returning
/// functions. SQLAlchemy's key and index reflection numbers `indkey` so.
fn generate_subscripts(f: &Function) -> Option<SqlExpr> {
    let name = f.name.to_string().to_lowercase();
    if name != "generate_subscripts" && name != "pg_catalog.generate_subscripts" {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else { return None };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array)), FunctionArg::Unnamed(FunctionArgExpr::Expr(dim))] =
        list.args.as_slice()
    else {
        return None;
    };
    let sql = format!(
        "unnest(CASE WHEN ({dim}) = 1 THEN range(1, CAST(cardinality({array}) AS BIGINT) + 1) ELSE range(0) END)"
    );
    Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).ok()?.parse_expr().ok()
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

/// The catalog tables that are empty in Weir: no column has a default
/// (`pg_attrdef`), no table a sequence (`pg_sequence`). A scalar subquery
/// reading one of them (not through an outer join) is NULL, whatever it
/// correlates with; SQLAlchemy's identity and default reflection asks so, in
/// subqueries DataFusion cannot decorrelate.
const EMPTY_CATALOG_TABLES: [&str; 2] = ["pg_attrdef", "pg_sequence"];

fn is_empty_catalog(relation: &TableFactor) -> bool {
    let TableFactor::Table { name, .. } = relation else { return false };
    is_catalog(relation)
        && name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| EMPTY_CATALOG_TABLES.iter().any(|t| i.value.eq_ignore_ascii_case(t)))
}

fn is_aggregate(e: &SqlExpr) -> bool {
    let SqlExpr::Function(f) = e else { return false };
    let name = f.name.to_string().to_lowercase();
    ["max", "min", "count", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or"]
        .iter()
        .any(|a| name == *a || name.ends_with(&format!(".{a}")))
}

fn classify(mut statement: Statement) -> Result<Parsed> {
    rewrite_catalog_queries(&mut statement);
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
        let pg_index = pg_index_with_vectors(&static_tables.pg_index)
            .map_err(|e| Error::internal(format!("building pg_catalog.pg_index: {e}")))?;
        let schema = WithPgIndex { inner: Arc::new(schema), pg_index };
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
            ScalarUDF::new_from_impl(Constant::new("pg_get_serial_sequence", &[2], ScalarValue::Utf8(None))),
            ScalarUDF::new_from_impl(Constant::new("pg_collation_is_visible", &[1], ScalarValue::Boolean(Some(true)))),
            ScalarUDF::new_from_impl(Constant::new("pg_get_indexdef", &[1, 3], ScalarValue::Utf8(None))),
            ScalarUDF::new_from_impl(JsonBuildObject::new()),
            ScalarUDF::new_from_impl(CurrentSetting {
                signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
            }),
        ] {
            ctx.register_udf(udf);
        }
        ctx.register_udtf("pg_get_keywords", self.static_tables.pg_get_keywords.clone());
        CoerceIntArgsToBigInt::widen(&ctx);
        Ok(ctx.state())
    }
}

/// `pg_catalog` with its `pg_index` as [`pg_index_with_vectors`] makes it
/// and its `pg_class` as [`with_reloptions`] does.
#[derive(Debug)]
struct WithPgIndex {
    inner: Arc<dyn SchemaProvider>,
    pg_index: Arc<dyn TableProvider>,
}

#[async_trait::async_trait]
impl SchemaProvider for WithPgIndex {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case("pg_index") {
            return Ok(Some(Arc::clone(&self.pg_index)));
        }
        let table = self.inner.table(name).await?;
        match table {
            Some(pg_class) if name.eq_ignore_ascii_case("pg_class") => Ok(Some(with_reloptions(pg_class)?)),
            other => Ok(other),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// The crate's `pg_class` with the column it lacks, `reloptions` (`text[]`,
/// NULL: no table has storage options), which SQLAlchemy's index reflection
/// reads.
fn with_reloptions(pg_class: Arc<dyn TableProvider>) -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::datasource::{provider_as_source, view::ViewTable};
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
    let list = DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true)));
    let mut columns: Vec<Expr> = pg_class.schema().fields().iter().map(|f| col(format!("\"{}\"", f.name()))).collect();
    columns.push(lit(ScalarValue::try_from(&list)?).alias("reloptions"));
    let plan = LogicalPlanBuilder::scan("pg_class", provider_as_source(pg_class), None)?.project(columns)?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The static `pg_index` with its vector columns as arrays, as Postgres has
/// them: `indkey` and `indoption` (`int2vector`) as lists of `Int16`,
/// `indcollation` and `indclass` (`oidvector`) as lists of `Int32` (the
/// crate's OID type). The crate keeps them as text (`"1 2"`), on which
/// `unnest(indkey)` (SQLAlchemy's key and index reflection) cannot plan.
fn pg_index_with_vectors(table: &ArrowTable) -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, PrimitiveBuilder, RecordBatch};
    use datafusion::arrow::datatypes::{ArrowPrimitiveType, Field, Int16Type, Int32Type, Schema};

    fn vector<T: ArrowPrimitiveType>(text: &ArrayRef) -> DfResult<ArrayRef>
    where
        T::Native: std::str::FromStr,
    {
        let text = datafusion::arrow::compute::cast(text, &DataType::Utf8)?;
        let mut out = ListBuilder::new(PrimitiveBuilder::<T>::new());
        for value in text.as_string::<i32>() {
            match value {
                None => out.append_null(),
                Some(value) => {
                    for n in value.split_whitespace() {
                        let n = n.parse::<T::Native>().map_err(|_| {
                            datafusion::error::DataFusionError::Internal(format!("`{n}` in a vector of pg_index"))
                        })?;
                        out.values().append_value(n);
                    }
                    out.append(true);
                }
            }
        }
        Ok(Arc::new(out.finish()))
    }

    let schema = table.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let element = match field.name().as_str() {
            "indkey" | "indoption" => DataType::Int16,
            "indcollation" | "indclass" => DataType::Int32,
            _ => {
                fields.push(Arc::clone(field));
                continue;
            }
        };
        let list = DataType::List(Arc::new(Field::new_list_field(element, true)));
        fields.push(Arc::new(Field::new(field.name(), list, true)));
    }
    let converted = Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(table.data().len());
    for batch in table.data() {
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            columns.push(match field.name().as_str() {
                "indkey" | "indoption" => vector::<Int16Type>(column)?,
                "indcollation" | "indclass" => vector::<Int32Type>(column)?,
                _ => Arc::clone(column),
            });
        }
        debug_assert!(columns.iter().all(|c| c.len() == batch.num_rows()));
        batches.push(RecordBatch::try_new(Arc::clone(&converted), columns)?);
    }
    Ok(Arc::new(MemTable::try_new(converted, vec![batches])?))
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
        let names = text_argument(&args.args[0], args.number_rows)?;
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
/// `pg_collation_is_visible` (the one collation is), `pg_get_indexdef`
/// (no table has an index: NULL, as Postgres answers for an OID that is not
/// an index's).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl Constant {
    fn new(name: &'static str, arities: &[usize], value: ScalarValue) -> Self {
        let signature = Signature::one_of(
            arities.iter().map(|n| datafusion::logical_expr::TypeSignature::Any(*n)).collect(),
            Volatility::Immutable,
        );
        Constant { name, signature, value }
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

/// The value of a server setting, as `SHOW` and `current_setting()` answer
/// it when the session did not set it.
pub fn server_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "server_version" => SERVER_VERSION,
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings"
        | "integer_datetimes"
        | "default_transaction_read_only"
        | "transaction_read_only" => "on",
        "is_superuser" => "off",
        "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "timezone" | "time zone" => "UTC",
        "datestyle" => "ISO, YMD",
        "intervalstyle" => "postgres",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        "application_name" => "",
        "default_table_access_method" => "heap",
        _ => return None,
    })
}

/// `current_setting(name)`: a server setting ([`server_setting`]); an
/// unknown name is an error, as in Postgres. What a session `SET` is seen by
/// `SHOW` only.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let names = text_argument(&args.args[0], args.number_rows)?;
        let names = datafusion::arrow::array::AsArray::as_string::<i32>(&names);
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for name in names.iter() {
            match name {
                None => out.append_null(),
                Some(name) => match server_setting(&name.to_lowercase()) {
                    Some(value) => out.append_value(value),
                    None => {
                        return datafusion::common::plan_err!("unrecognized configuration parameter \"{name}\"");
                    }
                },
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A function's argument as a text array of `rows` values.
fn text_argument(arg: &ColumnarValue, rows: usize) -> DfResult<datafusion::arrow::array::ArrayRef> {
    Ok(datafusion::arrow::compute::cast(&arg.to_array(rows)?, &DataType::Utf8)?)
}

/// What `version()` answers.
pub fn version_text() -> String {
    format!("PostgreSQL {SERVER_VERSION} (Weir {}, DataFusion)", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `pg_catalog` over no tables, and a runtime to read it on.
    fn catalog() -> (PgCatalog, tokio::runtime::Runtime) {
        let catalogs: Arc<dyn CatalogProviderList> = Arc::new(datafusion::catalog::MemoryCatalogProviderList::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        (PgCatalog::new(catalogs).unwrap(), rt)
    }

    fn rewritten(sql: &str) -> String {
        match parse(sql).unwrap().remove(0) {
            Parsed::Query(checked) => checked.statement.to_string(),
            Parsed::Command(c) => panic!("{c:?}"),
        }
    }

    #[test]
    fn outer_conjuncts_of_catalog_subqueries_become_a_case_guard() {
        let sql = rewritten(
            "SELECT CASE WHEN pg_catalog.pg_attribute.attcollation != 0 THEN (SELECT pg_catalog.pg_type.typcollation AS c \
             FROM pg_catalog.pg_type WHERE pg_catalog.pg_attribute.attcollation != 0 AND pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid) ELSE NULL END \
             FROM pg_catalog.pg_attribute",
        );
        assert!(
            sql.contains(
                "THEN CASE WHEN pg_catalog.pg_attribute.attcollation <> 0 THEN (SELECT max(pg_catalog.pg_type.typcollation) AS c FROM pg_catalog.pg_type WHERE pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid) END"
            ),
            "{sql}"
        );
        // A conjunct naming a column of the subquery's own table stays.
        let sql = rewritten(
            "SELECT (SELECT t.typname FROM pg_catalog.pg_type t WHERE t.typlen > 0 AND a.attnum = 1) FROM pg_catalog.pg_attribute a",
        );
        assert!(
            sql.contains(
                "CASE WHEN a.attnum = 1 THEN (SELECT max(t.typname) FROM pg_catalog.pg_type t WHERE t.typlen > 0) END"
            ),
            "{sql}"
        );
        // An unqualified column might be the subquery's: nothing moves.
        let sql = rewritten(
            "SELECT (SELECT t.typname FROM pg_catalog.pg_type t WHERE typlen > 0) FROM pg_catalog.pg_attribute a",
        );
        assert!(!sql.contains("CASE"), "{sql}");
    }

    #[test]
    fn subqueries_over_empty_catalog_tables_are_null() {
        let sql = rewritten(
            "SELECT CASE WHEN a.attidentity != '' THEN (SELECT json_build_object('start', s.seqstart, 'always', a.attidentity = 'a') \
             FROM pg_catalog.pg_sequence s WHERE s.seqrelid = a.attrelid) ELSE NULL END FROM pg_catalog.pg_attribute a",
        );
        assert!(sql.contains("THEN NULL ELSE NULL END"), "{sql}");
        // What makes that exact: the tables are empty.
        let (pg, rt) = catalog();
        for table in EMPTY_CATALOG_TABLES {
            let provider = rt.block_on(pg.schema.table(table)).unwrap().unwrap();
            let ctx = SessionContext::new();
            let batches = rt.block_on(async { ctx.read_table(provider)?.collect().await }).unwrap();
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0, "{table}");
        }
    }

    #[test]
    fn pg_index_has_its_vectors_as_arrays() {
        let (pg, rt) = catalog();
        let provider = rt.block_on(pg.schema.table("pg_index")).unwrap().unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("pg_index", provider).unwrap();
        let batches = rt
            .block_on(async {
                ctx.sql("SELECT indnatts, cardinality(indkey) AS n, indkey[1] AS first FROM pg_index WHERE indnatts = 2 LIMIT 1")
                    .await?
                    .collect()
                    .await
            })
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("| 2        | 2 |"), "{text}");
    }

    #[test]
    fn scalar_subqueries_of_a_select_list_are_kept() {
        // The crate's parser would answer NULL for both.
        assert_eq!(
            rewritten("SELECT (SELECT max(v.x) FROM (VALUES (1), (2)) AS v(x)) AS m"),
            "SELECT (SELECT max(v.x) FROM (VALUES (1), (2)) AS v (x)) AS m"
        );
        assert!(rewritten("SELECT (SELECT max(x) FROM (VALUES (1)) AS v(x) WHERE x > $1) AS m").contains("$1"));
        // A correlated one over catalog tables only, in a select list, is NULL
        // (psql's `\d` column collation).
        let sql = rewritten(
            "SELECT (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t \
             WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation \
             FROM pg_catalog.pg_attribute a",
        );
        assert!(sql.starts_with("SELECT NULL AS attcollation"), "{sql}");
        // Its whole-query replacements still apply: `ABORT` is `ROLLBACK`.
        assert!(matches!(parse("ABORT").unwrap()[..], [Parsed::Command(Command::Rollback)]));
    }

    #[test]
    fn generate_subscripts_is_planned_as_unnest() {
        let sql = rewritten("SELECT unnest(indkey), generate_subscripts(indkey, $1::INTEGER) FROM pg_catalog.pg_index");
        assert!(sql.contains("unnest(CASE WHEN ($1::INTEGER) = 1"), "{sql}");
    }
}
