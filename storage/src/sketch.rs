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

use bincode::Options;

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
    ///
    /// The bytes may come from anywhere (a SQL literal, a Parquet file someone
    /// edited), so they are checked against what [`Sketch::to_bytes`] can write
    /// before the crate's type is built from them: see [`validate`]. Anything else
    /// is refused with an error naming the first thing wrong; nothing here panics
    /// or allocates more than the input's own size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        match bytes {
            [SKETCH_FORMAT_VERSION, precision, rest @ ..] => {
                if !(MIN_PRECISION..=MAX_PRECISION).contains(precision) {
                    return Err(SketchError::Precision(*precision));
                }
                validate(*precision, rest)?;
                let inner: HyperLogLogPlus<u64, PassThroughBuilder> =
                    wire_options(rest).deserialize(rest).map_err(|e| SketchError::Decode(e.to_string()))?;
                Ok(Sketch { precision: *precision, inner })
            }
            [SKETCH_FORMAT_VERSION] => Err(SketchError::Decode("one byte, no precision".into())),
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

/// bincode as `to_bytes` writes it (fixed-width integers), reading no more than
/// the input holds and refusing trailing bytes.
fn wire_options(input: &[u8]) -> impl bincode::Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(input.len() as u64)
}

/// The layout bincode gives `HyperLogLogPlus<u64, PassThroughBuilder>` (its
/// fields are private, so the validator reads the bytes itself; the builder and
/// the phantom type encode as nothing, integers as fixed-width little-endian,
/// `usize` as u64, collections as a u64 length then the items):
///
/// ```text
/// precision u8 | counts (u64, u64, u64) | tmpset: len u64, u32 each
/// | sparse: count u64, last u32, bytes: len u64, u8 each
/// | registers: tag u8 (0 none, 1 some) [words: len u64, u32 each | count u64 | zeros u64]
/// ```
///
/// The round-trip tests below fail if the crate's layout ever stops matching.
struct WireSketch<'a> {
    precision: u8,
    counts: (u64, u64, u64),
    sparse: WireSparse<'a>,
    registers: Option<WireRegisters<'a>>,
}

struct WireSparse<'a> {
    count: u64,
    last: u32,
    buf: &'a [u8],
}

struct WireRegisters<'a> {
    /// Little-endian u32 words.
    words: &'a [u8],
    count: u64,
    zeros: u64,
}

/// Reads fixed-width fields off a slice; every length is checked against what
/// is left before anything is taken.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], SketchError> {
        let left = (self.buf.len() - self.at) as u64;
        if n > left {
            return Err(bad(format!("{what} needs {n} bytes at byte {}, {left} are left", self.at + 2)));
        }
        let out = &self.buf[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SketchError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, SketchError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SketchError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    /// A u64 count of `item` bytes each, then the items.
    fn seq(&mut self, item: u64, what: &str) -> Result<&'a [u8], SketchError> {
        let len = self.u64(what)?;
        let bytes = len.checked_mul(item).ok_or_else(|| bad(format!("{what}: length {len} overflows")))?;
        self.take(bytes, what)
    }
}

impl<'a> WireSketch<'a> {
    fn parse(rest: &'a [u8]) -> Result<WireSketch<'a>, SketchError> {
        let mut f = Fields { buf: rest, at: 0 };
        let precision = f.u8("precision")?;
        let counts = (f.u64("sizes")?, f.u64("sizes")?, f.u64("sizes")?);
        let unfolded = f.u64("temporary set")?;
        if unfolded != 0 {
            return Err(bad(format!("{unfolded} unfolded hash codes (an encoding holds none)")));
        }
        let sparse =
            WireSparse { count: f.u64("sparse count")?, last: f.u32("sparse last")?, buf: f.seq(1, "sparse list")? };
        let registers = match f.u8("registers tag")? {
            0 => None,
            1 => Some(WireRegisters {
                words: f.seq(4, "registers")?,
                count: f.u64("register count")?,
                zeros: f.u64("zero registers")?,
            }),
            t => return Err(bad(format!("registers tag {t} (0 or 1)"))),
        };
        if f.at != rest.len() {
            return Err(bad(format!("{} bytes after the end of the sketch", rest.len() - f.at)));
        }
        Ok(WireSketch { precision, counts, sparse, registers })
    }
}

/// The sparse representation's precision (the crate's `PRIME_PRECISION`).
const SPARSE_PRECISION: u32 = 25;
/// Registers are 6 bits, five to a 32-bit word.
const REGISTERS_PER_WORD: usize = 5;

fn bad(what: impl Into<String>) -> SketchError {
    SketchError::Decode(what.into())
}

/// Checks that `rest` (the bytes after version and precision) is a state
/// [`Sketch::to_bytes`] can write at precision `p`: the inner precision and sizes
/// are those of `HyperLogLogPlus::new(p)`, the temporary set is empty (encoding
/// folds it into the sparse list), and either the sparse list is a strictly
/// increasing run of well-formed hash codes no longer than the crate keeps before
/// going dense, or the dense registers are exactly `2^p` values each at most
/// `65 - p` with a true count of zeros. Every index and shift the crate later
/// computes from such a state is in range.
pub fn validate(p: u8, rest: &[u8]) -> Result<(), SketchError> {
    checked(p, rest).map(|_| ())
}

/// [`validate`], answering the parsed state.
fn checked(p: u8, rest: &[u8]) -> Result<WireSketch<'_>, SketchError> {
    let wire = WireSketch::parse(rest)?;
    if wire.precision != p {
        return Err(bad(format!("inner precision {} differs from the header's {p}", wire.precision)));
    }
    let registers = 1u64 << p;
    let sparse_limit = 4 * registers / REGISTERS_PER_WORD as u64;
    let expected = (registers, 1u64 << (SPARSE_PRECISION - 1), sparse_limit);
    if wire.counts != expected {
        return Err(bad(format!("sizes {:?} are not those of precision {p} ({expected:?})", wire.counts)));
    }
    match &wire.registers {
        None => validate_sparse(p, sparse_limit, &wire.sparse)?,
        Some(dense) => {
            if wire.sparse.count != 0 || wire.sparse.last != 0 || !wire.sparse.buf.is_empty() {
                return Err(bad("a dense sketch that also holds a sparse list"));
            }
            validate_dense(p, registers, dense)?
        }
    }
    Ok(wire)
}

fn validate_sparse(p: u8, limit: u64, sparse: &WireSparse<'_>) -> Result<(), SketchError> {
    if sparse.buf.len() as u64 > limit {
        return Err(bad(format!("sparse list of {} bytes, over the {limit} of precision {p}", sparse.buf.len())));
    }
    let (mut at, mut last, mut count) = (0usize, 0u32, 0u64);
    while at < sparse.buf.len() {
        let (dif, next) = read_varint(sparse.buf, at)?;
        if dif == 0 {
            return Err(bad(format!("sparse hash codes not strictly increasing at byte {at}")));
        }
        last = last.checked_add(dif).ok_or_else(|| bad(format!("sparse hash code overflows at byte {at}")))?;
        check_hash_code(p, last).map_err(|e| bad(format!("sparse hash code {last:#x} at byte {at}: {e}")))?;
        count += 1;
        at = next;
    }
    if count != sparse.count || last != sparse.last {
        return Err(bad(format!(
            "sparse list says {} codes ending at {:#x}, holds {count} ending at {last:#x}",
            sparse.count, sparse.last
        )));
    }
    Ok(())
}

/// Reads one LEB128 u32 at `at` (at most five bytes, no bits past 32, no
/// redundant trailing zero byte); returns it and the next offset.
fn read_varint(buf: &[u8], at: usize) -> Result<(u32, usize), SketchError> {
    let mut value = 0u32;
    for i in 0..5 {
        let Some(&byte) = buf.get(at + i) else {
            return Err(bad(format!("sparse list ends inside a number at byte {at}")));
        };
        if i == 4 && byte > 0x0f {
            return Err(bad(format!("sparse number over 32 bits at byte {at}")));
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(bad(format!("sparse number not minimally encoded at byte {at}")));
            }
            return Ok((value, at + i + 1));
        }
    }
    Err(bad(format!("sparse number over five bytes at byte {at}")))
}

/// A sparse hash code is either `index25 << 7 | zeros << 1 | 1` with `zeros` in
/// 1..=40 (the bits below the register index were all zero), or `index25 << 1`
/// whose bits below the register index are not all zero.
fn check_hash_code(p: u8, code: u32) -> Result<(), &'static str> {
    if code & 1 == 1 {
        let zeros = (code >> 1) & 0x3f;
        if !(1..=40).contains(&zeros) {
            return Err("run of zeros out of range");
        }
    } else {
        if code >> (SPARSE_PRECISION + 1) != 0 {
            return Err("bits set above the sparse index");
        }
        let below = (code >> 1) & ((1u32 << (SPARSE_PRECISION - u32::from(p))) - 1);
        if below == 0 {
            return Err("short form with no bits below the register index");
        }
    }
    Ok(())
}

fn validate_dense(p: u8, registers: u64, dense: &WireRegisters<'_>) -> Result<(), SketchError> {
    let words = (registers as usize).div_ceil(REGISTERS_PER_WORD);
    if dense.count != registers || dense.words.len() != 4 * words {
        return Err(bad(format!(
            "{} registers in {} words, precision {p} has {registers} in {words}",
            dense.count,
            dense.words.len() / 4
        )));
    }
    let max = 65 - u32::from(p);
    // One pass without branches (the common case is a valid sketch), the five
    // registers of a word spread into byte lanes of a u64 and checked together;
    // the offending register is looked for only once something is wrong.
    const LANES: u64 = 0x01_01_01_01_01;
    const HIGH: u64 = 0x80 * LANES;
    let over_bias = u64::from(0x80 - (max + 1)) * LANES;
    let (mut nonzero, mut over, mut unused) = (0u64, 0u64, 0u32);
    // Registers in the last word (the rest of its bits must be clear).
    let last_used = registers as usize - (words - 1) * REGISTERS_PER_WORD;
    for (w, word) in dense.words.chunks_exact(4).enumerate() {
        let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        let used = if w + 1 == words { last_used } else { REGISTERS_PER_WORD };
        unused |= (u64::from(word) >> (6 * used)) as u32;
        let x = u64::from(word);
        let lanes = (x & 0x3f)
            | ((x >> 6) & 0x3f) << 8
            | ((x >> 12) & 0x3f) << 16
            | ((x >> 18) & 0x3f) << 24
            | ((x >> 24) & 0x3f) << 32;
        over |= (lanes + over_bias) & HIGH;
        // The lanes' flags (one bit each) summed into one lane by a multiply.
        nonzero += ((((lanes + 0x7f * LANES) & HIGH) >> 7).wrapping_mul(LANES) >> 32) & 0xff;
    }
    if unused != 0 {
        return Err(bad("bits set outside the registers"));
    }
    // Every register counted is one of the `registers` (the others are clear).
    let zeros = registers - nonzero;
    if over != 0 {
        let (at, value) = (0..registers as usize)
            .map(|i| {
                let w = i / REGISTERS_PER_WORD;
                let word = u32::from_le_bytes(dense.words[4 * w..4 * w + 4].try_into().expect("4 bytes"));
                (i, (word >> (6 * (i % REGISTERS_PER_WORD))) & 0x3f)
            })
            .find(|&(_, v)| v > max)
            .expect("some register is over the bound");
        return Err(bad(format!("register {at} is {value}, over {max}")));
    }
    if zeros != dense.zeros {
        return Err(bad(format!("dense sketch says {} zero registers, holds {zeros}", dense.zeros)));
    }
    Ok(())
}

mod union;
pub use union::SketchUnion;

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

    fn sketch_of(p: u8, n: u64, salt: u64) -> Sketch {
        let mut s = Sketch::new(p).unwrap();
        for i in 0..n {
            s.insert_hash(hash_bytes(&(i ^ (salt << 32)).to_le_bytes()));
        }
        s
    }

    /// Every state a sketch can be in (empty, sparse, just dense, full) decodes,
    /// at every precision: the mirror layout matches the crate's.
    #[test]
    fn every_written_state_validates() {
        for p in MIN_PRECISION..=MAX_PRECISION {
            for n in [0u64, 1, 5, 200, 1 << (p - 2), 3 << p] {
                let mut a = sketch_of(p, n, 7);
                let bytes = a.to_bytes();
                let mut b = Sketch::from_bytes(&bytes).unwrap_or_else(|e| panic!("p {p} n {n}: {e}"));
                assert_eq!(b.to_bytes(), bytes, "p {p} n {n}");
                assert_eq!(b.estimate(), a.estimate());
            }
        }
    }

    /// The forgeries of the hostile-input issue: inner counts that would make the
    /// crate allocate 2^62 registers, and a run of zero bytes.
    #[test]
    fn forged_sizes_are_refused() {
        let mut s = sketch_of(14, 3, 1);
        let mut bytes = s.to_bytes();
        // After version, precision, the inner precision: counts.0 as u64 LE.
        bytes[3..11].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let e = Sketch::from_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("sizes"), "{e}");
        // 64 zero bytes (the hostile suite's literal) are refused for their
        // trailing bytes; the 54 a state of all zeros takes, for its precision.
        let mut zeros = vec![1u8, 14];
        zeros.extend([0u8; 64]);
        let e = Sketch::from_bytes(&zeros).unwrap_err().to_string();
        assert!(e.contains("10 bytes after the end"), "{e}");
        zeros.truncate(2 + 54);
        let e = Sketch::from_bytes(&zeros).unwrap_err().to_string();
        assert!(e.contains("inner precision 0"), "{e}");
        // A length prefix far past the input is refused before any allocation.
        let mut s = sketch_of(14, 3, 1);
        let mut bytes = s.to_bytes();
        bytes[27..35].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(Sketch::from_bytes(&bytes).is_err());
    }

    /// Uses every path of a decoded sketch: estimate, merge both ways with sparse
    /// and dense sketches, encode again.
    fn exercise(mut s: Sketch) {
        let p = s.precision();
        let _ = s.estimate();
        for other in [sketch_of(p, 3, 9), sketch_of(p, 8 << p, 9)] {
            let mut a = s.clone();
            a.merge(&other).unwrap();
            let _ = a.estimate();
            let _ = a.to_bytes();
            let mut b = other.clone();
            b.merge(&s).unwrap();
            let _ = b.estimate();
            let _ = b.to_bytes();
        }
        let bytes = s.to_bytes();
        Sketch::from_bytes(&bytes).expect("a decoded sketch encodes to valid bytes");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
                                       p in MIN_PRECISION..=MAX_PRECISION) {
            let mut bytes = vec![SKETCH_FORMAT_VERSION, p];
            bytes.extend(body);
            if let Ok(s) = Sketch::from_bytes(&bytes) {
                exercise(s);
            }
        }

        #[test]
        fn mutated_sketches_are_refused_or_safe(p in MIN_PRECISION..=12u8,
                                                n in 0u64..20_000,
                                                edits in proptest::collection::vec(
                                                    (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6)) {
            let mut bytes = sketch_of(p, n, 3).to_bytes();
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Ok(s) = Sketch::from_bytes(&bytes) {
                exercise(s);
            }
        }

        #[test]
        fn truncated_or_extended_sketches_are_refused(p in MIN_PRECISION..=12u8, n in 0u64..5_000, cut in 1usize..64) {
            let bytes = sketch_of(p, n, 5).to_bytes();
            let short = &bytes[..bytes.len().saturating_sub(cut)];
            proptest::prop_assert!(Sketch::from_bytes(short).is_err());
            let mut long = bytes.clone();
            long.extend(std::iter::repeat_n(0u8, cut));
            proptest::prop_assert!(Sketch::from_bytes(&long).is_err());
        }
    }
}
