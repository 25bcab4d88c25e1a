//! Bounds on what a query's expressions may allocate, for the parts DataFusion's
//! memory pool does not see.
//!
//! DataFusion counts the memory its operators reserve. A scalar function's result
//! is reserved by nobody, and some functions make results far larger than their
//! arguments (`repeat('x', 2147483647)`, `range(1, 2000000000)`, `lpad`,
//! `array_repeat`), also while planning, when constant expressions are folded.
//! An allocation that fails aborts the process, so the size must be known before
//! the call, not after. Here:
//!
//! - [`BoundFunctions`], an analyzer rule, wraps every scalar function call of a
//!   plan (subqueries and lambda bodies included) in [`Bounded`]. Before each
//!   call, a bound on the size of its result is computed from its arguments: the
//!   function's own bound for those that can grow ([`output_bound`]), else the size
//!   of its arguments (a scalar argument counted once per row it is applied to).
//!   The call runs only if that fits in what the query may still hold
//!   ([`QueryPool::check`]); its actual result is checked the same way after.
//!   Functions whose cost is quadratic in their arguments (`levenshtein`) have a
//!   bound on their steps instead.
//! - The same rule refuses types whose single value is huge or deep
//!   (`FixedSizeBinary(2147483647)`, a list nested 100 levels) wherever a plan
//!   names them: a cast's target, a literal, a node's output.
//! - [`check_plan`] runs on the optimized plan and refuses a literal (a constant
//!   folded while planning included) larger than [`MAX_LITERAL_BYTES`]: a
//!   constant is copied into every row of a batch wherever it is projected.
//!
//! Every refusal is an error that names the function or the type and the limit.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ExprSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};
use datafusion::optimizer::AnalyzerRule;

use crate::limits::{QueryPool, human_bytes};

/// Largest literal in an optimized plan: a constant is copied into each of a
/// batch's rows (8,192) wherever it is projected, so 64 KiB can become 512 MiB.
pub const MAX_LITERAL_BYTES: usize = 64 << 10;
/// Largest `n` of `FixedSizeBinary(n)` and `FixedSizeList(_, n)`.
pub const MAX_FIXED_SIZE: i64 = 1 << 16;
/// Deepest type (lists of lists of structs ...).
pub const MAX_TYPE_DEPTH: usize = 32;
/// Most steps one call of a quadratic function (`levenshtein`) may take, about
/// a second of CPU.
pub const MAX_STEPS: u128 = 1 << 30;

/// Functions that only rearrange what they are given (no copy, no growth), left
/// unwrapped so that DataFusion's own rewrites of them still apply.
const STRUCTURAL: [&str; 3] = ["get_field", "named_struct", "struct"];

/// An error that a limit of Weir's refused something, not memory: classified
/// as `Error::Limit` (see `error.rs`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

fn limit_err(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(LimitExceeded(message)))
}

/// The analyzer rule that wraps every scalar function of a plan in [`Bounded`]
/// and refuses unbounded types. It runs last among the analyzer rules, before
/// the optimizer folds constants.
#[derive(Debug)]
pub struct BoundFunctions {
    pool: QueryPool,
}

impl BoundFunctions {
    pub fn new(pool: QueryPool) -> BoundFunctions {
        BoundFunctions { pool }
    }
}

impl AnalyzerRule for BoundFunctions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let plan = plan
            .transform_up_with_subqueries(|node| {
                for field in node.schema().fields() {
                    check_type(field.data_type(), &format!("column `{}`", field.name()))?;
                }
                node.map_expressions(|e| bound_expr(e, &self.pool))
            })?
            .data;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "weir_bound_functions"
    }
}

/// Wraps the scalar functions of `expr` and checks the types it names.
pub(crate) fn bound_expr(expr: Expr, pool: &QueryPool) -> DfResult<Transformed<Expr>> {
    expr.transform_up(|e| match e {
        Expr::ScalarFunction(ScalarFunction { func, args }) if needs_bound(&func) => {
            let func = Arc::new(ScalarUDF::new_from_impl(Bounded::new(func.as_ref().clone(), pool.clone())));
            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction { func, args })))
        }
        Expr::Cast(ref c) => {
            check_type(&c.field.data_type().clone(), "a CAST")?;
            Ok(Transformed::no(e))
        }
        Expr::TryCast(ref c) => {
            check_type(&c.field.data_type().clone(), "a TRY_CAST")?;
            Ok(Transformed::no(e))
        }
        Expr::Literal(ref v, _) => {
            check_type(&v.data_type(), "a literal")?;
            Ok(Transformed::no(e))
        }
        other => Ok(Transformed::no(other)),
    })
}

fn needs_bound(func: &ScalarUDF) -> bool {
    !func.inner().is::<Bounded>() && !STRUCTURAL.contains(&func.name())
}

/// Refuses a type one value of which could be huge or too deep to handle.
fn check_type(ty: &DataType, what: &str) -> DfResult<()> {
    fn walk(ty: &DataType, depth: usize, what: &str) -> DfResult<()> {
        if depth > MAX_TYPE_DEPTH {
            return Err(limit_err(format!("{what} has a type nested more than {MAX_TYPE_DEPTH} levels deep")));
        }
        match ty {
            DataType::FixedSizeBinary(n) if i64::from(*n) > MAX_FIXED_SIZE => Err(limit_err(format!(
                "{what} has type FixedSizeBinary({n}); Weir allows at most FixedSizeBinary({MAX_FIXED_SIZE})"
            ))),
            DataType::FixedSizeList(_, n) if i64::from(*n) > MAX_FIXED_SIZE => Err(limit_err(format!(
                "{what} has a FixedSizeList of {n} values; Weir allows at most {MAX_FIXED_SIZE}"
            ))),
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => walk(f.data_type(), depth + 1, what),
            DataType::Struct(fields) => fields.iter().try_for_each(|f| walk(f.data_type(), depth + 1, what)),
            DataType::Union(fields, _) => fields.iter().try_for_each(|(_, f)| walk(f.data_type(), depth + 1, what)),
            DataType::Dictionary(k, v) => {
                walk(k, depth + 1, what)?;
                walk(v, depth + 1, what)
            }
            DataType::RunEndEncoded(r, v) => {
                walk(r.data_type(), depth + 1, what)?;
                walk(v.data_type(), depth + 1, what)
            }
            _ => Ok(()),
        }
    }
    walk(ty, 0, what)
}

/// Refuses an optimized plan holding a literal larger than [`MAX_LITERAL_BYTES`].
pub fn check_plan(plan: &LogicalPlan) -> DfResult<()> {
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Literal(v, _) = e {
                    let size = scalar_bytes(v);
                    if size > MAX_LITERAL_BYTES {
                        return Err(limit_err(format!(
                            "a constant of {} ({}) is larger than the {} a query may hold in one constant, since a constant is copied into every row it meets: compute it from a table, or send it shorter",
                            human_bytes(size),
                            v.data_type(),
                            human_bytes(MAX_LITERAL_BYTES)
                        )));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map(|_| ())
}

/// A scalar function with bounds: every call is checked against the query's
/// memory before it runs and after; everything else is the wrapped function's.
#[derive(Debug, Clone)]
pub struct Bounded {
    inner: ScalarUDF,
    pool: QueryPool,
}

impl Bounded {
    fn new(inner: ScalarUDF, pool: QueryPool) -> Bounded {
        Bounded { inner, pool }
    }

    fn imp(&self) -> &dyn ScalarUDFImpl {
        self.inner.inner().as_ref()
    }

    /// Wraps the functions of a rewritten expression (a simplification may
    /// introduce calls of its own).
    fn rewrap(&self, expr: Expr) -> DfResult<Expr> {
        Ok(bound_expr(expr, &self.pool)?.data)
    }

    fn what(&self) -> String {
        format!("the result of {}()", self.inner.name())
    }
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.imp().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded::new(updated, self.pool.clone())))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = self.inner.name();
        let rows = args.number_rows;
        if let Some(steps) = steps_bound(name, &args.args, rows)
            && steps > MAX_STEPS
        {
            return Err(limit_err(format!(
                "{name}() over these values would take about {steps} steps, more than the {MAX_STEPS} Weir allows one call: use shorter values"
            )));
        }
        let bound = output_bound(name, &args.args, rows).unwrap_or_else(|| input_bytes(&args.args, rows));
        self.pool.check(&self.what(), bound)?;
        let out = self.inner.invoke_with_args(args)?;
        let actual = match &out {
            ColumnarValue::Array(a) => array_bytes(a),
            ColumnarValue::Scalar(s) => scalar_bytes(s),
        };
        self.pool.check(&self.what(), actual as u128)?;
        Ok(out)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        // A simplification may compute a constant from constant arguments (concat
        // of literals): their size is what it makes, at most a few times over.
        let literal_bytes: usize = args
            .iter()
            .map(|a| match a {
                Expr::Literal(v, _) => scalar_bytes(v),
                _ => 0,
            })
            .sum();
        self.pool.check(&self.what(), literal_bytes as u128 * 2)?;
        match self.imp().simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => Ok(ExprSimplifyResult::Simplified(self.rewrap(expr)?)),
            original => Ok(original),
        }
    }

    fn preimage(&self, args: &[Expr], lit_expr: &Expr, info: &SimplifyContext) -> DfResult<PreimageResult> {
        self.imp().preimage(args, lit_expr, info)
    }

    fn short_circuits(&self) -> bool {
        self.imp().short_circuits()
    }

    fn conditional_arguments<'a>(&self, args: &'a [Expr]) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.imp().conditional_arguments(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.imp().evaluate_bounds(input)
    }

    fn propagate_constraints(&self, interval: &Interval, inputs: &[&Interval]) -> DfResult<Option<Vec<Interval>>> {
        self.imp().propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.imp().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.imp().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.imp().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }

    fn struct_field_mapping(&self, literal_args: &[Option<ScalarValue>]) -> Option<StructFieldMapping> {
        self.imp().struct_field_mapping(literal_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.imp().placement(args)
    }
}

/// Bytes of an array's slice (not of the whole buffers a slice may share).
fn array_bytes(a: &ArrayRef) -> usize {
    a.to_data().get_slice_memory_size().unwrap_or_else(|_| a.get_array_memory_size())
}

/// Bytes of a scalar, at least the width of its type (a null of a fixed-size
/// type still takes that width once copied into an array).
fn scalar_bytes(v: &ScalarValue) -> usize {
    let width = match v.data_type() {
        DataType::FixedSizeBinary(n) => n.max(0) as usize,
        DataType::FixedSizeList(f, n) => n.max(0) as usize * f.data_type().primitive_width().unwrap_or(1),
        other => other.primitive_width().unwrap_or(0),
    };
    v.size().max(width)
}

/// The arguments' bytes, a scalar counted once per row it is applied to when
/// another argument is an array.
fn input_bytes(args: &[ColumnarValue], rows: usize) -> u128 {
    let any_array = args.iter().any(|a| matches!(a, ColumnarValue::Array(_)));
    let copies = if any_array { rows.max(1) as u128 } else { 1 };
    args.iter()
        .map(|a| match a {
            ColumnarValue::Array(a) => array_bytes(a) as u128,
            ColumnarValue::Scalar(s) => scalar_bytes(s) as u128 * copies,
        })
        .sum()
}

/// One argument, read row by row whether it is a scalar or an array.
struct Arg<'a>(&'a ColumnarValue);

impl Arg<'_> {
    /// Bytes of the string or binary value at row `i` (0 for NULL or other types).
    fn len(&self, i: usize) -> u128 {
        match self.0 {
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(Some(v)) | ScalarValue::LargeUtf8(Some(v)) | ScalarValue::Utf8View(Some(v)) => {
                    v.len() as u128
                }
                ScalarValue::Binary(Some(v))
                | ScalarValue::LargeBinary(Some(v))
                | ScalarValue::BinaryView(Some(v))
                | ScalarValue::FixedSizeBinary(_, Some(v)) => v.len() as u128,
                other => scalar_bytes(other) as u128,
            },
            ColumnarValue::Array(a) => {
                if i >= a.len() || a.is_null(i) {
                    return 0;
                }
                (match a.data_type() {
                    DataType::Utf8 => a.as_string::<i32>().value(i).len(),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i).len(),
                    DataType::Utf8View => a.as_string_view().value(i).len(),
                    DataType::Binary => a.as_binary::<i32>().value(i).len(),
                    DataType::LargeBinary => a.as_binary::<i64>().value(i).len(),
                    DataType::BinaryView => a.as_binary_view().value(i).len(),
                    DataType::FixedSizeBinary(n) => *n as usize,
                    _ => array_bytes(a) / a.len().max(1),
                }) as u128
            }
        }
    }

    /// Bytes of one value at row `i` of any type (an element to be repeated).
    fn value_bytes(&self, i: usize) -> u128 {
        match self.0 {
            ColumnarValue::Scalar(s) => scalar_bytes(s) as u128,
            ColumnarValue::Array(a) => match a.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView => self.len(i),
                _ => (array_bytes(a) / a.len().max(1)) as u128,
            },
        }
    }

    /// The integer at row `i` (0 for NULL or other types).
    fn int(&self, i: usize) -> i128 {
        let scalar = match self.0 {
            ColumnarValue::Scalar(s) => s.clone(),
            ColumnarValue::Array(a) => {
                if i >= a.len() {
                    return 0;
                }
                match ScalarValue::try_from_array(a, i) {
                    Ok(s) => s,
                    Err(_) => return 0,
                }
            }
        };
        scalar_int(&scalar).unwrap_or(0)
    }

    /// Nanoseconds since the epoch of a date or timestamp at row `i`.
    fn instant_ns(&self, i: usize) -> Option<i128> {
        let scalar = match self.0 {
            ColumnarValue::Scalar(s) => s.clone(),
            ColumnarValue::Array(a) if i < a.len() => ScalarValue::try_from_array(a, i).ok()?,
            ColumnarValue::Array(_) => return None,
        };
        let ns = |v: i64, per: i128| i128::from(v) * per;
        Some(match scalar {
            ScalarValue::Date32(Some(d)) => i128::from(d) * 86_400_000_000_000,
            ScalarValue::Date64(Some(ms)) => ns(ms, 1_000_000),
            ScalarValue::TimestampSecond(Some(v), _) => ns(v, 1_000_000_000),
            ScalarValue::TimestampMillisecond(Some(v), _) => ns(v, 1_000_000),
            ScalarValue::TimestampMicrosecond(Some(v), _) => ns(v, 1_000),
            ScalarValue::TimestampNanosecond(Some(v), _) => i128::from(v),
            _ => return None,
        })
    }

    /// The shortest span an interval at row `i` can have, in nanoseconds (a
    /// month counts 28 days).
    fn interval_ns(&self, i: usize) -> Option<i128> {
        let scalar = match self.0 {
            ColumnarValue::Scalar(s) => s.clone(),
            ColumnarValue::Array(a) if i < a.len() => ScalarValue::try_from_array(a, i).ok()?,
            ColumnarValue::Array(_) => return None,
        };
        const DAY: i128 = 86_400_000_000_000;
        Some(match scalar {
            ScalarValue::IntervalYearMonth(Some(m)) => i128::from(m) * 28 * DAY,
            ScalarValue::IntervalDayTime(Some(v)) => i128::from(v.days) * DAY + i128::from(v.milliseconds) * 1_000_000,
            ScalarValue::IntervalMonthDayNano(Some(v)) => {
                i128::from(v.months) * 28 * DAY + i128::from(v.days) * DAY + i128::from(v.nanoseconds)
            }
            ScalarValue::DurationSecond(Some(v)) => i128::from(v) * 1_000_000_000,
            ScalarValue::DurationMillisecond(Some(v)) => i128::from(v) * 1_000_000,
            ScalarValue::DurationMicrosecond(Some(v)) => i128::from(v) * 1_000,
            ScalarValue::DurationNanosecond(Some(v)) => i128::from(v),
            _ => return None,
        })
    }

    /// Values in the list at row `i` (0 for NULL or a non-list).
    fn list_len(&self, i: usize) -> u128 {
        let array = match self.0 {
            ColumnarValue::Scalar(s) => match s.to_array() {
                Ok(a) => a,
                Err(_) => return 0,
            },
            ColumnarValue::Array(a) => Arc::clone(a),
        };
        let i = if matches!(self.0, ColumnarValue::Scalar(_)) { 0 } else { i };
        if i >= array.len() || array.is_null(i) {
            return 0;
        }
        (match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value_length(i) as usize,
            DataType::LargeList(_) => array.as_list::<i64>().value_length(i) as usize,
            DataType::FixedSizeList(_, n) => *n as usize,
            _ => 0,
        }) as u128
    }

    /// Bytes of one element of the list at row `i`.
    fn element_bytes(&self) -> u128 {
        let ty = match self.0 {
            ColumnarValue::Scalar(s) => s.data_type(),
            ColumnarValue::Array(a) => a.data_type().clone(),
        };
        match ty {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type().primitive_width().unwrap_or(16) as u128
            }
            _ => 16,
        }
    }
}

fn scalar_int(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => i128::from(*x),
        ScalarValue::Int16(Some(x)) => i128::from(*x),
        ScalarValue::Int32(Some(x)) => i128::from(*x),
        ScalarValue::Int64(Some(x)) => i128::from(*x),
        ScalarValue::UInt8(Some(x)) => i128::from(*x),
        ScalarValue::UInt16(Some(x)) => i128::from(*x),
        ScalarValue::UInt32(Some(x)) => i128::from(*x),
        ScalarValue::UInt64(Some(x)) => i128::from(*x),
        _ => return None,
    })
}

/// Sums `f(row)` over the rows a call computes: one when every argument is a
/// scalar (the result is one scalar), else each of `rows`.
fn per_row(args: &[ColumnarValue], rows: usize, f: impl Fn(usize) -> u128) -> u128 {
    let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let n = if all_scalar { 1 } else { rows };
    (0..n).fold(0u128, |sum, i| sum.saturating_add(f(i)))
}

/// An upper bound on the bytes of a function's result, for the functions whose
/// result can be much larger than their arguments; `None` for the others.
pub fn output_bound(name: &str, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let a = |i: usize| Arg(args.get(i).unwrap_or(&ColumnarValue::Scalar(ScalarValue::Null)));
    let positive = |v: i128| v.max(0) as u128;
    let with_offsets = |bytes: u128| bytes.saturating_add(rows as u128 * 16);
    let bound =
        match name {
            "repeat" => per_row(args, rows, |i| a(0).len(i).saturating_mul(positive(a(1).int(i)))),
            // At most n characters of at most 4 bytes.
            "lpad" | "rpad" => per_row(args, rows, |i| positive(a(1).int(i)).saturating_mul(4)),
            "replace" => per_row(args, rows, |i| {
                let (s, from, to) = (a(0).len(i), a(1).len(i).max(1), a(2).len(i));
                s.saturating_add((s / from + 1).saturating_mul(to))
            }),
            // Each match (at most one per byte, and one at the end) becomes the
            // replacement, whose group references together take at most the input.
            "regexp_replace" => per_row(args, rows, |i| {
                let (s, repl) = (a(0).len(i), a(2).len(i));
                s.saturating_add((s + 1).saturating_mul(repl).saturating_mul(2))
            }),
            "translate" | "upper" | "lower" | "initcap" => per_row(args, rows, |i| a(0).len(i).saturating_mul(4)),
            "concat_ws" => input_bytes(args, rows)
                .saturating_add(per_row(args, rows, |i| a(0).len(i).saturating_mul(args.len() as u128))),
            "to_char" | "date_format" => per_row(args, rows, |i| a(1).len(i).saturating_mul(16).saturating_add(64)),
            "array_repeat" => {
                per_row(args, rows, |i| positive(a(1).int(i)).saturating_mul(a(0).value_bytes(i).saturating_add(1)))
            }
            "array_resize" => per_row(args, rows, |i| {
                let element = if args.len() > 2 { a(2).value_bytes(i) } else { a(0).element_bytes() };
                positive(a(1).int(i)).saturating_mul(element.saturating_add(1))
            }),
            "array_replace" | "array_replace_n" | "array_replace_all" => input_bytes(args, rows)
                .saturating_add(per_row(args, rows, |i| a(0).list_len(i).saturating_mul(a(2).value_bytes(i)))),
            "array_to_string" | "array_join" | "list_to_string" | "list_join" => input_bytes(args, rows)
                .saturating_add(per_row(args, rows, |i| {
                    a(0).list_len(i).saturating_mul(a(1).len(i) + if args.len() > 2 { a(2).len(i) } else { 0 })
                })),
            "string_to_array" | "string_to_list" | "regexp_split_to_array" => {
                with_offsets(input_bytes(args, rows).saturating_mul(9))
            }
            "range" | "generate_series" | "gen_series" => {
                per_row(args, rows, |i| range_len(args, i).saturating_mul(16)).saturating_add(rows as u128 * 8)
            }
            "encode" | "to_hex" | "uuid" => with_offsets(input_bytes(args, rows).saturating_mul(2)),
            _ => return None,
        };
    Some(bound)
}

/// The number of values `range`/`generate_series` would make at row `i`.
fn range_len(args: &[ColumnarValue], i: usize) -> u128 {
    let a = |k: usize| Arg(&args[k]);
    let first_is_time = match &args.first() {
        Some(ColumnarValue::Scalar(s)) => s.data_type().is_temporal(),
        Some(ColumnarValue::Array(x)) => x.data_type().is_temporal(),
        None => false,
    };
    if first_is_time && args.len() >= 2 {
        let (Some(start), Some(stop)) = (a(0).instant_ns(i), a(1).instant_ns(i)) else { return 0 };
        let step = if args.len() > 2 { a(2).interval_ns(i).unwrap_or(0) } else { 86_400_000_000_000 };
        if step == 0 {
            return 0;
        }
        return ((stop - start) / step).max(0) as u128 + 1;
    }
    let (start, stop, step) = match args.len() {
        1 => (0, a(0).int(i), 1),
        2 => (a(0).int(i), a(1).int(i), 1),
        _ => (a(0).int(i), a(1).int(i), a(2).int(i)),
    };
    if step == 0 {
        return 0;
    }
    ((stop - start) / step).max(0) as u128 + 1
}

/// Steps of a function whose cost is quadratic in its arguments; `None` for the
/// others.
pub fn steps_bound(name: &str, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    match name {
        "levenshtein" if args.len() >= 2 => {
            Some(per_row(args, rows, |i| Arg(&args[0]).len(i).saturating_mul(Arg(&args[1]).len(i))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
