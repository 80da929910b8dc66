//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4), with Katran's weighted variant.
//!
//! A lookup table of a prime size M maps a flow hash to a backend index. Each backend
//! walks its own permutation of the table (`offset + j * skip mod M`, offset and skip
//! from two different hashes of the backend's stable key) and claims the next free entry
//! of it in turn until the table is full. Every backend therefore gets nearly the same
//! number of entries, and when a backend is added or removed most entries (hence most
//! flows) keep their backend.
//!
//! Weights (as Katran does): in each round of the population loop every backend adds its
//! weight to a credit and takes a turn only when the credit reaches the largest weight
//! (then pays that much). The heaviest backends take a turn every round, one of half the
//! weight every other round, and so on, so the shares of entries are proportional to the
//! weights; with equal weights this is exactly the paper's loop. Weight 0 takes no entries.
//!
//! Backends take their turns in the order of their keys (the paper leaves the order open),
//! so the table is a function of the set of (key, index, weight) alone.

use std::fmt;

/// The table size the NAT uses unless told otherwise: the prime the paper uses, large
/// enough (M >> number of backends) for even shares and small disruption.
pub const DEFAULT_TABLE_SIZE: usize = 65537;
/// The largest table size accepted (a 2 MiB table; build time grows with it).
pub const MAX_TABLE_SIZE: usize = 1 << 20;
/// The sentinel stored in table entries that belong to no backend.
pub const NO_BACKEND: u16 = u16::MAX;
/// Backend indices are `u16` below [`NO_BACKEND`]: `build` ignores entries beyond this.
pub const MAX_BACKENDS: usize = NO_BACKEND as usize;

// Fixed seeds: the table and the flow hash must be the same after a restart, so that a
// restarted NAT sends existing flows to the same backends.
const OFFSET_SEED: u64 = 0x5851_f42d_4c95_7f2d;
const SKIP_SEED: u64 = 0x1405_7b7e_f767_814f;
const FLOW_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Why a table size was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// Not in `3..=MAX_TABLE_SIZE`.
    SizeOutOfRange(usize),
    /// Not a prime: the permutations only cover the whole table when M is prime.
    NotPrime(usize),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::SizeOutOfRange(n) => write!(
                f,
                "Maglev table size {n} is out of range (must be a prime in 3..={MAX_TABLE_SIZE})"
            ),
            MaglevError::NotPrime(n) => {
                write!(
                    f,
                    "Maglev table size {n} is not a prime (e.g. {DEFAULT_TABLE_SIZE} is)"
                )
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// One backend's walk through its permutation during `build`.
#[derive(Debug, Clone, Copy)]
struct Walk {
    key: u64,
    /// The backend index stored in the table.
    index: u16,
    /// The next table entry of its permutation to try (< M).
    pos: u32,
    /// The permutation's step, in `1..M`.
    skip: u32,
    weight: u64,
    credit: u64,
}

/// A Maglev lookup table: flow hash → backend index.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    entries: Vec<u16>,
    /// Scratch for `build`, kept so that rebuilding at the same size reuses its memory.
    walks: Vec<Walk>,
}

impl MaglevTable {
    /// An empty table of `size` entries (a prime in `3..=MAX_TABLE_SIZE`); every lookup
    /// gives `None` until [`build`](Self::build).
    pub fn new(size: usize) -> Result<MaglevTable, MaglevError> {
        if !(3..=MAX_TABLE_SIZE).contains(&size) {
            return Err(MaglevError::SizeOutOfRange(size));
        }
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        Ok(MaglevTable {
            entries: vec![NO_BACKEND; size],
            walks: Vec::new(),
        })
    }

    /// The number of entries, M.
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// Fills the table from `backends`: entry `i` is (stable key, weight) of the backend
    /// with index `i`, the index the table stores. Keys must stay the same for a backend
    /// across builds (e.g. a hash of its name), so it keeps its entries; indices of
    /// removed backends should be kept with weight 0 rather than shifting the others.
    /// Entries beyond [`MAX_BACKENDS`] are ignored. Allocates only when `backends` is
    /// longer than at any earlier build.
    pub fn build(&mut self, backends: &[(u64, u32)]) {
        self.entries.fill(NO_BACKEND);
        let m = self.entries.len();
        // m <= MAX_TABLE_SIZE = 2^20, so positions and steps fit u32 and pos + skip < 2^21.
        let m64 = m as u64;
        self.walks.clear();
        let mut max_weight = 0u64;
        for (index, &(key, weight)) in backends.iter().enumerate().take(MAX_BACKENDS) {
            if weight == 0 {
                continue;
            }
            self.walks.push(Walk {
                key,
                index: index as u16,
                pos: (mix64(key ^ OFFSET_SEED) % m64) as u32,
                skip: (mix64(key ^ SKIP_SEED) % (m64 - 1) + 1) as u32,
                weight: u64::from(weight),
                credit: 0,
            });
            max_weight = max_weight.max(u64::from(weight));
        }
        if max_weight == 0 {
            return;
        }
        // Backends take their turns in the order of their keys, not of their indices, so
        // that the table depends only on which backend (key) has which index and weight:
        // NATs that added the same backends in different orders agree.
        self.walks.sort_unstable_by_key(|w| (w.key, w.index));
        let m32 = m as u32;
        let mut filled = 0usize;
        // Each round the heaviest backend takes an entry, so this ends after at most M
        // rounds; each inner search ends because a backend's permutation visits every
        // entry (M prime, skip in 1..M) and the table is not full yet.
        loop {
            for walk in self.walks.iter_mut() {
                walk.credit += walk.weight;
                if walk.credit < max_weight {
                    continue;
                }
                walk.credit -= max_weight;
                while self.entries[walk.pos as usize] != NO_BACKEND {
                    walk.pos = (walk.pos + walk.skip) % m32;
                }
                self.entries[walk.pos as usize] = walk.index;
                walk.pos = (walk.pos + walk.skip) % m32;
                filled += 1;
                if filled == m {
                    return;
                }
            }
        }
    }

    /// The backend index for a flow hash, or `None` when no backend has weight > 0.
    pub fn lookup(&self, flow_hash: u64) -> Option<u16> {
        let m = self.entries.len() as u64;
        match self.entries.get((flow_hash % m) as usize) {
            Some(&b) if b != NO_BACKEND => Some(b),
            _ => None,
        }
    }

    /// The raw entries (for statistics and tests): backend indices or [`NO_BACKEND`].
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }
}

/// The hash of a flow as the NAT sees it from the client side (protocol, client address
/// and port, VIP port), for [`MaglevTable::lookup`]. Deterministic with a fixed seed, so
/// the same flow maps to the same backend after a restart.
pub fn flow_hash(proto: u8, src_ip: u32, src_port: u16, dst_port: u16) -> u64 {
    let a = (u64::from(src_ip) << 32) | (u64::from(src_port) << 16) | u64::from(dst_port);
    mix64(mix64(a ^ FLOW_SEED) ^ u64::from(proto))
}

/// The SplitMix64 finalizer: a bijective 64-bit mixer in which every input bit affects
/// every output bit.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Trial division: sizes are at most 2^20, so at most 512 odd divisors.
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> u64 {
        mix64(0xb0b0_0000 + i as u64)
    }

    fn counts(t: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &e in t.entries() {
            assert_ne!(e, NO_BACKEND, "a table with backends has no empty entries");
            c[e as usize] += 1;
        }
        c
    }

    /// Deterministic pseudo-random flow hashes.
    fn flows(n: usize) -> impl Iterator<Item = u64> {
        (0..n as u64).map(|i| mix64(i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x77))
    }

    #[test]
    fn sizes() {
        assert_eq!(
            MaglevTable::new(65536).unwrap_err(),
            MaglevError::NotPrime(65536)
        );
        assert!(MaglevTable::new(65536)
            .unwrap_err()
            .to_string()
            .contains("65536"));
        assert_eq!(
            MaglevTable::new(2).unwrap_err(),
            MaglevError::SizeOutOfRange(2)
        );
        assert_eq!(
            MaglevTable::new(0).unwrap_err(),
            MaglevError::SizeOutOfRange(0)
        );
        assert!(MaglevTable::new(MAX_TABLE_SIZE + 1).is_err());
        assert_eq!(MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap().size(), 65537);
        assert!(MaglevTable::new(3).is_ok());
        assert!(MaglevTable::new(9).is_err());
        assert!(MaglevTable::new(1_048_573).is_ok()); // the largest prime below 2^20
    }

    #[test]
    fn empty_and_all_zero_weights_give_none() {
        let mut t = MaglevTable::new(251).unwrap();
        assert_eq!(t.lookup(42), None);
        t.build(&[]);
        assert_eq!(t.lookup(42), None);
        t.build(&[(key(0), 0), (key(1), 0)]);
        assert!(flows(1000).all(|h| t.lookup(h).is_none()));
        t.build(&[(key(0), 1)]);
        assert!(flows(1000).all(|h| t.lookup(h) == Some(0)));
    }

    #[test]
    fn equal_weights_share_slots_evenly() {
        let mut t = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        for n in 1..=8 {
            let b: Vec<_> = (0..n).map(|i| (key(i), 1)).collect();
            t.build(&b);
            let share = DEFAULT_TABLE_SIZE as f64 / n as f64;
            for (i, &c) in counts(&t, n).iter().enumerate() {
                let dev = (c as f64 - share).abs() / share;
                assert!(
                    dev <= 0.03,
                    "n={n} backend {i}: {c} slots, share {share:.0}"
                );
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_at_most_its_share() {
        let mut before = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        let mut after = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        const FLOWS: usize = 100_000;
        for n in 2..=8 {
            let b: Vec<_> = (0..=n).map(|i| (key(i), 1)).collect();
            before.build(&b[..n]);
            after.build(&b);
            let (mut moved, mut between_old) = (0, 0);
            for h in flows(FLOWS) {
                let (x, y) = (before.lookup(h).unwrap(), after.lookup(h).unwrap());
                if x != y {
                    moved += 1;
                    // Maglev is not perfectly minimal: a few entries shift between the
                    // old backends as the new one takes its turns.
                    between_old += usize::from(y as usize != n);
                }
            }
            let bound = (1.0 / (n + 1) as f64 + 0.05) * FLOWS as f64;
            assert!(
                moved as f64 <= bound,
                "n={n}: {moved} of {FLOWS} flows moved"
            );
            assert!(
                between_old * 100 <= FLOWS,
                "n={n}: {between_old} moved between old ones"
            );
        }
    }

    #[test]
    fn removing_a_backend_moves_its_flows_and_few_others() {
        let mut before = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        let mut after = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        const FLOWS: usize = 100_000;
        for n in 3..=9 {
            let mut b: Vec<_> = (0..n).map(|i| (key(i), 1)).collect();
            before.build(&b);
            // Removed the way BackendSet does it: the index stays, with weight 0.
            let gone = n / 2;
            b[gone].1 = 0;
            after.build(&b);
            let mut others_moved = 0;
            for h in flows(FLOWS) {
                let (x, y) = (before.lookup(h).unwrap(), after.lookup(h).unwrap());
                assert_ne!(y as usize, gone);
                if x as usize != gone && x != y {
                    others_moved += 1;
                }
            }
            assert!(
                others_moved * 100 <= FLOWS,
                "n={n}: {others_moved} flows of remaining backends moved"
            );
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut t = MaglevTable::new(DEFAULT_TABLE_SIZE).unwrap();
        t.build(&[(key(0), 1), (key(1), 2), (key(2), 3)]);
        let c = counts(&t, 3);
        for (i, &c) in c.iter().enumerate() {
            let share = DEFAULT_TABLE_SIZE as f64 * (i + 1) as f64 / 6.0;
            let dev = (c as f64 - share).abs() / share;
            assert!(dev <= 0.03, "backend {i} (weight {}): {c} slots", i + 1);
        }
        // Large, uneven weights work too (credits are u64).
        t.build(&[(key(0), u32::MAX), (key(1), u32::MAX / 4), (key(2), 1)]);
        let c = counts(&t, 3);
        assert!((c[0] as f64 / c[1] as f64 - 4.0).abs() < 0.1, "{c:?}");
        assert!(c[2] <= 1, "{c:?}");
    }

    #[test]
    fn weight_zero_is_never_returned() {
        let mut t = MaglevTable::new(1009).unwrap();
        t.build(&[(key(0), 0), (key(1), 5), (key(2), 0), (key(3), 1)]);
        let c = counts(&t, 4);
        assert_eq!((c[0], c[2]), (0, 0));
        assert!(c[1] > 0 && c[3] > 0);
        assert!(flows(10_000).all(|h| matches!(t.lookup(h), Some(1 | 3))));
    }

    #[test]
    fn rebuilding_is_deterministic_and_keeps_memory() {
        let b: Vec<_> = (0..5).map(|i| (key(i), 1 + i as u32)).collect();
        let mut t = MaglevTable::new(4099).unwrap();
        let mut u = MaglevTable::new(4099).unwrap();
        t.build(&b);
        u.build(&b);
        assert_eq!(t.entries(), u.entries());
        let cap = t.walks.capacity();
        t.build(&b[..3]);
        t.build(&b);
        assert_eq!(t.walks.capacity(), cap);
        assert_eq!(t.entries(), u.entries());
    }

    #[test]
    fn flow_hash_is_fixed_and_mixes() {
        assert_eq!(
            flow_hash(6, 0x0a00_0001, 1234, 80),
            flow_hash(6, 0x0a00_0001, 1234, 80)
        );
        let base = flow_hash(6, 0x0a00_0001, 1234, 80);
        for other in [
            flow_hash(17, 0x0a00_0001, 1234, 80),
            flow_hash(6, 0x0a00_0002, 1234, 80),
            flow_hash(6, 0x0a00_0001, 1235, 80),
            flow_hash(6, 0x0a00_0001, 1234, 81),
        ] {
            // One changed input bit flips about half the output bits.
            let flipped = (base ^ other).count_ones();
            assert!((16..=48).contains(&flipped), "{flipped} bits differ");
        }
    }
}
