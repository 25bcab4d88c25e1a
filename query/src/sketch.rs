//! SQL functions over HyperLogLog++ sketch columns (the binary encoding of
//! [`weir_storage::sketch::Sketch`]).
//!
//! - `hll_merge(sketch BINARY) -> BINARY`: aggregate; the union of the sketches, as a
//!   sketch (NULL when every input is NULL or there are no rows).
//! - `hll_distinct(sketch BINARY) -> BIGINT`: aggregate; the estimated distinct count
//!   of the union (0 when there are no rows).
//! - `hll_estimate(sketch BINARY) -> BIGINT`: scalar; the estimate of one sketch
//!   (NULL for NULL).
//!
//! - `approx_distinct(x) -> BIGINT UNSIGNED`: aggregate, in place of DataFusion's;
//!   the estimated distinct count of `x` by the same HyperLogLog++ sketch (precision
//!   14) and the same value hashing as a rollup's `hll` of that field, so that
//!   `approx_distinct(card_id)` over raw rows and `hll_distinct(cards)` over a
//!   precision-14 rollup of `card_id` give the same estimate, and rollup routing
//!   ([`crate::route`]) can answer one by the other.
//!
//! NULL sketches are ignored. Both aggregates keep one sketch as their state, so they
//! run in partial/final mode across partitions: "distinct users per hour" is
//! `SELECT date_trunc('hour', bucket), hll_distinct(users) ... GROUP BY 1` over a
//! per-minute rollup. `BINARY`, `LARGE BINARY` and `BINARY VIEW` inputs are accepted
//! (Parquet readers may hand out views). A malformed value, or sketches of different
//! precisions, is an execution error naming the function.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use weir_storage::sketch::{Sketch, SketchUnion};

/// The scalar sketch functions, to register in a session.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(HllEstimate::new()))]
}

/// The aggregate sketch functions, to register in a session (after DataFusion's
/// own: `approx_distinct` replaces its namesake).
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(HllAggregate::new(Output::Sketch))),
        hll_distinct(),
        Arc::new(AggregateUDF::from(ApproxDistinct::new())),
    ]
}

/// `hll_distinct`, for plans built by hand.
pub fn hll_distinct() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(HllAggregate::new(Output::Estimate)))
}

/// The precision of `approx_distinct`'s sketch: a rollup's `hll` of the same
/// precision answers it exactly.
pub const APPROX_DISTINCT_PRECISION: u8 = 14;

fn sketch_signature() -> Signature {
    Signature::uniform(1, vec![DataType::Binary, DataType::LargeBinary, DataType::BinaryView], Volatility::Immutable)
}

/// Calls `f` with every non-null value of a binary column.
fn for_each_value(function: &str, array: &ArrayRef, mut f: impl FnMut(&[u8]) -> DfResult<()>) -> DfResult<()> {
    match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().flatten().try_for_each(&mut f),
        DataType::LargeBinary => array.as_binary::<i64>().iter().flatten().try_for_each(&mut f),
        DataType::BinaryView => array.as_binary_view().iter().flatten().try_for_each(&mut f),
        DataType::Null => Ok(()),
        other => exec_err!("{function} expects a binary sketch column, got {other}"),
    }
}

fn decode(function: &str, bytes: &[u8]) -> DfResult<Sketch> {
    Sketch::from_bytes(bytes).map_err(|e| DataFusionError::Execution(format!("{function}: {e}")))
}

/// What an aggregate over sketches returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    /// `hll_merge`: the merged sketch.
    Sketch,
    /// `hll_distinct`: the merged sketch's estimate.
    Estimate,
}

/// `hll_merge` and `hll_distinct`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HllAggregate {
    output: Output,
    signature: Signature,
}

impl HllAggregate {
    fn new(output: Output) -> Self {
        HllAggregate { output, signature: sketch_signature() }
    }
}

impl AggregateUDFImpl for HllAggregate {
    fn name(&self) -> &str {
        self.name_static()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.output {
            Output::Sketch => DataType::Binary,
            Output::Estimate => DataType::Int64,
        })
    }

    fn is_nullable(&self) -> bool {
        self.output == Output::Sketch
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(HllAccumulator { function: self.name_static(), output: self.output, union: SketchUnion::new() }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "sketch"), DataType::Binary, true))])
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn default_value(&self, _data_type: &DataType) -> DfResult<ScalarValue> {
        Ok(match self.output {
            Output::Sketch => ScalarValue::Binary(None),
            Output::Estimate => ScalarValue::Int64(Some(0)),
        })
    }
}

impl HllAggregate {
    fn name_static(&self) -> &'static str {
        match self.output {
            Output::Sketch => "hll_merge",
            Output::Estimate => "hll_distinct",
        }
    }
}

/// The union so far, merged straight from the sketches' bytes
/// ([`SketchUnion`]); empty until the first non-null sketch.
#[derive(Debug)]
struct HllAccumulator {
    function: &'static str,
    output: Output,
    union: SketchUnion,
}

impl HllAccumulator {
    fn merge_column(&mut self, column: &ArrayRef) -> DfResult<()> {
        let function = self.function;
        for_each_value(function, column, |bytes| {
            self.union.merge_bytes(bytes).map_err(|e| DataFusionError::Execution(format!("{function}: {e}")))
        })
    }

    fn sketch(&mut self) -> DfResult<Option<Sketch>> {
        let function = self.function;
        self.union.finish().map_err(|e| DataFusionError::Execution(format!("{function}: {e}")))
    }
}

impl Accumulator for HllAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        match values.first() {
            Some(column) => self.merge_column(column),
            None => exec_err!("{} takes one argument", self.function),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(self.sketch()?.as_mut().map(Sketch::to_bytes))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let mut sketch = self.sketch()?;
        Ok(match self.output {
            Output::Sketch => ScalarValue::Binary(sketch.as_mut().map(Sketch::to_bytes)),
            Output::Estimate => {
                let estimate = sketch.as_mut().map_or(0, Sketch::estimate);
                ScalarValue::Int64(Some(i64::try_from(estimate).unwrap_or(i64::MAX)))
            }
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.union.heap_bytes()
    }
}

/// `approx_distinct`: a sketch of the values' hashes as a rollup's `hll` makes
/// it (`weir-ingest`'s `rollup.rs`): strings by their bytes, integers by their
/// decimal text, floats by their bits, booleans as `true`/`false`; other types
/// by their text (`CAST(x AS VARCHAR)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ApproxDistinct {
    signature: Signature,
}

impl ApproxDistinct {
    fn new() -> Self {
        ApproxDistinct { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for ApproxDistinct {
    fn name(&self) -> &str {
        "approx_distinct"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::UInt64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let sketch = Sketch::new(APPROX_DISTINCT_PRECISION).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Ok(Box::new(ApproxDistinctAccumulator { sketch }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "sketch"), DataType::Binary, true))])
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn default_value(&self, _data_type: &DataType) -> DfResult<ScalarValue> {
        Ok(ScalarValue::UInt64(Some(0)))
    }
}

#[derive(Debug)]
struct ApproxDistinctAccumulator {
    sketch: Sketch,
}

/// Inserts the hash of every non-null value of `array` as a rollup would.
fn insert_values(sketch: &mut Sketch, array: &ArrayRef) -> DfResult<()> {
    use datafusion::arrow::array::Float64Array;
    use datafusion::arrow::compute::cast;
    use weir_storage::sketch::hash_bytes;
    match array.data_type() {
        DataType::Null => {}
        DataType::Utf8 => array.as_string::<i32>().iter().flatten().for_each(|v| sketch.insert_str(v)),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().flatten().for_each(|v| sketch.insert_str(v)),
        DataType::Utf8View => array.as_string_view().iter().flatten().for_each(|v| sketch.insert_str(v)),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .flatten()
            .for_each(|v| sketch.insert_hash(hash_bytes(if v { b"true" } else { b"false" }))),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let floats = cast(array, &DataType::Float64)?;
            let floats: &Float64Array = floats.as_primitive();
            floats.iter().flatten().for_each(|v| sketch.insert_hash(hash_bytes(&v.to_bits().to_le_bytes())));
        }
        // Integers as decimal text, like the ingest side's int64; anything else
        // by its text too.
        _ => {
            let text = cast(array, &DataType::Utf8)?;
            text.as_string::<i32>().iter().flatten().for_each(|v| sketch.insert_str(v));
        }
    }
    Ok(())
}

impl Accumulator for ApproxDistinctAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        match values.first() {
            Some(column) => insert_values(&mut self.sketch, column),
            None => exec_err!("approx_distinct takes one argument"),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let Some(column) = states.first() else { return exec_err!("approx_distinct: no state") };
        for_each_value("approx_distinct", column, |bytes| {
            let incoming = decode("approx_distinct", bytes)?;
            self.sketch.merge(&incoming).map_err(|e| DataFusionError::Execution(format!("approx_distinct: {e}")))
        })
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.sketch.to_bytes()))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::UInt64(Some(self.sketch.estimate())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sketch.heap_bytes()
    }
}

/// `hll_estimate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HllEstimate {
    signature: Signature,
}

impl HllEstimate {
    fn new() -> Self {
        HllEstimate { signature: sketch_signature() }
    }
}

fn estimate_of(bytes: &[u8]) -> DfResult<i64> {
    let estimate = decode("hll_estimate", bytes)?.estimate();
    Ok(i64::try_from(estimate).unwrap_or(i64::MAX))
}

impl ScalarUDFImpl for HllEstimate {
    fn name(&self) -> &str {
        "hll_estimate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("hll_estimate takes one argument");
        };
        match arg {
            ColumnarValue::Scalar(scalar) => {
                let estimate = match scalar {
                    ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
                        v.as_deref().map(estimate_of).transpose()?
                    }
                    ScalarValue::Null => None,
                    other => {
                        return exec_err!("hll_estimate expects a binary sketch, got {}", other.data_type());
                    }
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Int64(estimate)))
            }
            ColumnarValue::Array(array) => {
                let estimates: Int64Array = match array.data_type() {
                    DataType::Binary => collect(array.as_binary::<i32>().iter())?,
                    DataType::LargeBinary => collect(array.as_binary::<i64>().iter())?,
                    DataType::BinaryView => collect(array.as_binary_view().iter())?,
                    DataType::Null => Int64Array::new_null(array.len()),
                    other => {
                        return exec_err!("hll_estimate expects a binary sketch column, got {other}");
                    }
                };
                Ok(ColumnarValue::Array(Arc::new(estimates)))
            }
        }
    }
}

fn collect<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> DfResult<Int64Array> {
    values.map(|v| v.map(estimate_of).transpose()).collect()
}

#[cfg(test)]
mod tests;
