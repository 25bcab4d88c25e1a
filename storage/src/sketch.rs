//! Distinct-count sketches: HyperLogLog++ (the `hyperloglogplus` crate) over a
//! stable 64-bit hash (xxh3), with a versioned binary encoding.
//!
//! The encoding is what rollup tables expose as their sketch columns, what Parquet
//! segments will store as binary columns, and what the SQL sketch functions merge.
//! It is canonical: the same multiset of inserted values gives the same bytes,
//! whatever the order of insertion or merging (the temporary set is folded into the
//! sparse list before encoding), so replays are byte-for-byte reproducible.
//!
//! Layout: `[version: u8 = 1][precision: u8][bincode(HyperLogLogPlus)]`.

use std::hash::{BuildHasher, Hasher};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};

/// The current version of the sketch encoding.
pub const SKETCH_FORMAT_VERSION: u8 = 1;
/// Lowest and highest precision accepted (registers = 2^precision).
pub const MIN_PRECISION: u8 = 4;
pub const MAX_PRECISION: u8 = 18;
/// The precision used when a table does not say.
pub const DEFAULT_PRECISION: u8 = 14;

/// Errors of sketch decoding and merging.
#[derive(Debug, thiserror::Error)]
pub enum SketchError {
    #[error("sketch precision {0} is out of range {MIN_PRECISION}..={MAX_PRECISION}")]
    Precision(u8),
    #[error("cannot merge sketches of precision {0} and {1}")]
    IncompatiblePrecision(u8, u8),
    #[error("not a Weir sketch: {0}")]
    Decode(String),
}

/// Hashes bytes with the stable hash every sketch uses (xxh3, seed 0).
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A hasher that passes a precomputed u64 through; the value inserted into the
/// sketch is already a stable hash.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Sketch`; fold anything else stably.
        self.0 = hash_bytes(bytes) ^ self.0.rotate_left(5);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize)]
pub struct PassThroughBuilder;

impl BuildHasher for PassThroughBuilder {
    type Hasher = PassThrough;
    #[inline]
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// A HyperLogLog++ distinct-count sketch.
#[derive(Clone, Debug)]
pub struct Sketch {
    precision: u8,
    inner: HyperLogLogPlus<u64, PassThroughBuilder>,
}

impl Sketch {
    pub fn new(precision: u8) -> Result<Self, SketchError> {
        let inner =
            HyperLogLogPlus::new(precision, PassThroughBuilder).map_err(|_| SketchError::Precision(precision))?;
        Ok(Sketch { precision, inner })
    }

    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Adds a value given by its stable hash (see [`hash_bytes`]).
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        self.inner.insert(&hash);
    }

    /// Adds a string value.
    #[inline]
    pub fn insert_str(&mut self, value: &str) {
        self.insert_hash(hash_bytes(value.as_bytes()));
    }

    /// Merges `other` into `self`; both must have the same precision.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if self.precision != other.precision {
            return Err(SketchError::IncompatiblePrecision(self.precision, other.precision));
        }
        self.inner.merge(&other.inner).map_err(|_| SketchError::IncompatiblePrecision(self.precision, other.precision))
    }

    /// The estimated number of distinct values, rounded to the nearest integer.
    pub fn estimate(&mut self) -> u64 {
        self.inner.count().round().max(0.0) as u64
    }

    /// Encodes the sketch canonically (see the module docs).
    pub fn to_bytes(&mut self) -> Vec<u8> {
        // `count` folds the temporary hash set into the sparse list, whose order is
        // canonical; the set is then empty and encodes as a length of zero.
        let _ = self.inner.count();
        let mut out = Vec::with_capacity(64);
        out.push(SKETCH_FORMAT_VERSION);
        out.push(self.precision);
        bincode::serialize_into(&mut out, &self.inner).expect("encoding into a Vec cannot fail");
        out
    }

    /// Decodes bytes made by [`Sketch::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        match bytes {
            [SKETCH_FORMAT_VERSION, precision, rest @ ..] => {
                if !(MIN_PRECISION..=MAX_PRECISION).contains(precision) {
                    return Err(SketchError::Precision(*precision));
                }
                let inner: HyperLogLogPlus<u64, PassThroughBuilder> =
                    bincode::deserialize(rest).map_err(|e| SketchError::Decode(e.to_string()))?;
                Ok(Sketch { precision: *precision, inner })
            }
            [v, ..] => Err(SketchError::Decode(format!("unknown sketch format version {v}"))),
            [] => Err(SketchError::Decode("empty value".into())),
        }
    }

    /// Approximate heap size in bytes, for the hot tier's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        // Sparse sketches are small; a dense one holds 2^p 6-bit registers.
        // The crate does not expose its sizes, so estimate from the encoding's
        // upper bound by representation: dense once the estimate is large.
        1usize << self.precision.saturating_sub(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_close_and_merge_is_union() {
        let mut a = Sketch::new(14).unwrap();
        let mut b = Sketch::new(14).unwrap();
        for i in 0..50_000u32 {
            a.insert_str(&format!("card-{i}"));
        }
        for i in 25_000..75_000u32 {
            b.insert_str(&format!("card-{i}"));
        }
        let ea = a.estimate() as f64;
        assert!((ea - 50_000.0).abs() / 50_000.0 < 0.02, "estimate {ea}");
        a.merge(&b).unwrap();
        let e = a.estimate() as f64;
        assert!((e - 75_000.0).abs() / 75_000.0 < 0.02, "union estimate {e}");
    }

    #[test]
    fn small_counts_are_exact() {
        let mut a = Sketch::new(14).unwrap();
        for i in 0..100 {
            a.insert_str(&format!("x{}", i % 37));
        }
        assert_eq!(a.estimate(), 37);
    }

    #[test]
    fn encoding_round_trips_and_is_canonical() {
        let mut a = Sketch::new(12).unwrap();
        let mut b = Sketch::new(12).unwrap();
        let values: Vec<String> = (0..3000).map(|i| format!("v{i}")).collect();
        for v in &values {
            a.insert_str(v);
        }
        for v in values.iter().rev() {
            b.insert_str(v);
        }
        let (ba, bb) = (a.to_bytes(), b.to_bytes());
        assert_eq!(ba, bb, "insertion order must not change the bytes");
        let mut c = Sketch::from_bytes(&ba).unwrap();
        assert_eq!(c.estimate(), a.estimate());
        assert_eq!(c.to_bytes(), ba);
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(matches!(Sketch::from_bytes(&[]), Err(SketchError::Decode(_))));
        assert!(matches!(Sketch::from_bytes(&[9, 14]), Err(SketchError::Decode(_))));
        assert!(matches!(Sketch::from_bytes(&[1, 40]), Err(SketchError::Precision(40))));
        assert!(Sketch::from_bytes(&[1, 14, 0xff, 0xff]).is_err());
        let mut a = Sketch::new(10).unwrap();
        let b = Sketch::new(12).unwrap();
        assert!(matches!(a.merge(&b), Err(SketchError::IncompatiblePrecision(10, 12))));
    }
}
