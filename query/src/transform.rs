//! The expressions of ingest transforms: a table's derived fields and its
//! filter, SQL compiled once by DataFusion into physical expressions that
//! ingest evaluates per batch of records (`weir_ingest::transform`).
//!
//! An expression may use any built-in scalar function whose result depends on
//! its arguments alone: a replay of the log must compute the same values, so
//! `now()`, `random()` and `uuid()` are refused, as are aggregates, window
//! functions, subqueries and parameters. Every function call is wrapped in
//! [`crate::bounded::Bounded`], as in queries: a record whose values would make
//! a result larger than [`MAX_TRANSFORM_BYTES`] (`repeat(name, n)` with a huge
//! `n` from the record) fails that record, it does not abort the process.

use std::sync::Arc;

use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Cast, Expr, ExprSchemable, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use weir_storage::config::QueryConfig;

use crate::bounded::bound_expr;
use crate::limits::Budget;

/// What the function calls of one evaluation of a transform (one batch of
/// records) may make.
pub const MAX_TRANSFORM_BYTES: usize = 64 << 20;

/// Compiles `sql` over the columns of `schema`. With `target`, the result is
/// cast to it (refused when no cast exists); without, it must be boolean (a
/// filter). The error says what is wrong, for the field path the caller names.
pub fn compile(sql: &str, schema: &Schema, target: Option<&DataType>) -> Result<Arc<dyn PhysicalExpr>, String> {
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(schema.clone()).map_err(message)?;
    let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(message)?;
    refuse_non_scalar(&expr)?;
    let ty = expr.get_type(&df_schema).map_err(message)?;
    let expr = match target {
        Some(target) if &ty == target => expr,
        Some(target) if can_cast_types(&ty, target) => Expr::Cast(Cast::new(Box::new(expr), target.clone())),
        Some(target) => {
            return Err(format!("the expression is {ty}, which cannot be cast to the field's type {target}"));
        }
        None if matches!(ty, DataType::Boolean | DataType::Null) => expr,
        None => return Err(format!("a filter must be true or false, but the expression is {ty}")),
    };
    let budget = Budget::new(QueryConfig {
        memory_limit_bytes: MAX_TRANSFORM_BYTES,
        total_memory_bytes: MAX_TRANSFORM_BYTES,
        ..QueryConfig::default()
    });
    // DataFusion leaves some functions to its simplifier (`coalesce` becomes a
    // CASE), so the expression is coerced and simplified as a query's would be.
    let df_schema = Arc::new(df_schema);
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_schema(Arc::clone(&df_schema)).build());
    let expr = simplifier.coerce(expr, &df_schema).and_then(|e| simplifier.simplify(e)).map_err(message)?;
    let expr = bound_expr(expr, &budget.pool()).map_err(message)?.data;
    ctx.create_physical_expr(expr, &df_schema).map_err(message)
}

/// Refuses what is not a deterministic scalar expression.
fn refuse_non_scalar(expr: &Expr) -> Result<(), String> {
    let mut refused = None;
    let _ = expr.apply(|e| {
        let why = match e {
            Expr::AggregateFunction(f) => {
                Some(format!("`{}` is an aggregate; a transform computes one value per record", f.func.name()))
            }
            Expr::WindowFunction(_) => {
                Some("a window function needs other records; a transform sees one record at a time".to_string())
            }
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_) => {
                Some("a transform cannot hold a subquery".to_string())
            }
            Expr::Placeholder(_) => Some("a transform cannot hold a parameter".to_string()),
            Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => Some(format!(
                "`{}()` does not depend on the record alone, so a replay would compute another value",
                f.func.name()
            )),
            _ => None,
        };
        match why {
            Some(why) => {
                refused = Some(why);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    refused.map_or(Ok(()), Err)
}

fn message(e: datafusion::error::DataFusionError) -> String {
    crate::Error::from(e).to_string()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Int64Type};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![Field::new("name", DataType::Utf8, true), Field::new("n", DataType::Int64, true)])
    }

    fn batch() -> RecordBatch {
        let name: ArrayRef = Arc::new(StringArray::from(vec![Some("ab"), None]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(3), Some(4)]));
        RecordBatch::try_new(Arc::new(schema()), vec![name, n]).unwrap()
    }

    #[test]
    fn derived_values_are_cast_to_the_field_type() {
        let e = compile("length(name) * n", &schema(), Some(&DataType::Float64)).unwrap();
        let out = e.evaluate(&batch()).unwrap().into_array(2).unwrap();
        assert_eq!(out.data_type(), &DataType::Float64);
        assert_eq!(out.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(0), 6.0);
        assert!(out.is_null(1));
        let e = compile("n + 1", &schema(), Some(&DataType::Int64)).unwrap();
        let out = e.evaluate(&batch()).unwrap().into_array(2).unwrap();
        assert_eq!(out.as_primitive::<Int64Type>().values().to_vec(), vec![4, 5]);
    }

    #[test]
    fn refusals_say_why() {
        let err = |sql: &str, target: Option<&DataType>| compile(sql, &schema(), target).unwrap_err();
        assert!(err("now()", Some(&DataType::Int64)).contains("`now()` does not depend on the record"));
        assert!(err("random() > 0.5", None).contains("`random()`"));
        assert!(err("count(*)", Some(&DataType::Int64)).contains("aggregate"));
        assert!(err("n + 1", None).contains("a filter must be true or false"));
        assert!(
            err("nope + 1", Some(&DataType::Int64)).contains("nope"),
            "{}",
            err("nope + 1", Some(&DataType::Int64))
        );
        assert!(err("n +", Some(&DataType::Int64)).len() > 5);
        assert!(err("(SELECT 1)", Some(&DataType::Int64)).contains("subquery"));
        assert!(err("make_array(n)", Some(&DataType::Int64)).contains("cannot be cast"));
    }

    #[test]
    fn a_huge_result_fails_the_batch_not_the_process() {
        let e = compile("repeat(name, n)", &schema(), Some(&DataType::Utf8)).unwrap();
        let name: ArrayRef = Arc::new(StringArray::from(vec![Some("ab")]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(2_000_000_000)]));
        let b = RecordBatch::try_new(Arc::new(schema()), vec![name, n]).unwrap();
        let err = e.evaluate(&b).unwrap_err().to_string();
        assert!(err.contains("repeat"), "{err}");
        assert!(compile("n > 2", &schema(), None).unwrap().evaluate(&batch()).is_ok());
    }
}
