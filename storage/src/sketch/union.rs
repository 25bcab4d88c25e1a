//! Merging encoded sketches straight from their bytes.
//!
//! A distinct count over a rollup merges one stored sketch per rollup row:
//! tens of thousands per query. Decoding each into `hyperloglogplus`'s structure
//! and merging through it (a hash set per sparse merge) is most of such a query's
//! time, so [`SketchUnion`] merges the checked bytes themselves: dense registers
//! by max, sparse hash codes gathered and sorted once, and the crate's structure
//! built once, at the end, from the encoding of the union.
//!
//! The result is the sketch, byte for byte, that merging through the crate
//! ([`Sketch::merge`]) gives. The crate's state after any sequence of merges is a
//! function of the set of hash codes merged: sparse, their sorted list; dense once
//! that list's encoding is longer than the precision's limit (a longer set never
//! encodes shorter, so where the crate converts on the way makes no difference),
//! with each register the largest value any code decodes to for it. Every input
//! is checked as [`Sketch::from_bytes`] checks it ([`super::checked`]).

use super::*;

/// The union of encoded sketches of one precision.
#[derive(Debug, Default)]
pub struct SketchUnion {
    precision: Option<u8>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Hash codes of the sparse inputs, unsorted and with repeats until
    /// [`SketchUnion::normalize`].
    Sparse(Vec<u32>),
    /// One register per byte.
    Dense(Vec<u8>),
}

impl Default for State {
    fn default() -> Self {
        State::Sparse(Vec::new())
    }
}

/// The crate's limit on a sparse list's encoded bytes at precision `p`.
fn sparse_limit(p: u8) -> usize {
    4 * (1usize << p) / REGISTERS_PER_WORD
}

/// The register index and value a sparse hash code stands for, as the crate
/// decodes it (`decode_hash`). `p` is in range and the code was checked.
fn decode(p: u8, code: u32) -> (usize, u8) {
    let p32 = u32::from(p);
    if code & 1 == 1 {
        let zeros = ((code >> 1) & 0x3f) + (SPARSE_PRECISION - p32);
        ((code >> (32 - p32)) as usize, zeros as u8)
    } else {
        let index = (code >> (SPARSE_PRECISION + 1 - p32)) & ((1u32 << p32) - 1);
        let zeros = (code << (32 - SPARSE_PRECISION + p32 - 1)).leading_zeros() + 1;
        (index as usize, zeros as u8)
    }
}

/// Calls `f` with every hash code of a checked sparse list.
fn for_each_code(buf: &[u8], mut f: impl FnMut(u32)) -> Result<(), SketchError> {
    let (mut at, mut last) = (0, 0u32);
    while at < buf.len() {
        let (dif, next) = read_varint(buf, at)?;
        last = last.wrapping_add(dif);
        f(last);
        at = next;
    }
    Ok(())
}

fn push_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl SketchUnion {
    pub fn new() -> Self {
        SketchUnion::default()
    }

    /// Nothing merged yet.
    pub fn is_empty(&self) -> bool {
        self.precision.is_none()
    }

    /// Merges one sketch made by [`Sketch::to_bytes`]; refuses what
    /// [`Sketch::from_bytes`] refuses, and a precision other than the first one's.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        let (p, rest) = match bytes {
            [SKETCH_FORMAT_VERSION, p, rest @ ..] => (*p, rest),
            [SKETCH_FORMAT_VERSION] => return Err(SketchError::Decode("one byte, no precision".into())),
            [v, ..] => return Err(SketchError::Decode(format!("unknown sketch format version {v}"))),
            [] => return Err(SketchError::Decode("empty value".into())),
        };
        if !(MIN_PRECISION..=MAX_PRECISION).contains(&p) {
            return Err(SketchError::Precision(p));
        }
        if let Some(q) = self.precision
            && q != p
        {
            return Err(SketchError::IncompatiblePrecision(q, p));
        }
        let wire = checked(p, rest)?;
        self.precision = Some(p);
        match &wire.registers {
            Some(dense) => {
                let registers = self.densify(p);
                for (w, word) in dense.words.chunks_exact(4).enumerate() {
                    let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    for k in 0..REGISTERS_PER_WORD {
                        if let Some(r) = registers.get_mut(w * REGISTERS_PER_WORD + k) {
                            *r = (*r).max(((word >> (6 * k)) & 0x3f) as u8);
                        }
                    }
                }
            }
            None => match &mut self.state {
                State::Dense(registers) => for_each_code(wire.sparse.buf, |code| {
                    let (i, v) = decode(p, code);
                    if let Some(r) = registers.get_mut(i) {
                        *r = (*r).max(v);
                    }
                })?,
                State::Sparse(codes) => {
                    for_each_code(wire.sparse.buf, |code| codes.push(code))?;
                    // Every code takes a byte at least: past twice the limit
                    // there are repeats to drop, or the union is dense.
                    if codes.len() > 2 * sparse_limit(p) {
                        self.normalize(p);
                    }
                }
            },
        }
        Ok(())
    }

    /// Sorts and dedups the sparse codes; turns dense when they encode longer
    /// than the limit, as the crate does.
    fn normalize(&mut self, p: u8) {
        if let State::Sparse(codes) = &mut self.state {
            codes.sort_unstable();
            codes.dedup();
            if Self::encode_sparse(codes).len() > sparse_limit(p) {
                self.densify(p);
            }
        }
    }

    /// The registers, converting the sparse codes first.
    fn densify(&mut self, p: u8) -> &mut Vec<u8> {
        if let State::Sparse(codes) = &self.state {
            let mut registers = vec![0u8; 1 << p];
            for &code in codes {
                let (i, v) = decode(p, code);
                if let Some(r) = registers.get_mut(i) {
                    *r = (*r).max(v);
                }
            }
            self.state = State::Dense(registers);
        }
        match &mut self.state {
            State::Dense(registers) => registers,
            State::Sparse(_) => unreachable!("converted above"),
        }
    }

    /// Sorted, distinct codes as the crate's difference-varint list.
    fn encode_sparse(codes: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(codes.len() * 2);
        let mut last = 0;
        for &c in codes {
            push_varint(&mut out, c - last);
            last = c;
        }
        out
    }

    /// The union as a sketch; `None` when nothing was merged.
    pub fn finish(&mut self) -> Result<Option<Sketch>, SketchError> {
        let Some(p) = self.precision else { return Ok(None) };
        self.normalize(p);
        let registers = 1u64 << p;
        let mut out = vec![SKETCH_FORMAT_VERSION, p, p];
        for n in [registers, 1u64 << (SPARSE_PRECISION - 1), sparse_limit(p) as u64] {
            out.extend(n.to_le_bytes());
        }
        out.extend(0u64.to_le_bytes()); // the temporary set, folded
        match &self.state {
            State::Sparse(codes) => {
                let buf = Self::encode_sparse(codes);
                out.extend((codes.len() as u64).to_le_bytes());
                out.extend(codes.last().copied().unwrap_or(0).to_le_bytes());
                out.extend((buf.len() as u64).to_le_bytes());
                out.extend(buf);
                out.push(0);
            }
            State::Dense(regs) => {
                out.extend(0u64.to_le_bytes());
                out.extend(0u32.to_le_bytes());
                out.extend(0u64.to_le_bytes());
                out.push(1);
                let words = regs.chunks(REGISTERS_PER_WORD);
                out.extend((words.len() as u64).to_le_bytes());
                for word in words {
                    let packed = word.iter().enumerate().fold(0u32, |w, (k, &r)| w | u32::from(r) << (6 * k));
                    out.extend(packed.to_le_bytes());
                }
                out.extend(registers.to_le_bytes());
                out.extend((regs.iter().filter(|&&r| r == 0).count() as u64).to_le_bytes());
            }
        }
        Sketch::from_bytes(&out).map(Some)
    }

    /// Approximate heap size in bytes.
    pub fn heap_bytes(&self) -> usize {
        match &self.state {
            State::Sparse(codes) => codes.capacity() * 4,
            State::Dense(registers) => registers.capacity(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sketches of overlapping ranges of values, small (sparse) to large (dense).
    fn sketches(p: u8, sizes: &[(u32, u32)]) -> Vec<Sketch> {
        sizes
            .iter()
            .map(|&(from, n)| {
                let mut s = Sketch::new(p).unwrap();
                (from..from + n).for_each(|i| s.insert_str(&format!("card-{i}")));
                s
            })
            .collect()
    }

    /// The union from bytes against merging through the crate, byte for byte.
    fn check(p: u8, sizes: &[(u32, u32)]) {
        let mut parts = sketches(p, sizes);
        let mut through_crate = Sketch::new(p).unwrap();
        let mut union = SketchUnion::new();
        for s in &mut parts {
            through_crate.merge(s).unwrap();
            union.merge_bytes(&s.to_bytes()).unwrap();
        }
        let mut got = union.finish().unwrap().expect("merged something");
        assert_eq!(got.to_bytes(), through_crate.to_bytes(), "precision {p}, parts {sizes:?}");
        assert_eq!(got.estimate(), through_crate.estimate());
    }

    #[test]
    fn the_union_from_bytes_is_the_crate_s_merge() {
        for p in [4, 10, 12, 14] {
            // Sparse only, staying sparse; sparse turning dense; dense and sparse
            // in either order; one input.
            check(p, &[(0, 5), (3, 7), (100, 20)]);
            check(p, &[(0, 200), (150, 400), (1_000, 900), (5_000, 3_000)]);
            check(p, &[(0, 50_000), (10, 30), (40_000, 20_000)]);
            check(p, &[(7, 30), (0, 50_000)]);
            check(p, &[(0, 1)]);
            // Many small sparse ones past twice the limit in codes.
            let many: Vec<(u32, u32)> = (0..400).map(|i| (i * 13, 40)).collect();
            check(p, &many);
        }
    }

    #[test]
    fn nothing_merged_is_none_and_bad_input_is_refused_as_from_bytes_refuses_it() {
        let mut union = SketchUnion::new();
        assert!(union.is_empty());
        assert!(union.finish().unwrap().is_none());
        let mut s = Sketch::new(12).unwrap();
        s.insert_str("x");
        let good = s.to_bytes();
        for bad in [vec![], vec![1], vec![2, 12], vec![1, 40], good[..good.len() - 1].to_vec()] {
            let want = Sketch::from_bytes(&bad).unwrap_err().to_string();
            assert_eq!(SketchUnion::new().merge_bytes(&bad).unwrap_err().to_string(), want);
        }
        union.merge_bytes(&good).unwrap();
        let other = Sketch::new(14).unwrap().to_bytes();
        assert!(matches!(union.merge_bytes(&other), Err(SketchError::IncompatiblePrecision(12, 14))));
        assert_eq!(union.finish().unwrap().unwrap().estimate(), 1);
    }
}
