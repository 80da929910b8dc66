//! Fault injection for testing: drop a fraction of the frames a service receives.
//!
//! The machine has no `tc netem` (no kernel modules), and a kernel-bypass path would not
//! pass through it anyway, so loss is injected where frames enter the service, like
//! smoltcp's `phy::FaultInjector`: [`RxDropper`] decides per received frame, and
//! [`crate::device::PipeDevice`] hands a dropped frame's buffer straight back to its sender.
//! Set `DOCKNET_DROP_RX` on two services to make both directions of their traffic lossy.
//!
//! Off by default; when off it costs one branch per frame.

/// Environment variable: the fraction of received frames to drop, as `0.01` or `1%`.
pub const DROP_ENV: &str = "DOCKNET_DROP_RX";
/// Environment variable: seed for the drop decisions (same seed, same pattern).
pub const SEED_ENV: &str = "DOCKNET_DROP_SEED";

/// Decides which received frames to drop: each one with probability `per_million / 10^6`,
/// from a xorshift generator (no allocation, no syscall).
#[derive(Clone, Debug)]
pub struct RxDropper {
    per_million: u32,
    state: u64,
    /// Frames dropped so far.
    pub dropped: u64,
}

/// A `DOCKNET_DROP_RX` value that is not a fraction in [0, 1] or a percentage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDropRate(pub String);

impl std::fmt::Display for BadDropRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{DROP_ENV}={:?}: expected a fraction of received frames to drop, 0..1 (e.g. 0.01) or a percentage (e.g. 1%)",
            self.0
        )
    }
}

impl std::error::Error for BadDropRate {}

impl RxDropper {
    /// Drops nothing.
    pub fn off() -> RxDropper {
        RxDropper::new(0, 1)
    }

    /// Drop `per_million` frames in a million on average, decided by `seed`.
    pub fn new(per_million: u32, seed: u64) -> RxDropper {
        RxDropper {
            per_million: per_million.min(1_000_000),
            // xorshift must not start at 0.
            state: seed | 1,
            dropped: 0,
        }
    }

    /// From `DOCKNET_DROP_RX` and `DOCKNET_DROP_SEED` (default seed 1).
    pub fn from_env() -> Result<RxDropper, BadDropRate> {
        let Ok(v) = std::env::var(DROP_ENV) else {
            return Ok(RxDropper::off());
        };
        let per_million = parse_rate(&v)?;
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        Ok(RxDropper::new(per_million, seed))
    }

    /// True if the injector drops anything at all.
    pub fn is_on(&self) -> bool {
        self.per_million > 0
    }

    /// Decide for the next received frame.
    #[inline]
    pub fn should_drop(&mut self) -> bool {
        if self.per_million == 0 {
            return false;
        }
        // xorshift64
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        let drop = (x % 1_000_000) < u64::from(self.per_million);
        self.dropped += u64::from(drop);
        drop
    }
}

/// `0.01` or `1%` → 10,000 per million.
pub fn parse_rate(s: &str) -> Result<u32, BadDropRate> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=scale).contains(&f) => {
            Ok((f / scale * 1_000_000.0).round() as u32)
        }
        _ => Err(BadDropRate(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fractions_and_percentages() {
        assert_eq!(parse_rate("0.01"), Ok(10_000));
        assert_eq!(parse_rate("1%"), Ok(10_000));
        assert_eq!(parse_rate(" 2.5 % "), Ok(25_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("1"), Ok(1_000_000));
        assert_eq!(parse_rate("100%"), Ok(1_000_000));
        for bad in ["", "x", "-0.1", "1.5", "101%", "NaN", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BadDropRate("x".into()).to_string().contains(DROP_ENV));
    }

    #[test]
    fn drops_about_the_asked_fraction_and_is_repeatable() {
        let run = |seed| {
            let mut d = RxDropper::new(10_000, seed);
            (0..200_000).filter(|_| d.should_drop()).count()
        };
        let n = run(7);
        // 1% of 200,000 = 2,000; a binomial's sd here is ~44.
        assert!((1_700..=2_300).contains(&n), "dropped {n}");
        assert_eq!(n, run(7));
        let mut off = RxDropper::off();
        assert!(!off.is_on());
        assert!((0..10_000).all(|_| !off.should_drop()));
        let mut all = RxDropper::new(1_000_000, 3);
        assert!((0..10_000).all(|_| all.should_drop()));
        assert_eq!(all.dropped, 10_000);
    }
}
