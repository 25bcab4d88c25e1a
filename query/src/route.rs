//! Rollup routing: an aggregate over a table's raw rows answered from one of the
//! table's rollups, when that gives the same answer.
//!
//! [`RollupRouting`] is an optimizer rule. It rewrites
//! `Aggregate <- [Filter] <- [SubqueryAlias] <- TableScan(raw table)` into
//! `Projection <- Aggregate <- Filter <- TableScan(rollup)` when every part of
//! the query maps onto the rollup exactly:
//!
//! - each group expression uses only the rollup's dimensions, and the time column
//!   only inside `date_bin(stride, ts[, origin])` with a stride and origin that are
//!   multiples of the rollup's granularity, or `date_trunc(unit, ts)` with a unit
//!   the granularity divides (a bucket then never straddles a group);
//! - each filter conjunct uses only the rollup's dimensions, or bounds the time
//!   column (`>=`, `>`, `<`, `<=` against a constant, `now()` folded first);
//! - each aggregate decomposes: `count(*)` (and `count(c)` of a column that is
//!   never null) becomes the sum of the rollup's count, `sum`, `min` and `max` of a
//!   metric the rollup keeps those of, `min`/`max` of a dimension, `avg` of a
//!   never-null metric as the sum over the count, `approx_distinct` (below).
//!
//! A range whose ends cut a bucket is split: its whole buckets from the rollup,
//! the rows of the cut buckets inside the range from the raw rows, both
//! aggregated into the same partial aggregates, united and merged
//! (`Aggregate <- Union(rollup part, raw edges)`). A range inside one bucket is
//! answered from the raw rows alone.
//!
//! A rollup holds exactly the raw rows' events (both are filled by the same
//! `apply`, sealed in the same segment and expired with it), so the rewritten
//! query is the same query. Anything else falls back to the raw scan. Among
//! several rollups that can answer, one that needs no raw edges is preferred,
//! the coarsest (then the one with the fewest dimensions, as a proxy for the
//! fewest rows); when all need edges, the finest, whose edges are the narrowest.
//! Float sums and averages may differ from the raw scan's in the last bits: the
//! rollup's per-bucket sums are exactly rounded, the raw scan's are summed in
//! arrival order.
//!
//! `approx_distinct(c)` is answered by `hll_distinct` of a rollup's `hll` of `c`
//! at the precision of Weir's `approx_distinct` ([`crate::sketch`]): the merged
//! sketches are the sketch of the same values, so the estimate is the same. It
//! has no partial to add raw edges to, so a split range reads raw rows.
//!
//! Not routed: `FILTER`, `count(DISTINCT ..)` of anything but a dimension.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result as DfResult, ScalarValue, TableReference};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Cast, Expr, LogicalPlan, LogicalPlanBuilder, Operator, TableScan, lit,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use weir_storage::config::{AggFn, RollupConfig};
use weir_storage::hot::{Relation, RelationKind, SharedHotSource};

use crate::catalog::MakeTable;
use crate::sketch::APPROX_DISTINCT_PRECISION;

/// The optimizer rule; one per query (it records which rollups answered).
pub struct RollupRouting {
    hot: SharedHotSource,
    make: MakeTable,
    routed: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for RollupRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollupRouting").finish_non_exhaustive()
    }
}

impl RollupRouting {
    /// A rule over `hot`'s relations, scanning a chosen rollup as `make` serves it.
    pub fn new(hot: SharedHotSource, make: MakeTable) -> Self {
        RollupRouting { hot, make, routed: Arc::default() }
    }

    /// The rollup relations queries were routed to so far.
    pub fn routed(&self) -> Vec<String> {
        self.routed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn route(&self, agg: &Aggregate, config: &dyn OptimizerConfig) -> DfResult<Option<(LogicalPlan, String)>> {
        let Some((predicate, scan)) = peel(&agg.input) else { return Ok(None) };
        let relations = self.hot.relations();
        let Some(raw) = relations.iter().find(|r| r.kind == RelationKind::Raw && r.name == scan.table_name.table())
        else {
            return Ok(None);
        };
        let Some(time) = raw.time_column.as_deref() else { return Ok(None) };
        let predicate = match predicate {
            Some(p) => {
                let info = SimplifyContext::builder()
                    .with_schema(Arc::clone(agg.input.schema()))
                    .with_config_options(config.options())
                    .with_query_execution_start_time(config.query_execution_start_time())
                    .build();
                Some(ExprSimplifier::new(info).simplify(p.clone())?)
            }
            None => None,
        };
        // The best candidate: one that needs no raw edges, the coarsest; else
        // the finest (the narrowest edges); then the fewest dimensions.
        let mut best: Option<(&Relation, Parts, Preference)> = None;
        for r in &relations {
            let RelationKind::Rollup { spec: Some(spec), .. } = &r.kind else { continue };
            // A spec from another process is not trusted to be valid.
            if r.table != raw.table || spec.granularity_ms <= 0 {
                continue;
            }
            let ctx = Ctx { raw, time, spec, rollup: TableReference::bare(r.name.as_str()) };
            let Some(parts) = ctx.rewrite(agg, predicate.as_ref()) else { continue };
            let g = spec.granularity_ms;
            let key = match parts.edges {
                None => (true, g, std::cmp::Reverse(spec.dimensions.len())),
                Some(_) => (false, -g, std::cmp::Reverse(spec.dimensions.len())),
            };
            if best.as_ref().is_none_or(|(_, _, k)| key > *k) {
                best = Some((r, parts, key));
            }
        }
        let Some((relation, parts, _)) = best else { return Ok(None) };
        let source = provider_as_source((self.make)(Arc::clone(&self.hot), relation.clone()));
        let rollup = TableReference::bare(relation.name.as_str());
        let mut builder = LogicalPlanBuilder::scan(rollup, source, None)?;
        if let Some(filter) = conjunction(parts.filters) {
            builder = builder.filter(filter)?;
        }
        let partials = parts.partials.iter().map(|p| p.rollup.clone());
        let builder = builder.aggregate(parts.groups, partials)?;
        let builder = match &parts.edges {
            None => builder,
            Some(edges) => {
                let Some(raw_sides) = raw_edges(agg, time, edges, &parts.partials, builder.schema())? else {
                    return Ok(None);
                };
                let mut merged = builder;
                for side in raw_sides {
                    merged = merged.union(side)?;
                }
                let groups = (0..agg.group_expr.len()).map(|i| Expr::Column(Column::from_name(group_name(i))));
                let merges = parts.partials.iter().map(|p| {
                    let column = Expr::Column(Column::from_name(p.alias.as_str()));
                    aggregate_fn(p.merge, column).map(|f| f.alias(&p.alias))
                });
                let Some(merges) = merges.collect::<Option<Vec<_>>>() else { return Ok(None) };
                merged.aggregate(groups, merges)?
            }
        };
        let plan = builder.project(parts.outputs)?.build()?;
        Ok(Some((plan, relation.name.clone())))
    }
}

/// How much a candidate is preferred: no raw edges first, then the granularity
/// (coarser without edges, finer with them), then fewer dimensions.
type Preference = (bool, i64, std::cmp::Reverse<usize>);

/// The raw sides of a split: the query's own input and groups, over the rows
/// of each cut bucket at the range's ends (one plan per end, so that each reads
/// a plain time range the scans prune by), aggregated into the same partials
/// and cast to the rollup side's types (`like`).
fn raw_edges(
    agg: &Aggregate,
    time: &str,
    edges: &Edges,
    partials: &[Partial],
    like: &datafusion::common::DFSchemaRef,
) -> DfResult<Option<Vec<LogicalPlan>>> {
    let Ok((qualifier, field)) = agg.input.schema().qualified_field_with_unqualified_name(time) else {
        return Ok(None);
    };
    let DataType::Timestamp(TimeUnit::Millisecond, tz) = field.data_type() else { return Ok(None) };
    let ts = || Expr::Column(Column::new(qualifier.cloned(), time));
    let at = |ms: i64| lit(ScalarValue::TimestampMillisecond(Some(ms), tz.clone()));
    let mut sides = Vec::new();
    if let Some(ms) = edges.below {
        sides.push(ts().lt(at(ms)));
    }
    if let Some(ms) = edges.from {
        sides.push(ts().gt_eq(at(ms)));
    }
    let casts = like
        .iter()
        .map(|(_, f)| cast(Expr::Column(Column::from_name(f.name())), f.data_type()).alias(f.name()))
        .collect::<Vec<_>>();
    let mut plans = Vec::new();
    for edge in sides {
        let groups = agg.group_expr.iter().enumerate().map(|(i, e)| e.clone().unalias().alias(group_name(i)));
        let Some(partial) = partials.iter().map(|p| Some(p.raw.clone()?.alias(&p.alias))).collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let plan = LogicalPlanBuilder::from(agg.input.as_ref().clone()).filter(edge)?.aggregate(groups, partial)?;
        plans.push(plan.project(casts.clone())?.build()?);
    }
    Ok((!plans.is_empty()).then_some(plans))
}

fn group_name(i: usize) -> String {
    format!("__weir_group_{i}")
}

/// `sum`, `min` or `max` of `arg`.
fn aggregate_fn(name: &str, arg: Expr) -> Option<Expr> {
    use datafusion::functions_aggregate::expr_fn;
    Some(match name {
        "sum" => expr_fn::sum(arg),
        "min" => expr_fn::min(arg),
        "max" => expr_fn::max(arg),
        _ => return None,
    })
}

impl OptimizerRule for RollupRouting {
    fn name(&self) -> &str {
        "weir_rollup_routing"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else { return Ok(Transformed::no(plan)) };
        match self.route(agg, config)? {
            Some((routed, rollup)) => {
                self.routed.lock().unwrap_or_else(|p| p.into_inner()).push(rollup);
                Ok(Transformed::yes(routed))
            }
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The filter and the scan below an aggregate, through an alias.
fn peel(input: &LogicalPlan) -> Option<(Option<&Expr>, &TableScan)> {
    let (predicate, below) = match input {
        LogicalPlan::Filter(f) => (Some(&f.predicate), f.input.as_ref()),
        other => (None, other),
    };
    let below = match below {
        LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
        other => other,
    };
    match below {
        LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => Some((predicate, scan)),
        _ => None,
    }
}

/// One candidate rollup for one raw relation.
struct Ctx<'a> {
    raw: &'a Relation,
    time: &'a str,
    spec: &'a RollupConfig,
    rollup: TableReference,
}

/// The rewritten query's pieces, over the rollup's columns.
struct Parts {
    filters: Vec<Expr>,
    groups: Vec<Expr>,
    partials: Vec<Partial>,
    /// The original aggregate's output columns, by name, in order.
    outputs: Vec<Expr>,
    /// The raw rows to add, when a time bound cuts a bucket.
    edges: Option<Edges>,
}

/// One partial aggregate: over the rollup, over the raw edges, and how the two
/// combine (`sum`, `min` or `max`, under the name `alias`).
struct Partial {
    alias: String,
    merge: &'static str,
    rollup: Expr,
    /// `None` when the raw rows cannot give a partial of this kind (an
    /// estimate is no partial): then the query cannot be split.
    raw: Option<Expr>,
}

/// The raw rows a split range adds to the rollup's whole buckets: those before
/// `below` (the first whole bucket) and from `from` (the end of the last one).
struct Edges {
    below: Option<i64>,
    from: Option<i64>,
}

const NANOS_PER_MS: i128 = 1_000_000;

impl Ctx<'_> {
    fn rewrite(&self, agg: &Aggregate, predicate: Option<&Expr>) -> Option<Parts> {
        let g = self.spec.granularity_ms;
        let mut filters = Vec::new();
        let (mut lo, mut hi): (Option<i64>, Option<i64>) = (None, None);
        if let Some(p) = predicate {
            for conjunct in split_conjunction(p) {
                if conjunct.is_volatile() {
                    return None;
                }
                match self.time_bound(conjunct) {
                    Some(Bound::From(ms)) => lo = Some(lo.map_or(ms, |l| l.max(ms))),
                    Some(Bound::Until(ms)) => hi = Some(hi.map_or(ms, |h| h.min(ms))),
                    None => filters.push(self.over_rollup(conjunct)?),
                }
            }
        }
        // The whole buckets inside the range; the rest, if any, from raw rows.
        let lo_whole = match lo {
            Some(l) if l.rem_euclid(g) != 0 => Some(l.checked_add(g - l.rem_euclid(g))?),
            other => other,
        };
        let hi_whole = match hi {
            Some(h) => Some(h.checked_sub(h.rem_euclid(g))?),
            None => None,
        };
        let edges = (lo_whole != lo || hi_whole != hi)
            .then(|| Edges { below: lo_whole.filter(|_| lo_whole != lo), from: hi_whole.filter(|_| hi_whole != hi) });
        if edges.is_some() && matches!((lo_whole, hi_whole), (Some(l), Some(h)) if l >= h) {
            // Not one whole bucket: the raw rows answer alone.
            return None;
        }
        for (bound, op) in [(lo_whole, Operator::GtEq), (hi_whole, Operator::Lt)] {
            if let Some(ms) = bound {
                let at = lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())));
                let bucket = Expr::Column(Column::new(Some(self.rollup.clone()), "bucket"));
                filters.push(Expr::BinaryExpr(BinaryExpr::new(Box::new(bucket), op, Box::new(at))));
            }
        }
        if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
            return None;
        }
        let mut groups = Vec::new();
        let mut outputs = Vec::new();
        let fields = agg.schema.iter().collect::<Vec<_>>();
        for (i, e) in agg.group_expr.iter().enumerate() {
            let name = group_name(i);
            groups.push(self.over_rollup(e)?.alias(&name));
            let (q, f) = fields[i];
            outputs
                .push(cast(Expr::Column(Column::from_name(name)), f.data_type()).alias_qualified(q.cloned(), f.name()));
        }
        let mut partials = Vec::new();
        for (j, e) in agg.aggr_expr.iter().enumerate() {
            let (q, f) = fields[agg.group_expr.len() + j];
            let out = self.aggregate(e, j, &mut partials)?;
            outputs.push(cast(out, f.data_type()).alias_qualified(q.cloned(), f.name()));
        }
        if edges.is_some() && partials.iter().any(|p| p.raw.is_none()) {
            return None;
        }
        Some(Parts { filters, groups, partials, outputs, edges })
    }

    /// `col op constant` on the time column, as a bound in milliseconds.
    fn time_bound(&self, e: &Expr) -> Option<Bound> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return None };
        let (op, value) = if self.is_time(left) {
            (*op, right.as_ref())
        } else if self.is_time(right) {
            (op.swap()?, left.as_ref())
        } else {
            return None;
        };
        let Expr::Literal(v, _) = value else { return None };
        let ns = timestamp_nanos(v)?;
        let ceil = |ns: i128| ns.div_euclid(NANOS_PER_MS) + i128::from(ns.rem_euclid(NANOS_PER_MS) != 0);
        let floor = |ns: i128| ns.div_euclid(NANOS_PER_MS);
        let bound = match op {
            Operator::GtEq => Bound::From(i64::try_from(ceil(ns)).ok()?),
            Operator::Gt => Bound::From(i64::try_from(floor(ns) + 1).ok()?),
            Operator::Lt => Bound::Until(i64::try_from(ceil(ns)).ok()?),
            Operator::LtEq => Bound::Until(i64::try_from(floor(ns) + 1).ok()?),
            _ => return None,
        };
        Some(bound)
    }

    /// The time column itself (milliseconds), or cast to a timestamp type that
    /// keeps them.
    fn is_time(&self, e: &Expr) -> bool {
        match e {
            Expr::Column(c) => c.name == self.time,
            // A cast to a coarser unit truncates: `CAST(ts AS seconds) > x` is no
            // bound on `ts` at `x`.
            Expr::Cast(Cast { expr, field }) if matches!(field.data_type(), DataType::Timestamp(u, _) if *u != TimeUnit::Second) => {
                self.is_time(expr)
            }
            _ => false,
        }
    }

    /// `e` over the rollup's columns, if it reads only dimensions and the time
    /// column inside aligned `date_bin`/`date_trunc` calls.
    fn over_rollup(&self, e: &Expr) -> Option<Expr> {
        let mut ok = true;
        let rewritten = e
            .clone()
            .transform_down(|node| {
                match &node {
                    Expr::ScalarFunction(f) if self.aligned_time_function(f) => {
                        let args = f
                            .args
                            .iter()
                            .map(|a| if self.is_time(a) { self.to_bucket(a) } else { a.clone() })
                            .collect();
                        let call = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&f.func), args));
                        return Ok(Transformed::new(call, true, TreeNodeRecursion::Jump));
                    }
                    Expr::Column(c) if self.spec.dimensions.contains(&c.name) => {
                        let col = Expr::Column(Column::new(Some(self.rollup.clone()), c.name.clone()));
                        return Ok(Transformed::new(col, true, TreeNodeRecursion::Jump));
                    }
                    Expr::Column(_) | Expr::OuterReferenceColumn(..) | Expr::ScalarSubquery(_) => ok = false,
                    Expr::Exists(_) | Expr::InSubquery(_) | Expr::AggregateFunction(_) | Expr::WindowFunction(_) => {
                        ok = false
                    }
                    _ => {}
                }
                Ok(Transformed::no(node))
            })
            .ok()?;
        ok.then_some(rewritten.data)
    }

    fn to_bucket(&self, e: &Expr) -> Expr {
        match e {
            Expr::Cast(Cast { expr, field }) => {
                Expr::Cast(Cast { expr: Box::new(self.to_bucket(expr)), field: Arc::clone(field) })
            }
            _ => Expr::Column(Column::new(Some(self.rollup.clone()), "bucket")),
        }
    }

    /// `date_bin(stride, ts[, origin])` or `date_trunc(unit, ts)` whose groups are
    /// unions of whole buckets.
    fn aligned_time_function(&self, f: &ScalarFunction) -> bool {
        let g = i128::from(self.spec.granularity_ms) * NANOS_PER_MS;
        let utc = self.raw.schema.field_with_name(self.time).is_ok_and(|f| {
            matches!(f.data_type(), DataType::Timestamp(_, tz) if tz.as_deref().is_none_or(|z| z == "UTC" || z == "+00:00"))
        });
        match (f.func.name(), f.args.as_slice()) {
            ("date_bin", [stride, source, rest @ ..]) if self.is_time(source) && rest.len() <= 1 => {
                let Some(stride) = interval_nanos(stride) else { return false };
                let origin = match rest {
                    [] => Some(0),
                    [Expr::Literal(v, _)] => timestamp_nanos(v),
                    _ => None,
                };
                stride > 0 && stride % g == 0 && origin.is_some_and(|o| o.rem_euclid(g) == 0)
            }
            ("date_trunc", [Expr::Literal(unit, _), Expr::Column(c)]) if c.name == self.time && utc => {
                let unit = match unit {
                    ScalarValue::Utf8(Some(u)) | ScalarValue::LargeUtf8(Some(u)) | ScalarValue::Utf8View(Some(u)) => {
                        u.to_ascii_lowercase()
                    }
                    _ => return false,
                };
                let ms: i128 = match unit.as_str() {
                    "second" => 1_000,
                    "minute" => 60_000,
                    "hour" => 3_600_000,
                    "day" | "week" | "month" | "quarter" | "year" => 86_400_000,
                    _ => return false,
                };
                (ms * NANOS_PER_MS) % g == 0
            }
            _ => false,
        }
    }

    /// The rollup column holding `func` of `field`.
    fn column_of(&self, wanted: impl Fn(&AggFn) -> bool) -> Option<Expr> {
        let a = self.spec.aggregations.iter().find(|a| wanted(&a.func))?;
        Some(Expr::Column(Column::new(Some(self.rollup.clone()), a.name.clone())))
    }

    fn never_null(&self, field: &str) -> bool {
        self.raw.schema.field_with_name(field).is_ok_and(|f| !f.is_nullable())
    }

    /// Adds the partial aggregates `e` needs to `out`; returns `e`'s value over
    /// them.
    fn aggregate(&self, e: &Expr, j: usize, out: &mut Vec<Partial>) -> Option<Expr> {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else { return None };
        if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
            return None;
        }
        let column = |a: &Expr| match a {
            Expr::Column(c) => Some(c.name.clone()),
            _ => None,
        };
        // `name` of `over` on the rollup, `raw` on the raw edges.
        let mut add = |name: &'static str, over: Expr, raw: Expr| -> Option<Expr> {
            let alias = format!("__weir_agg_{j}_{}", out.len());
            let rollup = aggregate_fn(name, over)?.alias(&alias);
            out.push(Partial { rollup, alias: alias.clone(), merge: name, raw: Some(raw) });
            Some(Expr::Column(Column::from_name(alias)))
        };
        let count = self.column_of(|f| matches!(f, AggFn::Count));
        let raw_count = || datafusion::functions_aggregate::expr_fn::count(lit(1i64));
        match (func.name(), params.args.as_slice()) {
            ("count", [arg]) => {
                let all = match arg {
                    Expr::Literal(v, _) => !v.is_null(),
                    Expr::Column(c) => self.never_null(&c.name) || c.name == self.time,
                    _ => false,
                };
                if !all {
                    return None;
                }
                let sum = add("sum", count?, raw_count())?;
                Some(datafusion::functions::expr_fn::coalesce(vec![sum, lit(0i64)]))
            }
            (name @ ("sum" | "min" | "max"), [arg]) => {
                let field = column(arg)?;
                let name: &'static str = match name {
                    "sum" => "sum",
                    "min" => "min",
                    _ => "max",
                };
                let raw = aggregate_fn(name, arg.clone())?;
                if name != "sum" && self.spec.dimensions.contains(&field) {
                    return add(name, Expr::Column(Column::new(Some(self.rollup.clone()), field)), raw);
                }
                let kept = self.column_of(|f| match (name, f) {
                    ("sum", AggFn::Sum { field: x })
                    | ("min", AggFn::Min { field: x })
                    | ("max", AggFn::Max { field: x }) => *x == field,
                    _ => false,
                })?;
                add(name, kept, raw)
            }
            ("approx_distinct", [arg]) => {
                // Weir's `approx_distinct` sketches as a rollup's `hll` of the
                // same precision does: the merged sketches are the same sketch.
                let field = column(arg)?;
                let sketch = self.column_of(|f| {
                    matches!(f, AggFn::Hll { field: x, precision } if *x == field && *precision == APPROX_DISTINCT_PRECISION)
                })?;
                let alias = format!("__weir_agg_{j}_{}", out.len());
                let rollup = crate::sketch::hll_distinct().call(vec![sketch]).alias(&alias);
                out.push(Partial { rollup, alias: alias.clone(), merge: "", raw: None });
                Some(Expr::Column(Column::from_name(alias)))
            }
            ("avg", [arg]) => {
                let field = column(arg)?;
                if !self.never_null(&field) {
                    return None;
                }
                let sum = self.column_of(|f| matches!(f, AggFn::Sum { field: x } if *x == field))?;
                let sum = add("sum", sum, aggregate_fn("sum", arg.clone())?)?;
                let n = add("sum", count?, raw_count())?;
                Some(Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(cast(sum, &DataType::Float64)),
                    Operator::Divide,
                    Box::new(cast(n, &DataType::Float64)),
                )))
            }
            _ => None,
        }
    }
}

enum Bound {
    /// `ts >= ms`.
    From(i64),
    /// `ts < ms`.
    Until(i64),
}

fn cast(e: Expr, to: &DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), to.clone()))
}

/// A timestamp constant in nanoseconds since the epoch.
fn timestamp_nanos(v: &ScalarValue) -> Option<i128> {
    let (value, unit) = match v {
        ScalarValue::TimestampSecond(Some(x), _) => (*x, TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(x), _) => (*x, TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(x), _) => (*x, TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(x), _) => (*x, TimeUnit::Nanosecond),
        _ => return None,
    };
    let per = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    Some(i128::from(value) * per)
}

/// A fixed-length interval constant in nanoseconds (no months).
fn interval_nanos(e: &Expr) -> Option<i128> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i128::from(i.days) * 86_400 * 1_000_000_000 + i128::from(i.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i128::from(i.days) * 86_400 * 1_000_000_000 + i128::from(i.milliseconds) * 1_000_000)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
