//! Per-point statistics: percentiles over round-trip times and the JSON line
//! every client (ours and `dn-echo client --json`) prints.

use serde::{Deserialize, Serialize};

/// One measured point, exactly the JSON schema of `dn-echo client --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub size: usize,
    pub count: usize,
    pub rtt_us_p50: f64,
    pub rtt_us_p99: f64,
    pub one_way_us_p50: f64,
    pub one_way_us_p99: f64,
    pub goodput_gbps: f64,
    pub elapsed_s: f64,
}

/// Of several runs of one point, the run whose `key` is the median (of an even number,
/// the lower of the middle two); `runs` must not be empty.
pub fn median_run_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove((runs.len() - 1) / 2)
}

/// Each run's `key`, with `decimals`, separated by spaces (for progress and errors).
pub fn keys_of<T>(runs: &[T], key: impl Fn(&T) -> f64, decimals: usize) -> String {
    let all: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.decimals$}", key(r)))
        .collect();
    all.join(" ")
}

/// Run one point `n` times (`run(label)`, the label naming the run when there are
/// several) and keep the run whose `key` is the median. With several runs, every run's
/// key is printed (in `unit`, with `decimals`); a failing run ends the point, its error
/// naming the runs before it.
pub fn median_of_runs<T>(
    n: usize,
    name: &str,
    (unit, decimals): (&str, usize),
    key: impl Fn(&T) -> f64,
    mut run: impl FnMut(&str) -> Result<T, String>,
) -> Result<T, String> {
    let n = n.max(1);
    let keys = |runs: &[T]| keys_of(runs, &key, decimals);
    let mut runs = Vec::with_capacity(n);
    for i in 1..=n {
        let label = if n > 1 {
            format!("{name} (run {i} of {n})")
        } else {
            name.to_string()
        };
        match run(&label) {
            Ok(r) => runs.push(r),
            Err(e) if runs.is_empty() => return Err(e),
            Err(e) => return Err(format!("{e} (runs before it: {} {unit})", keys(&runs))),
        }
    }
    if n > 1 {
        eprint!("runs {} {unit}, median: ", keys(&runs));
    }
    Ok(median_run_by(runs, key))
}

/// The median of `v`'s finite values (the mean of the middle two for an even count);
/// `None` if there are none.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile of an ascending-sorted slice: the smallest value
/// such that at least `p` percent of the samples are <= it.
/// `p` is clamped to [0, 100]; an empty slice gives `None`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize; // 1-based
    let idx = rank.clamp(1, n) - 1;
    Some(sorted[idx])
}

/// Builds the result for `size`-byte messages from per-message round-trip
/// times in nanoseconds. Elapsed time is the sum of the round trips.
pub fn summarize(size: usize, rtts_ns: &[u64]) -> PointResult {
    let mut us: Vec<f64> = rtts_ns.iter().map(|&ns| ns as f64 / 1000.0).collect();
    us.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&us, 50.0).unwrap_or(0.0);
    let p99 = percentile(&us, 99.0).unwrap_or(0.0);
    let elapsed_s = rtts_ns.iter().map(|&ns| ns as f64).sum::<f64>() / 1e9;
    PointResult {
        size,
        count: rtts_ns.len(),
        rtt_us_p50: p50,
        rtt_us_p99: p99,
        one_way_us_p50: p50 / 2.0,
        one_way_us_p99: p99 / 2.0,
        goodput_gbps: goodput_gbps(size, rtts_ns.len(), elapsed_s),
        elapsed_s,
    }
}

/// Payload bits in one direction per second, in Gbit/s.
pub fn goodput_gbps(size: usize, count: usize, elapsed_s: f64) -> f64 {
    if elapsed_s <= 0.0 {
        return 0.0;
    }
    size as f64 * count as f64 * 8.0 / elapsed_s / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_of_median_key_is_reported_whole() {
        let runs = || vec![(30.0, "c"), (10.0, "a"), (20.0, "b")];
        assert_eq!(median_run_by(runs(), |r| r.0), (20.0, "b"));
        assert_eq!(median_run_by(runs()[..2].to_vec(), |r| r.0), (10.0, "a"));
        assert_eq!(median_run_by(vec![(5.0, "x")], |r| r.0), (5.0, "x"));
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 150.0), Some(100.0));
    }

    #[test]
    fn percentile_small_and_empty() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 51.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        // 10 samples: p99 is the largest.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
    }

    #[test]
    fn summarize_computes_one_way_and_goodput() {
        // 4 messages of 1000 bytes, each RTT 100 µs (unordered input).
        let r = summarize(1000, &[100_000, 100_000, 100_000, 100_000]);
        assert_eq!(r.count, 4);
        assert!((r.rtt_us_p50 - 100.0).abs() < 1e-9);
        assert!((r.one_way_us_p50 - 50.0).abs() < 1e-9);
        assert!((r.elapsed_s - 400e-6).abs() < 1e-12);
        // 4000 bytes * 8 / 400 µs = 80 Mbit/s.
        assert!((r.goodput_gbps - 0.08).abs() < 1e-9);
        let r = summarize(10, &[300, 100, 200]);
        assert!((r.rtt_us_p50 - 0.2).abs() < 1e-9);
        assert!((r.rtt_us_p99 - 0.3).abs() < 1e-9);
    }

    #[test]
    fn json_round_trip() {
        let line = r#"{"size":1024,"count":10,"rtt_us_p50":130.5,"rtt_us_p99":200.0,"one_way_us_p50":65.25,"one_way_us_p99":100.0,"goodput_gbps":0.06,"elapsed_s":0.0013}"#;
        let r: PointResult = serde_json::from_str(line).unwrap();
        assert_eq!(r.size, 1024);
        let back: PointResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
