//! Cache hints for state an app is about to visit.
//!
//! At 10,000 connections a connection's state (its socket, the app's record of it) is
//! out of the caches by the time its next segment comes, and each visit waits for memory.
//! Where the order of visits is known in advance (the connections
//! [`Engine::take_ready`](crate::Engine::take_ready) names, the sockets of a burst), asking
//! for the next few while working on the current one overlaps those waits, as DPDK's
//! pipelined lookups do.

/// [`prefetch_value`] loads at most this much of a value (four cache lines, five where it
/// straddles one more).
pub const PREFETCH_MAX: usize = 256;

/// Start loading the cache lines of `value` (those of at most its first [`PREFETCH_MAX`]
/// bytes).
/// A hint only: it reads nothing into the program and changes nothing; heap memory the
/// value points to is not loaded.
#[inline]
pub fn prefetch_value<T>(value: &T) {
    let start = value as *const T as *const u8;
    let len = core::mem::size_of::<T>().min(PREFETCH_MAX);
    // From the line holding the first byte to the one holding the last.
    let skew = start as usize & 63;
    let line0 = start.wrapping_sub(skew);
    for offset in (0..skew + len).step_by(64) {
        prefetch_line(line0.wrapping_add(offset));
    }
}

/// Ask for the cache line holding `p`.
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of every x86_64 processor, and a prefetch is a hint: it reads
    // nothing into the program and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_changes_nothing_whatever_the_size() {
        // Smaller than a line, several lines, and far larger than `PREFETCH_MAX`.
        let small = 7u8;
        let lines = [0x5au8; 200];
        let big = vec![[3u64; 128]; 4];
        prefetch_value(&small);
        prefetch_value(&lines);
        for b in &big {
            prefetch_value(b);
        }
        prefetch_value(&());
        assert_eq!(small, 7);
        assert!(lines.iter().all(|&b| b == 0x5a));
        assert!(big.iter().all(|b| b.iter().all(|&w| w == 3)));
    }
}
