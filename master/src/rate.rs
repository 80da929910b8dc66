//! Per-pipe rate limits: the paper's two-timer token bucket, kept by the data path.
//!
//! A limit counts whole Ethernet frames (headers included) that the service sends through
//! the master, to other pipes and to the NIC. Fast channels bypass the master and are not
//! limited. Frames the data path does not take stay in the service's TX ring: the service
//! sees its TCP segments acknowledged later (and its UDP sends refused once the ring is
//! full), so a limit slows the sender down without dropping anything.
//!
//! - **Fine timer** ([`RatePeriods::fine`], `docknetd --rate-fine-us`): every fine tick
//!   adds `rate × fine` bytes of tokens. Ticks are counted on a grid, not added per
//!   refill, so how often the data path looks (every round, or after a sleep) changes
//!   nothing: the credit after `k` ticks is exactly `⌊k × fine × rate⌋` bytes.
//! - **Coarse timer** ([`RatePeriods::coarse`], `docknetd --rate-coarse-ms`): at every
//!   coarse tick the bucket is reset — tokens left unspent are dropped (a debt is kept).
//!   A pipe that was silent for a long time therefore sends at most one coarse period's
//!   worth at once ([`TokenBucket::burst`]): it cannot save up.
//! - **Overdraft**: a frame may be taken whenever the bucket holds more than zero tokens;
//!   its whole length is then subtracted, so the count may go negative by less than one
//!   frame. The data path never needs to look at a frame before deciding (the ring has no
//!   peek), a frame larger than a coarse period's credit still passes, and the debt is
//!   paid back before the next frame: the long-run rate is exact.
//!
//! Both timers are virtual: the data path reads the clock once per round (only while some
//! pipe is limited) and [`TokenBucket::refill`] works out which ticks have passed; while
//! a throttled pipe waits, the data path sleeps exactly until the tick that makes its
//! tokens positive ([`TokenBucket::wait_time`]).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Highest limit accepted, in Mbit/s (1 Tbit/s).
pub const MAX_RATE_MBPS: u64 = 1_000_000;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A rate in Mbit/s (as users give it) as bytes per second. Errors are one line: 0 is
/// refused (a pipe that may send nothing is better removed; `rate set NAME off` lifts a
/// limit), as is anything above [`MAX_RATE_MBPS`].
pub fn bytes_per_sec_from_mbps(mbps: u64) -> Result<NonZeroU64, String> {
    if mbps == 0 || mbps > MAX_RATE_MBPS {
        return Err(format!(
            "invalid rate limit {mbps} Mbit/s: must be 1..={MAX_RATE_MBPS} \
             (to remove a limit: docknetctl rate set NAME off)"
        ));
    }
    // mbps <= 1e6, so the product (<= 1.25e11) cannot overflow.
    NonZeroU64::new(mbps * 125_000).ok_or_else(|| "invalid rate limit 0".to_string())
}

/// The two timers of every pipe's bucket (one setting for the whole daemon).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePeriods {
    /// Tokens are added every `fine` (`rate × fine` bytes at a time).
    fine: Duration,
    /// Unspent tokens are dropped every `coarse`.
    coarse: Duration,
}

impl RatePeriods {
    /// Default fine period: 10 µs (at 1 Gbit/s, 1250 bytes of tokens per tick: less than
    /// one full-size frame, so sending stays smooth).
    pub const DEFAULT_FINE: Duration = Duration::from_micros(10);
    /// Default coarse period: 4 ms. It is also how long the data path may be kept off its
    /// core (by other threads, on a host with more busy threads than cores) without a
    /// backlogged pipe losing its share: tokens not spent before a reset are lost.
    /// Measured on the 2-core VM with both cores busy with other work, a 2000 Mbit/s pipe
    /// got 1000–1200 Mbit/s with a 4 ms cap on saved tokens and 500–670 Mbit/s with 1 ms.
    pub const DEFAULT_COARSE: Duration = Duration::from_millis(4);
    /// Bounds accepted for the fine period, in µs.
    pub const FINE_US: std::ops::RangeInclusive<u64> = 1..=100_000;
    /// Bounds accepted for the coarse period, in ms.
    pub const COARSE_MS: std::ops::RangeInclusive<u64> = 1..=10_000;

    /// Periods from `docknetd --rate-fine-us N --rate-coarse-ms M`. Errors are one line
    /// naming the option: each within its bounds, and the coarse period at least as long
    /// as the fine one (a reset between two ticks would drop every token).
    pub fn new(fine_us: u64, coarse_ms: u64) -> Result<Self, String> {
        if !Self::FINE_US.contains(&fine_us) {
            return Err(format!(
                "invalid --rate-fine-us {fine_us}: must be {}..={} microseconds",
                Self::FINE_US.start(),
                Self::FINE_US.end()
            ));
        }
        if !Self::COARSE_MS.contains(&coarse_ms) {
            return Err(format!(
                "invalid --rate-coarse-ms {coarse_ms}: must be {}..={} milliseconds",
                Self::COARSE_MS.start(),
                Self::COARSE_MS.end()
            ));
        }
        if coarse_ms * 1000 < fine_us {
            return Err(format!(
                "invalid rate timers: the coarse period ({coarse_ms} ms) is shorter than the \
                 fine one ({fine_us} µs), so every token would be dropped before it is spent"
            ));
        }
        Ok(RatePeriods {
            fine: Duration::from_micros(fine_us),
            coarse: Duration::from_millis(coarse_ms),
        })
    }

    /// How often tokens are added.
    pub fn fine(&self) -> Duration {
        self.fine
    }

    /// How often unspent tokens are dropped.
    pub fn coarse(&self) -> Duration {
        self.coarse
    }
}

impl Default for RatePeriods {
    fn default() -> Self {
        RatePeriods {
            fine: Self::DEFAULT_FINE,
            coarse: Self::DEFAULT_COARSE,
        }
    }
}

/// A token bucket measured in bytes, with a fine timer that adds tokens and a coarse
/// timer that resets them (see the module docs).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    bytes_per_sec: NonZeroU64,
    /// The fine period in ns (>= 1).
    fine_ns: u64,
    /// The coarse period in ns (>= fine_ns).
    coarse_ns: u64,
    /// Time zero of both tick grids.
    epoch: Instant,
    /// The last fine tick whose tokens were added.
    tick: u64,
    /// The coarse period `tick` falls in (its last reset).
    period: u64,
    /// Fine tick from which `credited` counts (the last rate change).
    anchor: u64,
    /// Bytes added since `anchor`: the credit is recomputed from the tick count, so no
    /// fraction of a byte is ever lost however the ticks are grouped.
    credited: u128,
    /// Current tokens; negative after an overdraft (by less than one frame).
    tokens: i64,
    /// The clock of the last refill (what [`wait_time`](Self::wait_time) counts from).
    last: Instant,
}

/// Most tokens a count ever holds: far from overflow whatever is added or taken.
const TOKENS_CAP: i64 = i64::MAX / 2;

impl TokenBucket {
    /// An empty bucket adding `bytes_per_sec` tokens a second on the timers `periods`,
    /// whose grids start at `now`.
    pub fn new(bytes_per_sec: NonZeroU64, periods: RatePeriods, now: Instant) -> Self {
        let ns = |d: Duration| d.as_nanos().clamp(1, u64::MAX as u128) as u64;
        let fine_ns = ns(periods.fine);
        TokenBucket {
            bytes_per_sec,
            fine_ns,
            coarse_ns: ns(periods.coarse).max(fine_ns),
            epoch: now,
            tick: 0,
            period: 0,
            anchor: 0,
            credited: 0,
            tokens: 0,
            last: now,
        }
    }

    /// Tokens added per second.
    pub fn bytes_per_sec(&self) -> NonZeroU64 {
        self.bytes_per_sec
    }

    /// Most tokens the bucket can hold: one coarse period's credit (the largest burst a
    /// pipe sends after a silence, plus at most one frame of overdraft).
    pub fn burst(&self) -> i64 {
        let b = self.bytes_per_sec.get() as u128 * self.coarse_ns as u128 / NANOS_PER_SEC;
        b.min(TOKENS_CAP as u128) as i64
    }

    /// Current tokens (negative after an overdraft).
    pub fn tokens(&self) -> i64 {
        self.tokens
    }

    /// Bytes earned from `anchor` to fine tick `k` (k >= anchor).
    fn credit_to(&self, k: u64) -> u128 {
        // (k - anchor) × fine_ns is a time since the epoch in ns (< 2^64) and the rate is
        // < 2^64: the product fits in u128.
        (k - self.anchor) as u128 * self.fine_ns as u128 * self.bytes_per_sec.get() as u128
            / NANOS_PER_SEC
    }

    /// Add the credit of ticks up to `k` (> self.tick).
    fn add_ticks_to(&mut self, k: u64) {
        let c = self.credit_to(k);
        // tokens >= i64::MIN and the sum is capped at TOKENS_CAP: no overflow in i128.
        let add = (c - self.credited).min(u64::MAX as u128) as i128;
        self.tokens = (self.tokens as i128 + add).min(TOKENS_CAP as i128) as i64;
        self.credited = c;
        self.tick = k;
    }

    /// Add the tokens of every fine tick up to `now`, applying the coarse resets passed on
    /// the way. A `now` earlier than the last refill adds nothing.
    pub fn refill(&mut self, now: Instant) {
        self.last = self.last.max(now);
        let t = self
            .last
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        let k = t / self.fine_ns;
        let period = t / self.coarse_ns;
        if period > self.period {
            // The last reset was at `period × coarse`; ticks before it count first (they
            // pay a debt), then what is left over is dropped.
            let first_after =
                (period as u128 * self.coarse_ns as u128).div_ceil(self.fine_ns as u128);
            let before = (first_after as u64).saturating_sub(1);
            if before > self.tick {
                self.add_ticks_to(before);
            }
            // Only whole bytes were added: the fraction of a byte earned stays in the
            // tick count (`credited` is not reset), so a debt is paid back exactly.
            self.tokens = self.tokens.min(0);
            self.tick = self.tick.max(before);
            self.period = period;
        }
        if k > self.tick {
            self.add_ticks_to(k);
        }
    }

    /// Change the rate from `now` on: tokens earned so far at the old rate are kept, up to
    /// the new rate's [`burst`](Self::burst).
    pub fn set_rate(&mut self, bytes_per_sec: NonZeroU64, now: Instant) {
        self.refill(now);
        self.bytes_per_sec = bytes_per_sec;
        self.anchor = self.tick;
        self.credited = 0;
        self.tokens = self.tokens.min(self.burst());
    }

    /// True if a frame may be taken now (the bucket holds more than zero tokens).
    #[inline]
    pub fn may_send(&self) -> bool {
        self.tokens > 0
    }

    /// Account for a frame of `len` bytes just taken (after [`may_send`](Self::may_send)
    /// said yes; the count may go negative by less than one frame).
    #[inline]
    pub fn take(&mut self, len: usize) {
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// How long from the last refill until [`may_send`](Self::may_send) turns true: until
    /// the fine tick whose credit brings the tokens above zero (zero if they are already).
    /// Resets do not matter here: they only drop tokens above zero.
    pub fn wait_time(&self) -> Duration {
        if self.tokens > 0 {
            return Duration::ZERO;
        }
        // Smallest k with credit_to(k) >= credited + need.
        let need = self.credited + (1 - self.tokens as i128) as u128;
        let per_tick = self.fine_ns as u128 * self.bytes_per_sec.get() as u128;
        let ticks = need.saturating_mul(NANOS_PER_SEC).div_ceil(per_tick);
        let k = (self.anchor as u128)
            .saturating_add(ticks)
            .max(self.tick as u128 + 1);
        let due_ns = k.saturating_mul(self.fine_ns as u128).min(u64::MAX as u128) as u64;
        match self.epoch.checked_add(Duration::from_nanos(due_ns)) {
            Some(due) => due.saturating_duration_since(self.last),
            None => Duration::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nz(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn periods(fine_us: u64, coarse_ms: u64) -> RatePeriods {
        RatePeriods::new(fine_us, coarse_ms).unwrap()
    }

    /// Drive a bucket like the data path does: every `step`, refill, then take frames of
    /// `frame` bytes while tokens last (a sender that always has frames waiting). Returns
    /// the bytes taken over `total`.
    fn simulate(
        b: &mut TokenBucket,
        t0: Instant,
        step: Duration,
        total: Duration,
        frame: usize,
    ) -> u64 {
        let mut sent = 0u64;
        let mut t = Duration::ZERO;
        while t < total {
            t += step;
            b.refill(t0 + t);
            while b.may_send() {
                b.take(frame);
                sent += frame as u64;
                assert!(b.tokens() > -(frame as i64), "overdraft beyond one frame");
            }
        }
        sent
    }

    #[test]
    fn mbps_conversion_and_validation() {
        assert_eq!(bytes_per_sec_from_mbps(1).unwrap().get(), 125_000);
        assert_eq!(bytes_per_sec_from_mbps(200).unwrap().get(), 25_000_000);
        assert_eq!(
            bytes_per_sec_from_mbps(MAX_RATE_MBPS).unwrap().get(),
            125_000_000_000
        );
        for bad in [0, MAX_RATE_MBPS + 1, u64::MAX] {
            let e = bytes_per_sec_from_mbps(bad).unwrap_err();
            assert!(e.contains("invalid rate limit") && e.contains("off"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn periods_are_validated_with_the_option_named() {
        let p = RatePeriods::default();
        assert_eq!(p.fine(), Duration::from_micros(10));
        assert_eq!(p.coarse(), Duration::from_millis(4));
        assert_eq!(RatePeriods::new(10, 4).unwrap(), p);
        assert_eq!(
            RatePeriods::new(1000, 1).unwrap().fine(),
            Duration::from_millis(1)
        );
        for (f, c, want) in [
            (0, 4, "--rate-fine-us 0"),
            (100_001, 1000, "--rate-fine-us 100001"),
            (10, 0, "--rate-coarse-ms 0"),
            (10, 10_001, "--rate-coarse-ms 10001"),
            (5000, 4, "shorter than the fine one"),
        ] {
            let e = RatePeriods::new(f, c).unwrap_err();
            assert!(e.contains(want), "{f} {c}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn long_run_rate_is_accurate() {
        // A backlogged pipe on a data path that sleeps until its tokens are due (what
        // Switch::sleep does): exact, whatever the rate, frame size and timers, with rates
        // of less than one byte per tick and ticks not aligned with the resets.
        for (rate, frame, fine_us, coarse_ms) in [
            (25_000_000u64, 9014usize, 10, 4),
            (25_000_000, 1514, 10, 4),
            (125_000, 1514, 1, 1),       // 1 Mbit/s: 0.125 byte per tick
            (125_000, 1514, 3, 1),       // ticks not aligned with the resets
            (250_000_000, 65014, 10, 4), // 2 Gbit/s, GSO-sized frames
            (12_500_000, 1514, 1000, 10),
            (1_000_000_000, 1514, 7, 1),
        ] {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(nz(rate), periods(fine_us, coarse_ms), t0);
            let total = Duration::from_secs(10);
            let (mut t, mut sent) = (Duration::ZERO, 0u64);
            while t < total {
                b.refill(t0 + t);
                while b.may_send() {
                    b.take(frame);
                    sent += frame as u64;
                    assert!(b.tokens() > -(frame as i64), "overdraft beyond one frame");
                }
                t += b.wait_time();
            }
            let want = rate * 10;
            let slack = frame as u64 + rate * fine_us / 1_000_000 + 1;
            assert!(
                sent + slack >= want && sent <= want + slack,
                "rate {rate} fine {fine_us} µs: sent {sent}, want {want} (±{slack})"
            );
        }
        // A data path that only looks every `step` (busy elsewhere): a reset drops what
        // was earned since its last look, at most one step's credit per coarse period.
        for (rate, step_ns, frame) in [
            (25_000_000u64, 7_000u64, 9014usize),
            (25_000_000, 300_000, 9014),
            (250_000_000, 13_000, 65014),
        ] {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(nz(rate), RatePeriods::default(), t0);
            let total = Duration::from_secs(10);
            let sent = simulate(&mut b, t0, Duration::from_nanos(step_ns), total, frame);
            let want = rate * 10;
            let resets = 10_000 / 4;
            let lost = resets * rate * step_ns / 1_000_000_000;
            assert!(
                sent + lost + frame as u64 >= want && sent <= want + frame as u64,
                "rate {rate} step {step_ns} ns: sent {sent}, want {want} (-{lost})"
            );
        }
    }

    #[test]
    fn tokens_come_in_fine_ticks() {
        // 100 MB/s with a 10 µs tick: 1000 bytes per tick, nothing in between.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(100_000_000), periods(10, 4), t0);
        assert_eq!(b.tokens(), 0);
        b.refill(t0 + Duration::from_nanos(9_999));
        assert_eq!(b.tokens(), 0);
        assert_eq!(b.wait_time(), Duration::from_nanos(1));
        b.refill(t0 + Duration::from_micros(10));
        assert_eq!(b.tokens(), 1000);
        b.refill(t0 + Duration::from_micros(35));
        assert_eq!(b.tokens(), 3000);
    }

    #[test]
    fn the_coarse_reset_drops_saved_tokens_but_keeps_a_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(1_000_000), periods(100, 1), t0); // 100 B per tick
        assert_eq!(b.burst(), 1000);
        b.refill(t0 + Duration::from_micros(999));
        assert_eq!(b.tokens(), 900);
        // The reset at 1 ms drops them; the tick at 1 ms itself counts after it.
        b.refill(t0 + Duration::from_micros(1000));
        assert_eq!(b.tokens(), 100);
        // A long silence: at most one period's credit (since the last reset).
        b.refill(t0 + Duration::from_secs(100) + Duration::from_micros(450));
        assert_eq!(b.tokens(), 500);
        // A debt crosses resets and is paid back by ticks on both sides of them.
        b.take(5500); // -5000
        b.refill(t0 + Duration::from_secs(100) + Duration::from_micros(3450));
        assert_eq!(b.tokens(), -2000);
        b.refill(t0 + Duration::from_secs(101));
        assert_eq!(
            b.tokens(),
            100,
            "debt paid, the rest dropped at the reset at 101 s, then the tick at 101 s"
        );
    }

    #[test]
    fn after_a_silence_the_pipe_sends_one_period_at_most() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(25_000_000), RatePeriods::default(), t0);
        assert_eq!(b.burst(), 100_000, "rate × 4 ms");
        b.refill(t0 + Duration::from_secs(3600) + Duration::from_nanos(3_999_999));
        assert_eq!(
            b.tokens(),
            100_000,
            "400 ticks of 250 bytes, the one at the reset included"
        );
        let mut n = 0;
        while b.may_send() {
            b.take(1514);
            n += 1514;
        }
        assert!((100_000..100_000 + 1514).contains(&n), "{n}");
        assert!(b.wait_time() > Duration::ZERO);
    }

    #[test]
    fn overdraft_is_bounded_by_one_frame_and_wait_time_is_exact() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(1_000_000), periods(1, 1000), t0); // 1 B per µs
        b.refill(t0 + Duration::from_micros(1));
        assert!(b.may_send());
        b.take(65014);
        assert_eq!(b.tokens(), 1 - 65014);
        let w = b.wait_time();
        assert_eq!(w, Duration::from_micros(65014));
        let at = t0 + Duration::from_micros(1) + w;
        b.refill(at - Duration::from_nanos(1));
        assert!(!b.may_send(), "one ns early");
        b.refill(at);
        assert!(b.may_send());
        // Fractions of a byte per tick: 3 bytes/s on a 100 ms tick = 0.3 byte per tick.
        let mut b = TokenBucket::new(nz(3), periods(100_000, 10_000), t0);
        b.refill(t0 + Duration::from_millis(500)); // 1.5 bytes earned: 1 whole
        assert_eq!(b.tokens(), 1);
        b.take(1);
        // The second whole byte is earned at the first tick with 0.3 k >= 2: k = 7, 700 ms.
        assert_eq!(b.wait_time(), Duration::from_millis(200));
        b.refill(t0 + Duration::from_millis(699));
        assert!(!b.may_send());
        b.refill(t0 + Duration::from_millis(700));
        assert!(b.may_send());
    }

    #[test]
    fn rate_change_keeps_earned_tokens_and_applies_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(25_000_000), RatePeriods::default(), t0);
        // 100 µs at 25 MB/s = 2500 bytes earned, then the rate goes up 10×.
        b.set_rate(nz(250_000_000), t0 + Duration::from_micros(100));
        assert_eq!(b.tokens(), 2500);
        assert_eq!(b.burst(), 1_000_000);
        b.refill(t0 + Duration::from_micros(200));
        assert_eq!(b.tokens(), 2500 + 25_000);
        // Lowering the rate caps the tokens at the new burst.
        b.refill(t0 + Duration::from_micros(3990));
        assert_eq!(b.tokens(), 27_500 + 379 * 2500, "no reset before 4 ms");
        b.set_rate(nz(125_000), t0 + Duration::from_micros(3990));
        assert_eq!(b.tokens(), 500);
        let t1 = t0 + Duration::from_micros(3990);
        let sent = simulate(
            &mut b,
            t1,
            Duration::from_micros(50),
            Duration::from_secs(4),
            1514,
        );
        let want = 125_000 * 4;
        assert!(sent + 1514 >= want && sent <= want + 1514 + 500, "{sent}");
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(u64::MAX), RatePeriods::default(), t0);
        let burst = (u64::MAX as u128 * 4_000_000 / NANOS_PER_SEC) as i64;
        assert_eq!(b.burst(), burst);
        b.refill(t0 + Duration::from_secs(1) - Duration::from_nanos(1));
        assert!(b.tokens() > 0 && b.tokens() <= burst);
        b.take(usize::MAX); // clamps to i64::MAX
        assert!(b.tokens() < 0);
        // ~2^63 bytes at ~2^64 bytes/s: about half a second.
        let w = b.wait_time();
        assert!(
            w > Duration::from_millis(490) && w < Duration::from_millis(510),
            "{w:?}"
        );
        b.take(usize::MAX); // saturates at i64::MIN
        assert_eq!(b.tokens(), i64::MIN);
        b.refill(t0 + Duration::from_secs(3));
        assert!(b.tokens() > 0 && b.tokens() <= burst);
        // Elapsed time beyond u64::MAX ns is capped; still no overflow.
        b.refill(t0 + Duration::from_secs(1 << 40));
        assert!(b.tokens() > 0 && b.tokens() <= burst);
        // The largest burst is bounded whatever the timers.
        let b = TokenBucket::new(nz(u64::MAX), periods(10, 10_000), t0);
        assert_eq!(b.burst(), TOKENS_CAP);
        // The smallest rate: 1 byte/s, with the coarsest timers.
        let mut b = TokenBucket::new(nz(1), periods(100_000, 10_000), t0);
        b.take(1514);
        assert_eq!(b.wait_time(), Duration::from_secs(1515));
        b.refill(t0 + Duration::from_secs(1514));
        assert!(!b.may_send());
        b.refill(t0 + Duration::from_secs(1515));
        assert!(b.may_send());
        // Time going backwards adds nothing and does not move the clock back.
        b.refill(t0);
        assert_eq!(b.tokens(), 1);
        // A debt that takes centuries to pay back (the wait is capped at ~584 years).
        let mut b = TokenBucket::new(nz(1), periods(100_000, 10_000), t0);
        b.take(usize::MAX);
        b.take(usize::MAX);
        assert!(b.wait_time() >= Duration::from_secs(100 * 365 * 86_400));
    }

    proptest! {
        /// However the refills are spaced, a backlogged sender gets the same bytes, to
        /// within one frame and one tick, as the exact rate says; never more.
        #[test]
        fn refill_spacing_does_not_change_the_rate(
            rate in 1_000u64..1_000_000_000,
            fine_us in 1u64..2000,
            coarse_ms in 2u64..20,
            steps in proptest::collection::vec(1u64..1500, 1..400),
            frame in 60usize..9014,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(nz(rate), periods(fine_us, coarse_ms), t0);
            let (mut t, mut sent) = (0u64, 0u64);
            for s in &steps {
                t += s; // µs
                b.refill(t0 + Duration::from_micros(t));
                while b.may_send() {
                    b.take(frame);
                    sent += frame as u64;
                }
                prop_assert!(b.tokens() > -(frame as i64));
            }
            // Upper bound: everything earned (no reset can add) plus one frame.
            let earned = (rate as u128 * t as u128 / 1_000_000) as u64;
            prop_assert!(sent <= earned + frame as u64, "sent {} earned {}", sent, earned);
            // Lower bound: a refill gap longer than the coarse period drops up to one
            // period's credit at each reset it crosses; spend happens at refills only.
            let gap_loss: u64 = steps
                .iter()
                .map(|s| {
                    let resets = s / (coarse_ms * 1000) + 1;
                    (rate as u128 * (*s).min(coarse_ms * 1000) as u128 * resets as u128
                        / 1_000_000) as u64
                })
                .sum();
            let tick = rate * fine_us / 1_000_000 + 1;
            prop_assert!(
                sent + gap_loss + tick + frame as u64 >= earned,
                "sent {} earned {} loss bound {}", sent, earned, gap_loss
            );
        }

        /// A bucket never holds more than one coarse period's credit plus a tick, and
        /// wait_time always names the first instant at which it may send.
        #[test]
        fn burst_bound_and_wait_time(
            rate in 1u64..10_000_000_000,
            fine_us in 1u64..5000,
            coarse_ms in 5u64..50,
            steps in proptest::collection::vec((0u64..20_000, 0usize..70_000), 1..100),
        ) {
            let t0 = Instant::now();
            let p = periods(fine_us, coarse_ms);
            let mut b = TokenBucket::new(nz(rate), p, t0);
            let mut t = Duration::ZERO;
            for (dt, take) in steps {
                t += Duration::from_micros(dt);
                b.refill(t0 + t);
                prop_assert!(b.tokens() <= b.burst() + (rate * fine_us / 1_000_000) as i64 + 1);
                if b.may_send() {
                    b.take(take);
                } else {
                    let w = b.wait_time();
                    prop_assert!(w > Duration::ZERO);
                    let mut early = b.clone();
                    early.refill(t0 + t + w - Duration::from_nanos(1));
                    prop_assert!(!early.may_send() || w == Duration::from_nanos(1));
                    let mut due = b.clone();
                    due.refill(t0 + t + w);
                    prop_assert!(due.may_send(), "wait {:?} not enough", w);
                }
            }
        }
    }
}
