//! The read-only guard: which SQL statements the query endpoint accepts.
//!
//! A request holds exactly one statement, parsed with DataFusion's parser (generic
//! dialect). Allowed: queries (`SELECT`, `WITH`, `VALUES`, set operations), `EXPLAIN`
//! of a query (with `ANALYZE`/`VERBOSE`), `SHOW TABLES`, `SHOW COLUMNS` and
//! `DESCRIBE`. Everything else is refused with [`Error::Refused`] naming the
//! statement: DDL (`CREATE`, `DROP`, `ALTER`, ...), DML (`INSERT`, `UPDATE`,
//! `DELETE`, `MERGE`, `SELECT INTO`), `COPY`, `SET`/`RESET`, transactions, and any
//! table reference that looks like a file path or URL (`SELECT * FROM '/etc/passwd'`).
//!
//! This is the first of three defences. The second is [`sql_options`], checked
//! against the logical plan (no DDL, DML or session statements). The third is the
//! session itself: URL tables are never enabled and the catalog is read-only, so a
//! statement that slipped through could still not read a file or change a table.

use std::ops::ControlFlow;

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{DescribeAlias, ObjectName, Select, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::{Error, Result};

/// The statements the endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `SELECT`, `WITH`, `VALUES`, `UNION`/`INTERSECT`/`EXCEPT`, `TABLE t`.
    Query,
    /// `EXPLAIN [ANALYZE] [VERBOSE] <query>`.
    Explain,
    /// `SHOW TABLES`.
    ShowTables,
    /// `SHOW COLUMNS FROM <table>`.
    ShowColumns,
    /// `DESCRIBE <table>` or `DESCRIBE <query>`.
    Describe,
}

/// A statement the guard allowed, ready to plan.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind: StatementKind,
    pub statement: DfStatement,
}

const ALLOWED: &str = "the SQL endpoint is read-only: it accepts one query \
    (SELECT, WITH, VALUES), EXPLAIN <query>, SHOW TABLES, SHOW COLUMNS or DESCRIBE";

/// The most operators one statement may hold (see [`check_operators`]).
pub const MAX_OPERATORS: usize = 4096;

/// Parses `sql` and allows it only if it is one read-only statement.
pub fn check(sql: &str) -> Result<Checked> {
    let dialect = GenericDialect {};
    check_operators(sql, &dialect)?;
    let mut statements = DFParserBuilder::new(sql).with_dialect(&dialect).build()?.parse_statements()?;
    if statements.len() > 1 {
        return Err(Error::Refused {
            reason: format!("found {} statements: send one statement per request", statements.len()),
        });
    }
    let Some(statement) = statements.pop_front() else {
        return Err(Error::Sql { message: "the request holds no SQL statement".into() });
    };
    check_statement(statement)
}

/// Allows a parsed statement only if it is read-only (the Postgres dialect's
/// statements come here one by one, see [`crate::postgres`]).
pub fn check_statement(statement: DfStatement) -> Result<Checked> {
    let kind = classify(&statement)?;
    Ok(Checked { kind, statement })
}

/// [`check_operators`] for text another parser will read.
pub(crate) fn check_operators_in(sql: &str) -> Result<()> {
    check_operators(sql, &GenericDialect {})
}

/// Refuses a statement with more than [`MAX_OPERATORS`] operators, counted on
/// its tokens before it is parsed.
///
/// The parser bounds how deep brackets and right-nested expressions go
/// (`sql_parser.recursion_limit`), but a chain such as `1+1+1+...` or
/// `a = 1 OR a = 2 OR ...` parses in a loop into a tree as deep as the chain is
/// long, and DataFusion clones, plans and drops expression trees recursively: a
/// long enough chain would overflow the stack, which aborts the process. The
/// number of operators bounds the depth of every such chain; the query runtime's
/// threads have the stack that depth needs.
fn check_operators(sql: &str, dialect: &GenericDialect) -> Result<()> {
    let tokens = Tokenizer::new(dialect, sql).tokenize().map_err(|e| Error::Sql { message: e.to_string() })?;
    let operators = tokens.iter().filter(|t| is_operator(t)).count();
    if operators > MAX_OPERATORS {
        return Err(Error::Limit {
            message: format!(
                "the statement holds {operators} operators; a statement may hold at most {MAX_OPERATORS}: \
                 replace long chains of OR or + with IN (...) lists or a table"
            ),
        });
    }
    Ok(())
}

/// Whether a token joins expressions into a deeper one: every symbol but
/// brackets and separators, and the keywords that do.
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::AT
                | Keyword::COLLATE
                | Keyword::OVERLAPS
        ),
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Period
        | Token::Number(..)
        | Token::Char(_)
        | Token::Placeholder(_) => false,
        other => !is_literal(other),
    }
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// The options the logical plan is verified against: the guard's second line.
///
/// `SHOW TABLES` and `SHOW COLUMNS` plan as queries over `information_schema` and
/// `DESCRIBE` as a `DescribeTable` node, none of them a `Statement` node, so they pass
/// with `allow_statements` off; `SET`, transactions and `PREPARE` do not.
pub fn sql_options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

fn classify(statement: &DfStatement) -> Result<StatementKind> {
    match statement {
        DfStatement::Statement(s) => classify_sql(s),
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
                check_query(s)?;
                Ok(StatementKind::Explain)
            }
            DfStatement::Statement(s) => Err(refused(&format!("EXPLAIN {}", kind_name(s)))),
            other => Err(refused(&format!("EXPLAIN {}", df_kind_name(other)))),
        },
        other => Err(refused(&df_kind_name(other))),
    }
}

fn classify_sql(statement: &Statement) -> Result<StatementKind> {
    let kind = match statement {
        Statement::Query(_) => StatementKind::Query,
        Statement::ShowTables { .. } => StatementKind::ShowTables,
        Statement::ShowColumns { .. } => StatementKind::ShowColumns,
        Statement::ExplainTable { describe_alias: DescribeAlias::Describe | DescribeAlias::Desc, .. } => {
            StatementKind::Describe
        }
        Statement::Explain { describe_alias, statement: inner, .. } if matches!(**inner, Statement::Query(_)) => {
            match describe_alias {
                DescribeAlias::Explain => StatementKind::Explain,
                DescribeAlias::Describe | DescribeAlias::Desc => StatementKind::Describe,
            }
        }
        other => return Err(refused(&kind_name(other))),
    };
    check_query(statement)?;
    Ok(kind)
}

/// Walks every nested statement, `SELECT` and relation of an allowed statement.
fn check_query(statement: &Statement) -> Result<()> {
    match statement.visit(&mut ReadOnly) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(err) => Err(err),
    }
}

struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = Error;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Error> {
        match statement {
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ExplainTable { .. }
            | Statement::Explain { .. } => ControlFlow::Continue(()),
            // e.g. `WITH x AS (...) INSERT INTO ...` or a data-modifying CTE.
            other => ControlFlow::Break(refused(&kind_name(other))),
        }
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Error> {
        match &select.into {
            Some(_) => ControlFlow::Break(refused("SELECT INTO")),
            None => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Error> {
        let looks_like_path = relation
            .0
            .iter()
            .filter_map(|part| part.as_ident())
            .any(|ident| ident.quote_style == Some('\'') || ident.value.contains(['/', '\\', ':', '.', '~']));
        if looks_like_path {
            return ControlFlow::Break(Error::Refused {
                reason: format!(
                    "`{relation}` looks like a file path or URL: queries read only Weir's \
                     tables (see SHOW TABLES)"
                ),
            });
        }
        ControlFlow::Continue(())
    }
}

fn refused(kind: &str) -> Error {
    let ddl = ["CREATE TABLE", "CREATE MATERIALIZED VIEW", "DROP TABLE", "DROP MATERIALIZED VIEW"];
    let hint = match ddl.contains(&kind) {
        true => " (Weir's DDL is taken by POST /v1/sql on an ingest process, from a token with the admin scope)",
        false => "",
    };
    Error::Refused { reason: format!("{kind} is not allowed: {ALLOWED}{hint}") }
}

fn df_kind_name(statement: &DfStatement) -> String {
    match statement {
        DfStatement::Statement(s) => kind_name(s),
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DfStatement::CopyTo(_) => "COPY".into(),
        DfStatement::Explain(_) => "EXPLAIN".into(),
        DfStatement::Reset(_) => "RESET".into(),
    }
}

/// A short name for a statement, such as `DROP TABLE` or `INSERT`.
fn kind_name(statement: &Statement) -> String {
    let name = match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(v) if v.materialized => "CREATE MATERIALIZED VIEW",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::Set(_) => "SET",
        Statement::Truncate(_) => "TRUNCATE",
        Statement::Drop { object_type, .. } => return format!("DROP {object_type}"),
        // Otherwise the leading keywords of the statement as SQL, e.g.
        // `CREATE FUNCTION`, `START TRANSACTION`, `PREPARE`.
        other => {
            let text = other.to_string();
            let words: Vec<&str> = text
                .split_whitespace()
                .take(2)
                .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .collect();
            return if words.is_empty() { "this statement".into() } else { words.join(" ") };
        }
    };
    name.to_string()
}

#[cfg(test)]
mod tests;
