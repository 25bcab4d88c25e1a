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
use weir_storage::sketch::Sketch;

/// The scalar sketch functions, to register in a session.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(HllEstimate::new()))]
}

/// The aggregate sketch functions, to register in a session.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(HllAggregate::new(Output::Sketch))),
        Arc::new(AggregateUDF::from(HllAggregate::new(Output::Estimate))),
    ]
}

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
        Ok(Box::new(HllAccumulator { function: self.name_static(), output: self.output, sketch: None }))
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

/// The union so far; `None` until the first non-null sketch.
#[derive(Debug)]
struct HllAccumulator {
    function: &'static str,
    output: Output,
    sketch: Option<Sketch>,
}

impl HllAccumulator {
    fn merge_column(&mut self, column: &ArrayRef) -> DfResult<()> {
        let function = self.function;
        for_each_value(function, column, |bytes| {
            let incoming = decode(function, bytes)?;
            match &mut self.sketch {
                None => self.sketch = Some(incoming),
                Some(sketch) => {
                    sketch.merge(&incoming).map_err(|e| DataFusionError::Execution(format!("{function}: {e}")))?
                }
            }
            Ok(())
        })
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
        Ok(vec![ScalarValue::Binary(self.sketch.as_mut().map(Sketch::to_bytes))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(match self.output {
            Output::Sketch => ScalarValue::Binary(self.sketch.as_mut().map(Sketch::to_bytes)),
            Output::Estimate => {
                let estimate = self.sketch.as_mut().map_or(0, Sketch::estimate);
                ScalarValue::Int64(Some(i64::try_from(estimate).unwrap_or(i64::MAX)))
            }
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sketch.as_ref().map_or(0, Sketch::heap_bytes)
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
