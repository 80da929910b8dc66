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
}

/// A bad `DOCKNET_DROP_RX` (not a fraction in [0, 1] or a percentage, or a nonzero rate
/// below one in a million) or `DOCKNET_DROP_SEED` (not an unsigned integer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadDropRate {
    Rate(String),
    TooSmall(String),
    Seed(String),
}

impl std::fmt::Display for BadDropRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadDropRate::Rate(v) => write!(
                f,
                "{DROP_ENV}={v:?}: expected a fraction of received frames to drop, 0..1 (e.g. 0.01) or a percentage (e.g. 1%)"
            ),
            BadDropRate::TooSmall(v) => write!(
                f,
                "{DROP_ENV}={v:?}: below the smallest rate, one frame in a million (0.000001 or 0.0001%)"
            ),
            BadDropRate::Seed(v) => {
                write!(f, "{SEED_ENV}={v:?}: expected an unsigned integer")
            }
        }
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
        // splitmix64 spreads nearby seeds apart; xorshift must not start at 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        RxDropper {
            per_million: per_million.min(1_000_000),
            state: if z == 0 { 1 } else { z },
        }
    }

    /// From `DOCKNET_DROP_RX` and `DOCKNET_DROP_SEED` (default seed 1).
    pub fn from_env() -> Result<RxDropper, BadDropRate> {
        let Ok(v) = std::env::var(DROP_ENV) else {
            return Ok(RxDropper::off());
        };
        let per_million = parse_rate(&v)?;
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => s.trim().parse().map_err(|_| BadDropRate::Seed(s))?,
            Err(_) => 1,
        };
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
        (x % 1_000_000) < u64::from(self.per_million)
    }
}

/// `0.01` or `1%` → 10,000 per million. Decimal digits are read as integers (no float
/// parsing: it would add ~20 KB of code to every static service); digits past a
/// millionth are truncated.
pub fn parse_rate(s: &str) -> Result<u32, BadDropRate> {
    let bad = || BadDropRate::Rate(s.to_string());
    let t = s.trim();
    let (num, percent) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || int.len() > 3 {
        return Err(bad());
    }
    // The value in millionths of a percent (percent) or millionths of a unit (fraction).
    let mut micro: u64 = int.parse::<u64>().unwrap_or(0) * 1_000_000;
    let mut scale = 100_000;
    for b in frac.bytes().take(6) {
        micro += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    let nonzero = int.bytes().chain(frac.bytes()).any(|b| b != b'0');
    let per_million = if percent { micro / 100 } else { micro };
    if per_million > 1_000_000 {
        return Err(bad());
    }
    if per_million == 0 && nonzero {
        return Err(BadDropRate::TooSmall(s.to_string()));
    }
    Ok(per_million as u32)
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
        assert_eq!(parse_rate(".5"), Ok(500_000));
        assert_eq!(parse_rate("0.000001"), Ok(1));
        assert_eq!(parse_rate("0.0001%"), Ok(1));
        assert_eq!(parse_rate("0.5%"), Ok(5_000));
        assert_eq!(parse_rate("0.0000019"), Ok(1));
        for bad in [
            "", "x", "-0.1", "1.5", "101%", "NaN", "inf", ".", "%", "1e-3", "0.1.2",
        ] {
            assert!(
                matches!(parse_rate(bad), Err(BadDropRate::Rate(_))),
                "{bad:?} accepted"
            );
        }
        for tiny in ["0.0000001", "0.00001%"] {
            assert_eq!(parse_rate(tiny), Err(BadDropRate::TooSmall(tiny.into())));
        }
        assert!(BadDropRate::Rate("x".into()).to_string().contains(DROP_ENV));
        assert!(BadDropRate::Seed("x".into()).to_string().contains(SEED_ENV));
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
        // Neighbouring seeds give different patterns.
        let pattern = |seed| {
            let mut d = RxDropper::new(500_000, seed);
            (0..64).map(|_| d.should_drop()).collect::<Vec<_>>()
        };
        assert_ne!(pattern(2), pattern(3));
    }
}
