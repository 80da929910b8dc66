//! TPACKET_V3 RX: the block ring. The kernel hands over whole blocks of frames; the walk
//! follows each block's frame chain, gives the block back when done, and remembers a
//! partly read block across calls.

use std::sync::atomic::{AtomicU32, Ordering};

use super::layout::{rd_u32, BLK_FIRST_OFF, BLK_NUM_PKTS_OFF, BLK_STATUS_OFF, V3};
use super::rx_frame::{deliver, parse_frame, RxCounters, RxWant};
use crate::nic::RxMeta;

/// Where the RX walk stands.
pub(super) struct RxRing {
    pub(super) base: *mut u8,
    pub(super) block_size: usize,
    pub(super) block_nr: usize,
    /// Block the walk is in (or waits on).
    pub(super) cur: usize,
    /// Frames left in the current block; 0 = no block taken yet.
    pub(super) left: u32,
    /// Offset in the current block of the next frame header.
    pub(super) off: usize,
    /// Frames are preceded by a virtio-net header.
    pub(super) vnet: bool,
}

impl RxRing {
    /// Status word of block `i`.
    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: `i < block_nr`, so the block lies inside the mapping; block starts are
        // page aligned (4-aligned in tests) and BLK_STATUS_OFF is a multiple of 4, so the
        // pointer is valid and aligned for an AtomicU32 for the mapping's lifetime (which
        // outlives `&self`). The kernel writes this word too, hence atomic access.
        unsafe { &*(self.base.add(i * self.block_size + BLK_STATUS_OFF) as *const AtomicU32) }
    }

    /// Give the current block back to the kernel and move to the next one.
    fn release(&mut self, c: &mut RxCounters) {
        self.block_status(self.cur)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.cur = (self.cur + 1) % self.block_nr;
        self.left = 0;
        c.blocks += 1;
    }

    /// Hand up to `max` frames to `f`; see [`Nic::rx_burst`](crate::nic::Nic::rx_burst).
    pub(super) fn burst(
        &mut self,
        max: usize,
        want: RxWant,
        c: &mut RxCounters,
        f: &mut dyn FnMut(&[u8], RxMeta),
    ) -> usize {
        let mut n = 0;
        while n < max {
            if self.left == 0 {
                let status = self.block_status(self.cur).load(Ordering::Acquire);
                if status & libc::TP_STATUS_USER == 0 {
                    break; // the kernel still owns it: nothing more to read
                }
                // SAFETY: the block is inside the mapping and, its status being
                // TP_STATUS_USER (read with Acquire above), owned by us until we store
                // TP_STATUS_KERNEL: the kernel neither reads nor writes it meanwhile. No
                // other reference to it exists (`&mut self`); it is only used before
                // `release`.
                let block = unsafe { self.block_mut() };
                let num = rd_u32(block, BLK_NUM_PKTS_OFF).unwrap_or(0);
                let first = rd_u32(block, BLK_FIRST_OFF).unwrap_or(0) as usize;
                if num == 0 {
                    self.release(c);
                    continue;
                }
                self.left = num;
                self.off = first;
            }
            // SAFETY: as above: we own the current block until we release it, and `block`
            // is not used after any `release` below.
            let block = unsafe { self.block_mut() };
            let Some(fr) = parse_frame(block, self.off, &V3, self.vnet) else {
                c.bad_blocks += 1;
                self.release(c);
                continue;
            };
            self.left -= 1;
            if deliver(block, &fr, want, c, f) {
                n += 1;
            }
            if self.left == 0 || fr.next == 0 {
                self.release(c);
            } else {
                match self.off.checked_add(fr.next) {
                    Some(o) if o < self.block_size => self.off = o,
                    _ => {
                        c.bad_blocks += 1;
                        self.release(c);
                    }
                }
            }
        }
        n
    }

    /// The current block as a slice, not tied to a borrow of `self` (so the walk can
    /// update its position while it holds the slice).
    ///
    /// # Safety
    /// The caller must own the block (its status is `TP_STATUS_USER`), not hold another
    /// slice of it, and drop the slice before giving the block back with `release`.
    unsafe fn block_mut<'a>(&self) -> &'a mut [u8] {
        // SAFETY: the block lies inside the mapping (`cur < block_nr`), which lives as long
        // as the ring; exclusivity and lifetime are the caller's promise.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(self.cur * self.block_size),
                self.block_size,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 4096;
    const NR: usize = 4;

    /// An in-memory RX ring of NR blocks, 8-aligned.
    struct FakeRing {
        mem: Vec<u64>,
    }

    impl FakeRing {
        fn new() -> FakeRing {
            FakeRing {
                mem: vec![0; BS * NR / 8],
            }
        }
        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: viewing a Vec<u64> as bytes: same memory, u8 has no alignment needs.
            unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr().cast(), BS * NR) }
        }
        fn ring(&mut self) -> RxRing {
            RxRing {
                base: self.mem.as_mut_ptr().cast(),
                block_size: BS,
                block_nr: NR,
                cur: 0,
                left: 0,
                off: 0,
                vnet: false,
            }
        }
        fn put32(&mut self, at: usize, v: u32) {
            self.bytes()[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        fn status(&mut self, blk: usize) -> u32 {
            rd_u32(self.bytes(), blk * BS + BLK_STATUS_OFF).unwrap()
        }
        /// Fill block `blk` with `frames` (data, pkttype), as the kernel would; returns
        /// each frame header's offset in the block.
        fn fill(&mut self, blk: usize, frames: &[(&[u8], u8)]) -> Vec<usize> {
            let b0 = blk * BS;
            let first = 48usize;
            let mut offs = Vec::new();
            let mut off = first;
            for (i, (data, pkttype)) in frames.iter().enumerate() {
                let mac = 82usize;
                let total = (mac + data.len()).div_ceil(16) * 16;
                let next = if i + 1 == frames.len() {
                    0
                } else {
                    total as u32
                };
                let h = b0 + off;
                self.put32(h + V3.next.unwrap(), next);
                self.put32(h + V3.snaplen, data.len() as u32);
                self.put32(h + V3.len, data.len() as u32);
                self.put32(h + V3.status, libc::TP_STATUS_USER);
                self.bytes()[h + V3.mac..h + V3.mac + 2]
                    .copy_from_slice(&(mac as u16).to_ne_bytes());
                self.bytes()[h + V3.pkttype()] = *pkttype;
                self.bytes()[h + mac..h + mac + data.len()].copy_from_slice(data);
                offs.push(off);
                off += total;
            }
            self.put32(b0 + BLK_NUM_PKTS_OFF, frames.len() as u32);
            self.put32(b0 + BLK_FIRST_OFF, first as u32);
            self.put32(b0 + BLK_STATUS_OFF, libc::TP_STATUS_USER);
            offs
        }
    }

    fn collect(r: &mut RxRing, max: usize) -> (Vec<Vec<u8>>, RxCounters) {
        let mut got = Vec::new();
        let mut c = RxCounters::default();
        r.burst(max, RxWant::plain(1514), &mut c, &mut |f: &[u8], _| {
            got.push(f.to_vec())
        });
        (got, c)
    }

    #[test]
    fn walks_blocks_in_order_across_calls() {
        let mut fr = FakeRing::new();
        let a = vec![1u8; 60];
        let b = vec![2u8; 100];
        let c = vec![3u8; 1514];
        fr.fill(0, &[(&a, 0), (&b, 0)]);
        fr.fill(1, &[(&c, 0)]);
        let mut r = fr.ring();
        // Nothing to read in a kernel-owned ring.
        let (got, _) = collect(&mut r, 1);
        assert_eq!(got, vec![a.clone()]);
        assert_eq!(
            fr.status(0),
            libc::TP_STATUS_USER,
            "block 0 half read: still ours"
        );
        let (got, cnt) = collect(&mut r, 10);
        assert_eq!(got, vec![b, c]);
        assert_eq!(cnt.blocks, 2);
        assert_eq!(fr.status(0), libc::TP_STATUS_KERNEL);
        assert_eq!(fr.status(1), libc::TP_STATUS_KERNEL);
        let (got, _) = collect(&mut r, 10);
        assert!(got.is_empty());
        assert_eq!(r.cur, 2);
    }

    #[test]
    fn skips_outgoing_and_oversize() {
        let mut fr = FakeRing::new();
        let a = vec![1u8; 60];
        let big = vec![9u8; 1600];
        fr.fill(0, &[(&a, libc::PACKET_OUTGOING), (&big, 0), (&a, 0)]);
        let mut r = fr.ring();
        let (got, c) = collect(&mut r, 10);
        assert_eq!(got, vec![a]);
        assert_eq!(c.dropped, 1);
        assert_eq!(c.oversize, 1600);
    }

    /// Damages a filled block, given its frame header offsets.
    type Corrupt = dyn Fn(&mut FakeRing, Vec<usize>);

    #[test]
    fn bad_offsets_give_the_block_back_without_panic() {
        let a = vec![7u8; 64];
        let corrupt: [&Corrupt; 7] = [
            &|f, _| f.put32(BLK_FIRST_OFF, BS as u32 - 10),
            &|f, _| f.put32(BLK_FIRST_OFF, u32::MAX),
            &|f, o| f.put32(o[0] + V3.snaplen, BS as u32),
            &|f, o| f.put32(o[0] + V3.snaplen, u32::MAX),
            &|f, o| f.put32(o[0] + V3.next.unwrap(), u32::MAX),
            &|f, o| f.put32(o[0] + V3.next.unwrap(), BS as u32),
            &|f, o| {
                let h = o[0] + V3.mac;
                f.bytes()[h..h + 2].copy_from_slice(&u16::MAX.to_ne_bytes())
            },
        ];
        for (i, bad) in corrupt.iter().enumerate() {
            let mut fr = FakeRing::new();
            let offs = fr.fill(0, &[(&a, 0), (&a, 0), (&a, 0)]);
            bad(&mut fr, offs);
            fr.fill(1, &[(&a, 0)]);
            let mut r = fr.ring();
            let (got, c) = collect(&mut r, 100);
            assert!(c.bad_blocks >= 1, "case {i}: corruption not noticed");
            assert!(got.iter().all(|g| *g == a), "case {i}");
            assert_eq!(got.last(), Some(&a), "case {i}: next block still read");
            assert_eq!(fr.status(0), libc::TP_STATUS_KERNEL, "case {i}");
            assert_eq!(fr.status(1), libc::TP_STATUS_KERNEL, "case {i}");
        }
    }

    #[test]
    fn num_pkts_larger_than_chain_stops_at_last_frame() {
        let mut fr = FakeRing::new();
        let a = vec![5u8; 80];
        fr.fill(0, &[(&a, 0)]);
        fr.put32(BLK_NUM_PKTS_OFF, 1000);
        fr.fill(1, &[(&a, 0)]);
        let mut r = fr.ring();
        let (got, _) = collect(&mut r, 100);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let mut fr = FakeRing::new();
            for w in fr.mem.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *w = seed;
            }
            for b in 0..NR {
                fr.put32(b * BS + BLK_STATUS_OFF, libc::TP_STATUS_USER);
                // Small offsets now and then, so some walks get going.
                if b % 2 == 0 {
                    fr.put32(b * BS + BLK_FIRST_OFF, 48);
                }
            }
            let mut r = fr.ring();
            let mut c = RxCounters::default();
            r.burst(
                usize::MAX,
                RxWant::plain(1514),
                &mut c,
                &mut |f: &[u8], _| assert!(f.len() <= 1514),
            );
            for b in 0..NR {
                assert_eq!(fr.status(b), libc::TP_STATUS_KERNEL);
            }
        }
    }
}
