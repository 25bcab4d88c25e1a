//! Order-independent floating-point sums.
//!
//! Rollup sums must not depend on the order in which partitions interleave, or a
//! replay would give different last bits. `ExactSum` keeps Shewchuk's non-overlapping
//! partials (the algorithm behind Python's `math.fsum`), so its value is the exact
//! sum of its inputs, correctly rounded once: the same for any order of addition.

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactSum {
    partials: Vec<f64>,
    /// Sum of non-finite inputs (inf, -inf, NaN), added naively.
    special: Option<f64>,
}

impl ExactSum {
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special = Some(self.special.unwrap_or(0.0) + x);
            return;
        }
        let mut x = x;
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
            if !x.is_finite() {
                // Overflow of the exact sum: fall back to the infinite result.
                self.special = Some(self.special.unwrap_or(0.0) + x);
                self.partials.clear();
                return;
            }
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    pub fn merge(&mut self, other: &ExactSum) {
        for p in &other.partials {
            self.add(*p);
        }
        if let Some(s) = other.special {
            self.special = Some(self.special.unwrap_or(0.0) + s);
        }
    }

    /// The correctly rounded sum.
    pub fn value(&self) -> f64 {
        if let Some(s) = self.special {
            return s;
        }
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            let y = p[n - 1];
            n -= 1;
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }

    /// The state, to save it: the partials and the non-finite sum.
    pub fn parts(&self) -> (Vec<f64>, Option<f64>) {
        (self.partials.clone(), self.special)
    }

    /// A state saved with [`ExactSum::parts`].
    pub fn from_parts(partials: Vec<f64>, special: Option<f64>) -> ExactSum {
        ExactSum { partials, special }
    }

    pub fn heap_bytes(&self) -> usize {
        self.partials.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_where_naive_is_not() {
        let mut s = ExactSum::default();
        for x in [1e100, 1.0, -1e100, 0.1, 0.2] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.3);
        assert_eq!(ExactSum::default().value(), 0.0);
    }

    proptest! {
        #[test]
        fn order_does_not_matter(mut xs in proptest::collection::vec(-1e6f64..1e6, 0..60), seed in any::<u64>()) {
            let mut a = ExactSum::default();
            for x in &xs { a.add(*x); }
            // A deterministic shuffle.
            let mut s = seed | 1;
            for i in (1..xs.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                xs.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let (left, right) = xs.split_at(xs.len() / 2);
            let mut b = ExactSum::default();
            for x in left { b.add(*x); }
            let mut c = ExactSum::default();
            for x in right { c.add(*x); }
            b.merge(&c);
            prop_assert_eq!(a.value().to_bits(), b.value().to_bits());
        }
    }
}
