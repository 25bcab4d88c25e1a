//! Weir's DDL: `CREATE TABLE`, `CREATE MATERIALIZED VIEW`, `DROP TABLE` and
//! `DROP MATERIALIZED VIEW`, read into the table API's definitions.
//!
//! This module only translates: a statement becomes the JSON a `POST
//! /v1/tables` body would hold (or a rollup of one), which the config parser's
//! own checks then accept or refuse, so a definition means the same however it
//! was sent. What runs it (the admin scope, the catalog, the replay that
//! backfills a rollup) is the web crate's. Anything a statement holds that has
//! no meaning here is refused by name rather than ignored: a clause Weir does not
//! read would otherwise silently change nothing.
//!
//! ```sql
//! CREATE TABLE orders (
//!   ts      TIMESTAMP NOT NULL,                        -- the event time (exactly one TIMESTAMP)
//!   id      VARCHAR NOT NULL PRIMARY KEY,              -- key + upsert
//!   country VARCHAR OPTIONS (path = 'customer.country'),
//!   price   DOUBLE,                                    -- float64: a metric
//!   qty     BIGINT,                                    -- int64, string, bool: dimensions
//!   cents   BIGINT AS (CAST(price * 100 AS BIGINT) * qty)
//! ) WITH (partitions = 4, retention = '30d', "time.formats" = ('epoch_millis'));
//!
//! CREATE MATERIALIZED VIEW orders_per_minute AS
//!   SELECT country, date_bin(INTERVAL '1 minute', ts) AS bucket,
//!          count(*) AS orders, sum(cents) AS cents, approx_distinct(id) AS buyers
//!   FROM orders GROUP BY country, bucket;
//! ```

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, CreateTable, CreateTableOptions, CreateView, DataType, DateTimeField, Expr, Function,
    FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, ObjectType, SelectItem, SetExpr,
    SqlOption, Statement, TableConstraint, TableFactor, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use serde_json::{Map, Value as Json, json};

use crate::{Error, Result};

/// One DDL statement, as table-API definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Ddl {
    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS]`: a whole table definition.
    CreateTable { definition: Json, or_replace: bool, if_not_exists: bool },
    /// `DROP TABLE [IF EXISTS]`.
    DropTable { name: String, if_exists: bool },
    /// `CREATE [OR REPLACE] MATERIALIZED VIEW [IF NOT EXISTS] <table>_<rollup>`:
    /// a rollup definition (with its `name`) to add to `table`.
    CreateRollup { table: String, rollup: Json, or_replace: bool, if_not_exists: bool },
    /// `DROP MATERIALIZED VIEW [IF EXISTS] <table>_<rollup>`: the view's name.
    DropRollup { view: String, if_exists: bool },
}

impl Ddl {
    /// The statement's leading keywords, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Ddl::CreateTable { .. } => "CREATE TABLE",
            Ddl::DropTable { .. } => "DROP TABLE",
            Ddl::CreateRollup { .. } => "CREATE MATERIALIZED VIEW",
            Ddl::DropRollup { .. } => "DROP MATERIALIZED VIEW",
        }
    }
}

/// The column of a rollup that holds its time bucket.
const BUCKET: &str = "bucket";

/// Reads `sql` as one of Weir's DDL statements; `None` for anything else
/// (queries, and statements the read-only guard refuses).
pub fn parse(sql: &str) -> Result<Option<Ddl>> {
    if !may_be_ddl(sql) {
        return Ok(None);
    }
    let dialect = GenericDialect {};
    crate::guard::check_operators_in(sql)?;
    let mut statements = DFParserBuilder::new(sql).with_dialect(&dialect).build()?.parse_statements()?;
    if statements.len() != 1 {
        return Ok(None);
    }
    let Some(DfStatement::Statement(statement)) = statements.pop_front() else {
        return Ok(None);
    };
    match *statement {
        Statement::CreateTable(ref t) if !t.external => create_table(t).map(Some),
        Statement::CreateView(ref v) if v.materialized => create_view(v).map(Some),
        Statement::Drop { object_type, if_exists, ref names, cascade, purge, temporary, ref table, .. }
            if matches!(object_type, ObjectType::Table | ObjectType::MaterializedView) =>
        {
            if cascade || purge || temporary || table.is_some() {
                return Err(sql_error(format!(
                    "DROP {object_type} takes one name and IF EXISTS only (no CASCADE, PURGE or TEMPORARY)"
                )));
            }
            let [name] = names.as_slice() else {
                return Err(sql_error(format!("DROP {object_type} one name at a time; this names {}", names.len())));
            };
            let name = object_name(name, &object_type.to_string())?;
            Ok(Some(match object_type {
                ObjectType::Table => Ddl::DropTable { name, if_exists },
                _ => Ddl::DropRollup { view: name, if_exists },
            }))
        }
        _ => Ok(None),
    }
}

/// Whether the first word of `sql` (after comments) is CREATE or DROP.
fn may_be_ddl(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    word.eq_ignore_ascii_case("create") || word.eq_ignore_ascii_case("drop")
}

fn sql_error(message: impl Into<String>) -> Error {
    Error::Sql { message: message.into() }
}

/// An identifier as DataFusion reads it: unquoted ones in lowercase.
fn ident(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// A one-part name (`orders`, not `weir.public.orders`).
fn object_name(name: &ObjectName, what: &str) -> Result<String> {
    match name.0.as_slice() {
        [part] => part.as_ident().map(ident).ok_or_else(|| sql_error(format!("`{name}` is not a {what} name"))),
        _ => Err(sql_error(format!("`{name}`: give the {what} a name of one part, without a schema"))),
    }
}

// CREATE TABLE

/// What a column is in the definition.
enum Column {
    Time { name: String, path: Option<String> },
    Field { field: Map<String, Json>, metric: bool },
}

fn create_table(t: &CreateTable) -> Result<Ddl> {
    // Everything but the parts read below must be as a bare `CREATE TABLE`
    // leaves it: ENGINE, PARTITION BY, AS SELECT, LIKE... are refused.
    let bare = CreateTableBuilder::new(t.name.clone())
        .or_replace(t.or_replace)
        .if_not_exists(t.if_not_exists)
        .columns(t.columns.clone())
        .constraints(t.constraints.clone())
        .table_options(t.table_options.clone())
        .build();
    if &bare != t {
        return Err(sql_error(
            "CREATE TABLE takes a name, columns, PRIMARY KEY and WITH (...) options only: \
             AS SELECT, LIKE, ENGINE, PARTITION BY, ORDER BY and the like have no meaning in Weir \
             (see docs/storage.md for what WITH may set)",
        ));
    }
    let name = object_name(&t.name, "table")?;
    let mut primary: Vec<String> = Vec::new();
    let mut time: Option<(String, Option<String>)> = None;
    let (mut dimensions, mut metrics) = (Vec::new(), Vec::new());
    for c in &t.columns {
        let (column, is_primary) = column(c)?;
        if is_primary {
            primary.push(ident(&c.name));
        }
        match column {
            Column::Time { name: field, path } => {
                if let Some((other, _)) = &time {
                    return Err(sql_error(format!(
                        "columns `{other}` and `{field}` are both TIMESTAMP: a table has one event-time column; \
                         give the other a string or int64 type"
                    )));
                }
                time = Some((field, path));
            }
            Column::Field { field, metric: true } => metrics.push(Json::Object(field)),
            Column::Field { field, metric: false } => dimensions.push(Json::Object(field)),
        }
    }
    for constraint in &t.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) if pk.name.is_none() && pk.index_name.is_none() => {
                for column in &pk.columns {
                    match &column.column.expr {
                        Expr::Identifier(i) => primary.push(ident(i)),
                        other => return Err(sql_error(format!("PRIMARY KEY names columns, not `{other}`"))),
                    }
                }
            }
            other => {
                return Err(sql_error(format!(
                    "`{other}`: the only constraint a table takes is PRIMARY KEY (one column)"
                )));
            }
        }
    }
    let Some((time_field, time_path)) = time else {
        return Err(sql_error(format!(
            "table `{name}` has no TIMESTAMP column: give the event time's column the type TIMESTAMP"
        )));
    };
    let mut time = json!({ "field": time_field });
    if let Some(path) = time_path {
        time["path"] = json!(path);
    }
    let mut definition = json!({ "name": name, "time": time, "dimensions": dimensions, "metrics": metrics });
    match primary.as_slice() {
        [] => {}
        [key] => {
            definition["key"] = json!(key);
            definition["upsert"] = json!(true);
        }
        many => {
            return Err(sql_error(format!("PRIMARY KEY ({}): an upsert table's key is one column", many.join(", "))));
        }
    }
    let options = match &t.table_options {
        CreateTableOptions::None => &[][..],
        CreateTableOptions::With(options) => options.as_slice(),
        other => return Err(sql_error(format!("`{other}`: give a table's settings as WITH (name = value, ...)"))),
    };
    for option in options {
        set_option(&mut definition, option)?;
    }
    Ok(Ddl::CreateTable { definition, or_replace: t.or_replace, if_not_exists: t.if_not_exists })
}

/// A column as a field of the definition (or the event time); and whether it
/// is the primary key.
fn column(c: &ColumnDef) -> Result<(Column, bool)> {
    let name = ident(&c.name);
    let ty = match &c.data_type {
        DataType::Timestamp(..) | DataType::Datetime(..) => None,
        DataType::Varchar(_)
        | DataType::Text
        | DataType::String(_)
        | DataType::Char(_)
        | DataType::Character(_)
        | DataType::CharVarying(_)
        | DataType::CharacterVarying(_) => Some(("string", false)),
        DataType::BigInt(_)
        | DataType::Int(_)
        | DataType::Integer(_)
        | DataType::SmallInt(_)
        | DataType::TinyInt(_)
        | DataType::Int8(_)
        | DataType::Int4(_)
        | DataType::Int2(_)
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64 => Some(("int64", false)),
        DataType::Double(_)
        | DataType::DoublePrecision
        | DataType::Float(_)
        | DataType::Float4
        | DataType::Float8
        | DataType::Float32
        | DataType::Float64
        | DataType::Real => Some(("float64", true)),
        DataType::Boolean | DataType::Bool => Some(("bool", false)),
        other => {
            return Err(sql_error(format!(
                "column `{name}` is {other}: a column is TIMESTAMP (the event time), VARCHAR, BIGINT, DOUBLE or BOOLEAN"
            )));
        }
    };
    let (mut required, mut primary) = (false, false);
    let (mut path, mut expr) = (None, None);
    for option in &c.options {
        match &option.option {
            ColumnOption::NotNull => required = true,
            ColumnOption::Null => {}
            ColumnOption::PrimaryKey(_) => primary = true,
            ColumnOption::Materialized(e) | ColumnOption::Generated { generation_expr: Some(e), .. } => {
                expr = Some(e.to_string())
            }
            ColumnOption::Options(options) => {
                for o in options {
                    match o {
                        SqlOption::KeyValue { key, value } if ident(key) == "path" => path = Some(text(value, "path")?),
                        other => {
                            return Err(sql_error(format!(
                                "column `{name}`: OPTIONS takes `path = '<a.b[0].c>'` only, not `{other}`"
                            )));
                        }
                    }
                }
            }
            other => {
                return Err(sql_error(format!(
                    "column `{name}`: `{other}` is not something a Weir column has (use NOT NULL, PRIMARY KEY, \
                     AS (<expression>) for a derived field, OPTIONS (path = '...') for a nested one)"
                )));
            }
        }
    }
    let Some((ty, metric)) = ty else {
        if expr.is_some() || primary {
            return Err(sql_error(format!(
                "column `{name}` is the event time: it cannot be derived or be the primary key"
            )));
        }
        return Ok((Column::Time { name, path }, false));
    };
    let mut field = Map::new();
    field.insert("name".into(), json!(name));
    field.insert("type".into(), json!(ty));
    if required {
        field.insert("required".into(), json!(true));
    }
    if let Some(path) = path {
        field.insert("path".into(), json!(path));
    }
    if let Some(expr) = expr {
        field.insert("expr".into(), json!(expr));
    }
    Ok((Column::Field { field, metric }, primary))
}

/// The keys the column list sets, which WITH may not.
const SET_BY_COLUMNS: [&str; 7] = ["name", "time.field", "dimensions", "metrics", "rollups", "sessions", "time"];

/// `WITH (key = value)`: `key` is a definition's key, dotted for a nested one
/// (`"dedup.field" = 'id'`, `"kafka.topic" = 'orders'`).
fn set_option(definition: &mut Json, option: &SqlOption) -> Result<()> {
    let SqlOption::KeyValue { key, value } = option else {
        return Err(sql_error(format!("`{option}`: WITH takes name = value pairs")));
    };
    let key = key.value.clone();
    if SET_BY_COLUMNS.contains(&key.as_str()) {
        return Err(sql_error(format!(
            "WITH ({key} = ...): the column list sets this (CREATE MATERIALIZED VIEW adds a rollup)"
        )));
    }
    let value = literal(value, &key)?;
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut at = definition;
    for (i, part) in parts.iter().enumerate() {
        let object = at
            .as_object_mut()
            .ok_or_else(|| sql_error(format!("WITH `{key}`: `{}` is not a section", parts[..i].join("."))))?;
        at = object.entry(part.to_string()).or_insert_with(|| json!({}));
    }
    let object =
        at.as_object_mut().ok_or_else(|| sql_error(format!("WITH `{key}`: `{}` is not a section", parts.join("."))))?;
    if object.insert(last.to_string(), value).is_some() {
        let by_key =
            if ["key", "upsert"].contains(&key.as_str()) { " (PRIMARY KEY sets `key` and `upsert`)" } else { "" };
        return Err(sql_error(format!("WITH `{key}` is set twice{by_key}")));
    }
    Ok(())
}

/// A literal as JSON: a string, a number, a boolean, or a list of them in
/// parentheses or `[...]`.
fn literal(e: &Expr, what: &str) -> Result<Json> {
    let refused = || sql_error(format!("`{what}` = {e}: give a string, number or boolean, or a list of them"));
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(json!(s)),
            Value::Boolean(b) => Ok(json!(b)),
            Value::Number(n, _) => number(n).ok_or_else(refused),
            _ => Err(refused()),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match literal(expr, what)? {
            Json::Number(n) => number(&format!("-{n}")).ok_or_else(refused),
            _ => Err(refused()),
        },
        Expr::Identifier(i)
            if i.quote_style.is_none() && matches!(i.value.to_lowercase().as_str(), "true" | "false") =>
        {
            Ok(json!(i.value.eq_ignore_ascii_case("true")))
        }
        Expr::Tuple(items) => items.iter().map(|i| literal(i, what)).collect::<Result<Vec<_>>>().map(Json::Array),
        Expr::Nested(item) => Ok(Json::Array(vec![literal(item, what)?])),
        Expr::Array(a) => a.elem.iter().map(|i| literal(i, what)).collect::<Result<Vec<_>>>().map(Json::Array),
        _ => Err(refused()),
    }
}

fn number(n: &str) -> Option<Json> {
    if let Ok(i) = n.parse::<i64>() {
        return Some(json!(i));
    }
    let f: f64 = n.parse().ok()?;
    serde_json::Number::from_f64(f).map(Json::Number)
}

/// A string literal.
fn text(e: &Expr, what: &str) -> Result<String> {
    match literal(e, what)? {
        Json::String(s) => Ok(s),
        _ => Err(sql_error(format!("`{what}` = {e}: give a string in single quotes"))),
    }
}

// CREATE MATERIALIZED VIEW

const VIEW_SHAPE: &str = "CREATE MATERIALIZED VIEW <table>_<rollup> AS SELECT <dimensions>, \
    date_bin(INTERVAL '<n> <unit>', <time column>) AS bucket, <count(*), sum(x), min(x), max(x), approx_distinct(x)> \
    FROM <table> GROUP BY <dimensions>, bucket";

/// What one item of the view's SELECT is.
enum Item {
    Dimension(String),
    Bucket { granularity: String },
    Aggregation(Json),
}

fn create_view(v: &CreateView) -> Result<Ddl> {
    let plain = !v.or_alter
        && !v.secure
        && v.columns.is_empty()
        && v.cluster_by.is_empty()
        && v.comment.is_none()
        && !v.with_no_schema_binding
        && !v.temporary
        && !v.copy_grants
        && v.to.is_none()
        && v.params.is_none()
        && matches!(v.options, CreateTableOptions::None);
    if !plain {
        return Err(sql_error(format!(
            "CREATE MATERIALIZED VIEW takes a name and a query only (no column list, TO, options or comment): {VIEW_SHAPE}"
        )));
    }
    let view = object_name(&v.name, "view")?;
    let query = &v.query;
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(sql_error(format!("a materialized view is one SELECT: {VIEW_SHAPE}")));
    };
    let [from] = select.from.as_slice() else {
        return Err(sql_error(format!("a materialized view reads one table: {VIEW_SHAPE}")));
    };
    let TableFactor::Table { name: table_name, .. } = &from.relation else {
        return Err(sql_error(format!("a materialized view reads a table, not `{}`: {VIEW_SHAPE}", from.relation)));
    };
    let table = object_name(table_name, "table")?;
    let mut items = Vec::new();
    let mut bucket_expr = None;
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident(alias))),
            other => return Err(sql_error(format!("`{other}`: name each column of the view: {VIEW_SHAPE}"))),
        };
        let parsed = view_item(expr, alias.as_deref())?;
        if let Item::Bucket { .. } = parsed
            && bucket_expr.replace(expr).is_some()
        {
            return Err(sql_error("a rollup has one time bucket: the view's SELECT has two"));
        }
        items.push(parsed);
    }
    let Some(bucket_expr) = bucket_expr else {
        return Err(sql_error(format!("the view's SELECT has no time bucket: {VIEW_SHAPE}")));
    };
    let GroupByExpr::Expressions(groups, modifiers) = &select.group_by else {
        return Err(sql_error(format!("GROUP BY ALL is not read here; list the groups: {VIEW_SHAPE}")));
    };
    if !modifiers.is_empty() {
        return Err(sql_error("GROUP BY ROLLUP, CUBE and GROUPING SETS are not read: a rollup has one grouping"));
    }
    // The canonical text of what was read; anything else the query holds
    // (WHERE, HAVING, JOIN, ORDER BY, LIMIT, DISTINCT, ...) makes it differ.
    let projection: Vec<String> = select.projection.iter().map(ToString::to_string).collect();
    let group_text: Vec<String> = groups.iter().map(ToString::to_string).collect();
    let canonical = format!("SELECT {} FROM {table_name} GROUP BY {}", projection.join(", "), group_text.join(", "));
    if query.to_string() != canonical {
        return Err(sql_error(format!(
            "a materialized view reads every row of its table, grouped: no WHERE, HAVING, JOIN, \
             DISTINCT, ORDER BY or LIMIT (filter when you query it): {VIEW_SHAPE}"
        )));
    }
    let dimensions: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Item::Dimension(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    let mut grouped: Vec<String> = Vec::new();
    for g in groups {
        let name = match g {
            e if e == bucket_expr => BUCKET.to_string(),
            Expr::Identifier(i) => ident(i),
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                let position: usize = g.to_string().parse().unwrap_or(0);
                match position.checked_sub(1).and_then(|p| items.get(p)) {
                    Some(Item::Dimension(d)) => d.clone(),
                    Some(Item::Bucket { .. }) => BUCKET.to_string(),
                    _ => return Err(sql_error(format!("GROUP BY {g}: not the position of a dimension or the bucket"))),
                }
            }
            other => return Err(sql_error(format!("GROUP BY {other}: group by the dimensions and the bucket"))),
        };
        if name != BUCKET && !dimensions.contains(&name) {
            return Err(sql_error(format!(
                "GROUP BY {g}: `{name}` is not a column of the view's SELECT; group by exactly the dimensions and the bucket"
            )));
        }
        if !grouped.contains(&name) {
            grouped.push(name);
        }
    }
    for d in dimensions.iter().chain(std::iter::once(&BUCKET.to_string())) {
        if !grouped.contains(d) {
            return Err(sql_error(format!("`{d}` is in the view's SELECT but not in its GROUP BY")));
        }
    }
    let rollup_name = view.strip_prefix(&format!("{table}_")).filter(|r| !r.is_empty()).ok_or_else(|| {
        sql_error(format!(
            "name the view `{table}_<rollup>`: a rollup of table `{table}` is queried as `{table}_<rollup>`, \
             and `{view}` is not of that form"
        ))
    })?;
    let mut granularity = String::new();
    let mut aggregations = Vec::new();
    for item in items {
        match item {
            Item::Bucket { granularity: g } => granularity = g,
            Item::Aggregation(a) => aggregations.push(a),
            Item::Dimension(_) => {}
        }
    }
    let rollup = json!({
        "name": rollup_name,
        "granularity": granularity,
        "dimensions": dimensions,
        "aggregations": aggregations,
    });
    Ok(Ddl::CreateRollup { table, rollup, or_replace: v.or_replace, if_not_exists: v.if_not_exists })
}

/// One item of the view's SELECT.
fn view_item(expr: &Expr, alias: Option<&str>) -> Result<Item> {
    match expr {
        Expr::Identifier(i) => {
            let name = ident(i);
            match alias {
                Some(a) if a != name => Err(sql_error(format!(
                    "`{expr} AS {a}`: a rollup keeps a dimension's name; select `{name}` without renaming it"
                ))),
                _ => Ok(Item::Dimension(name)),
            }
        }
        Expr::Function(f) => function_item(f, expr, alias),
        other => Err(sql_error(format!("`{other}` is not a dimension, a time bucket or an aggregation: {VIEW_SHAPE}"))),
    }
}

fn function_item(f: &Function, expr: &Expr, alias: Option<&str>) -> Result<Item> {
    let name = f.name.to_string().to_lowercase();
    let plain = f.filter.is_none()
        && f.over.is_none()
        && f.within_group.is_empty()
        && f.null_treatment.is_none()
        && matches!(f.parameters, FunctionArguments::None);
    let args = match &f.args {
        FunctionArguments::List(list) if plain && list.clauses.is_empty() => {
            if list.duplicate_treatment.is_some() {
                return Err(sql_error(format!(
                    "`{expr}`: a rollup counts distinct values with approx_distinct(x), a HyperLogLog sketch"
                )));
            }
            &list.args
        }
        FunctionArguments::None if plain => return Err(sql_error(format!("`{expr}` is not read in a rollup"))),
        _ => return Err(sql_error(format!("`{expr}`: no FILTER, OVER or other clause in a rollup's aggregation"))),
    };
    let args: Vec<&FunctionArgExpr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(e) => Ok(e),
            other => Err(sql_error(format!("`{other}`: pass arguments by position"))),
        })
        .collect::<Result<_>>()?;
    let column = |a: &FunctionArgExpr| match a {
        FunctionArgExpr::Expr(Expr::Identifier(i)) => Ok(ident(i)),
        other => Err(sql_error(format!("`{expr}`: `{other}` must be a column of the table"))),
    };
    match (name.as_str(), args.as_slice()) {
        ("date_bin", [width, time] | [width, time, _]) => {
            if args.len() == 3 {
                return Err(sql_error(format!("`{expr}`: a rollup's buckets start at the epoch; drop the origin")));
            }
            column(time)?;
            let FunctionArgExpr::Expr(Expr::Interval(interval)) = width else {
                return Err(sql_error(format!("`{expr}`: the width is an INTERVAL, like INTERVAL '1 minute'")));
            };
            if interval.last_field.is_some() {
                return Err(sql_error(format!("`{expr}`: give the width in one unit, like INTERVAL '90 seconds'")));
            }
            let granularity = interval_text(&text(&interval.value, "INTERVAL")?, interval.leading_field.as_ref())
                .map_err(|m| sql_error(format!("`{expr}`: {m}")))?;
            bucket(alias, expr, granularity)
        }
        ("date_trunc", [unit, time]) => {
            column(time)?;
            let FunctionArgExpr::Expr(unit) = unit else {
                return Err(sql_error(format!("`{expr}`: the unit is a string, like 'minute'")));
            };
            let unit = text(unit, "date_trunc's unit")?;
            let granularity =
                interval_text(&format!("1 {unit}"), None).map_err(|m| sql_error(format!("`{expr}`: {m}")))?;
            bucket(alias, expr, granularity)
        }
        ("count", [FunctionArgExpr::Wildcard]) => aggregation(alias, "count", "count", None),
        ("count", [FunctionArgExpr::Expr(Expr::Value(v))]) if matches!(v.value, Value::Number(..)) => {
            aggregation(alias, "count", "count", None)
        }
        ("count", _) => Err(sql_error(format!(
            "`{expr}`: a rollup counts rows with count(*); it does not count a column's non-null values"
        ))),
        ("sum" | "min" | "max", [arg]) => {
            let field = column(arg)?;
            aggregation(alias, &format!("{field}_{name}"), &name, Some(field))
        }
        ("approx_distinct", [arg]) => {
            let field = column(arg)?;
            aggregation(alias, &format!("{field}_distinct"), "hll", Some(field))
        }
        ("avg" | "mean", _) => Err(sql_error(format!(
            "`{expr}`: a rollup keeps sums and counts; select sum(x) and count(*) and divide when you query it"
        ))),
        _ => Err(sql_error(format!(
            "`{expr}` is not a rollup's aggregation: use count(*), sum(x), min(x), max(x) or approx_distinct(x), \
             and date_bin or date_trunc for the time bucket"
        ))),
    }
}

fn bucket(alias: Option<&str>, expr: &Expr, granularity: String) -> Result<Item> {
    match alias {
        None | Some(BUCKET) => Ok(Item::Bucket { granularity }),
        Some(other) => Err(sql_error(format!(
            "`{expr} AS {other}`: a rollup's time column is named `{BUCKET}`; write `AS {BUCKET}`"
        ))),
    }
}

fn aggregation(alias: Option<&str>, default: &str, func: &str, field: Option<String>) -> Result<Item> {
    let mut a = json!({ "name": alias.unwrap_or(default), "fn": func });
    if let Some(field) = field {
        a["field"] = json!(field);
    }
    Ok(Item::Aggregation(a))
}

/// An interval (`'5 minutes'`, `'1' HOUR`) as a config duration (`5m`, `1h`).
fn interval_text(value: &str, leading: Option<&DateTimeField>) -> std::result::Result<String, String> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (n, unit) = value.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{value}` is not a whole number of one unit, like '5 minutes'"))?;
    let unit = match (unit.trim().to_lowercase(), leading) {
        (u, None) => u,
        (u, Some(field)) if u.is_empty() => field.to_string().to_lowercase(),
        _ => return Err(format!("`{value}`: give the unit once")),
    };
    let ms: u64 = match unit.as_str() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(format!("unknown unit `{unit}`: use milliseconds, seconds, minutes, hours or days")),
    };
    let total = n.checked_mul(ms).filter(|t| *t > 0).ok_or_else(|| format!("`{value}` is not a usable width"))?;
    Ok(match total {
        t if t % 86_400_000 == 0 => format!("{}d", t / 86_400_000),
        t if t % 3_600_000 == 0 => format!("{}h", t / 3_600_000),
        t if t % 60_000 == 0 => format!("{}m", t / 60_000),
        t if t % 1_000 == 0 => format!("{}s", t / 1_000),
        t => format!("{t}ms"),
    })
}

#[cfg(test)]
mod tests;
