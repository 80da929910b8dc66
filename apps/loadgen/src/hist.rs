//! A fixed-size log-linear latency histogram (HdrHistogram-like): recording never
//! allocates, values below 128 ns are exact and larger ones are kept to within 1/64
//! (< 1.6 %), plus an exact count, sum, sum of squares and maximum.

/// Sub-buckets per power of two above the exact range.
const SUB: u64 = 64;
/// Values below this are recorded exactly.
const EXACT: u64 = 2 * SUB;
/// Enough buckets for any u64.
const BUCKETS: usize = (EXACT + (64 - 7) * SUB) as usize;

/// Latencies in nanoseconds.
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    n: u64,
    sum: f64,
    sum_sq: f64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros()); // >= 7
    let shift = msb - 6; // >= 1: v >> shift is in [64, 128)
    let top = v >> shift;
    (EXACT + (shift - 1) * SUB + (top - SUB)) as usize
}

/// The largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let top = (i - EXACT) % SUB + SUB;
    ((top + 1) << shift).wrapping_sub(1)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
            max: 0,
        }
    }

    /// Record one value (ns).
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        let f = v as f64;
        self.sum += f;
        self.sum_sq += f * f;
        self.max = self.max.max(v);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Population standard deviation.
    pub fn stdev(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / self.n as f64 - m * m).max(0.0).sqrt()
    }

    /// Nearest-rank percentile (`p` in 0..=100): the smallest recorded bucket such that
    /// at least `p` % of the values are in it or below, reported as the bucket's upper
    /// bound (never above the maximum). 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let p = p.clamp(0.0, 100.0);
        let rank = ((p / 100.0 * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    /// Percentage of values within one standard deviation of the mean (wrk's "+/- Stdev").
    pub fn within_stdev(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let (m, s) = (self.mean(), self.stdev());
        let (lo, hi) = (m - s, m + s);
        let inside: u64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(i, &c)| {
                let v = upper(i).min(self.max) as f64;
                c > 0 && v >= lo && v <= hi
            })
            .map(|(_, &c)| c)
            .sum();
        inside as f64 * 100.0 / self.n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev = None;
        for i in 0..BUCKETS {
            let u = upper(i);
            if let Some(p) = prev {
                assert!(u > p, "bucket {i}: {u} <= {p}");
            }
            assert_eq!(index(u), i, "upper({i}) = {u}");
            if u < u64::MAX {
                assert_eq!(index(u + 1), i + 1);
            }
            prev = Some(u);
        }
        assert_eq!(upper(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn relative_error_is_small() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            12_345,
            999_999,
            1 << 40,
            u64::MAX / 3,
        ] {
            let u = upper(index(v));
            assert!(u >= v);
            assert!((u - v) as f64 <= v as f64 / 64.0 + 1.0, "{v} -> {u}");
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), 0);
        for v in 1..=100u64 {
            h.record(v);
        }
        // Exact range: nearest rank.
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.n, 100);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
        // Population stdev of 1..=100 = sqrt((100^2 - 1) / 12).
        assert!((h.stdev() - (9999.0f64 / 12.0).sqrt()).abs() < 1e-6);
        let w = h.within_stdev();
        assert!((57.0..=59.0).contains(&w), "{w}");
    }

    #[test]
    fn percentiles_of_large_values_within_precision() {
        let mut h = Histogram::new();
        for i in 0..10_000u64 {
            h.record(10_000 + i * 100); // 10 µs .. ~1 ms
        }
        for (p, exact) in [(50.0, 10_000 + 4_999 * 100), (99.0, 10_000 + 9_899 * 100)] {
            let got = h.percentile(p) as f64;
            let exact = exact as f64;
            assert!(
                got >= exact && got <= exact * 1.02,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), h.max());
        assert_eq!(h.max(), 10_000 + 9_999 * 100);
    }
}
