//! Single-producer/single-consumer descriptor rings in shared memory.
//!
//! Each side keeps its own index privately and only *reads* the peer's index from shared
//! memory, so a peer can never corrupt our position; it can only lie about its own. A lie
//! is detected when the distance between the two indices exceeds the ring size: the ring
//! then counts as empty (consumer) or full (producer) and the caller counts a fault.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::abi::{Desc, RingIndices};

/// Raw view of one ring inside a mapping.
#[derive(Clone, Copy)]
pub struct RingPtr {
    idx: *const RingIndices,
    entries: *mut Desc,
    size: u32,
}

impl RingPtr {
    /// # Safety
    /// `idx` must be followed in a live mapping by `size` descriptors, `size` a power of two.
    pub unsafe fn new(idx: *const RingIndices, size: u32) -> Self {
        debug_assert!(size.is_power_of_two());
        // SAFETY: the entries follow the indices inside the mapping, per the contract.
        let entries =
            unsafe { (idx as *mut u8).add(core::mem::size_of::<RingIndices>()) } as *mut Desc;
        RingPtr { idx, entries, size }
    }

    fn indices(&self) -> &RingIndices {
        // SAFETY: `idx` points into a live mapping (constructor contract); its fields are
        // atomics, so shared access with a peer is sound.
        unsafe { &*self.idx }
    }

    fn slot(&self, i: u32) -> *mut Desc {
        // SAFETY: the slot index is masked below `size`, within the entries array.
        unsafe { self.entries.add((i & (self.size - 1)) as usize) }
    }
}

/// The producing side of a ring.
pub struct Producer {
    ring: RingPtr,
    /// Next index to write (private truth).
    prod: u32,
    /// Last value stored to shared `prod`.
    published: u32,
    /// Last consumer index seen (refreshed when the ring looks full).
    cached_cons: u32,
}

/// The consuming side of a ring.
pub struct Consumer {
    ring: RingPtr,
    /// Next index to read (private truth).
    cons: u32,
    /// Last value stored to shared `cons`.
    published: u32,
    /// Last producer index seen (refreshed when the ring looks empty).
    cached_prod: u32,
}

/// The peer's index is more than a ring away from ours: it wrote garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingCorrupt;

// SAFETY: the raw pointers refer to shared mappings kept alive by the owner of the ring
// handle; each handle is used by one thread at a time.
unsafe impl Send for Producer {}
// SAFETY: as above.
unsafe impl Send for Consumer {}

impl Producer {
    /// Start producing where the shared index says the producer is.
    pub fn new(ring: RingPtr) -> Self {
        let prod = ring.indices().prod.load(Ordering::Acquire);
        Producer {
            ring,
            prod,
            published: prod,
            // Unknown until read: assume full so the first push reads the real index
            // (a ring can hold entries nobody consumed yet, e.g. after a restart).
            cached_cons: prod.wrapping_sub(ring.size),
        }
    }

    /// Free slots, refreshing the consumer index from shared memory.
    pub fn free(&mut self) -> Result<u32, RingCorrupt> {
        let cons = self.ring.indices().cons.load(Ordering::Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.ring.size {
            return Err(RingCorrupt);
        }
        self.cached_cons = cons;
        Ok(self.ring.size - used)
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.ring.size
    }

    /// The descriptors posted but not yet released by the consumer, oldest first (copied
    /// out; for taking over a ring another producer left, never on the data path).
    pub fn unconsumed(&mut self) -> Result<Vec<Desc>, RingCorrupt> {
        let free = self.free()?;
        let n = self.ring.size - free;
        Ok((0..n)
            .map(|i| {
                let at = self.cached_cons.wrapping_add(i);
                // SAFETY: the slot is inside the ring (masked); read once, by value.
                unsafe { ptr::read_volatile(self.ring.slot(at)) }
            })
            .collect())
    }

    /// Write one descriptor (not yet visible to the consumer). Returns false when full.
    pub fn push(&mut self, d: Desc) -> Result<bool, RingCorrupt> {
        if self.prod.wrapping_sub(self.cached_cons) >= self.ring.size && self.free()? == 0 {
            return Ok(false);
        }
        // SAFETY: the slot is inside the ring; the consumer does not read it until we
        // publish an index past it (Release below).
        unsafe { ptr::write_volatile(self.ring.slot(self.prod), d) };
        self.prod = self.prod.wrapping_add(1);
        Ok(true)
    }

    /// Make written descriptors visible. Returns true if anything new was published.
    pub fn publish(&mut self) -> bool {
        if self.prod == self.published {
            return false;
        }
        self.ring.indices().prod.store(self.prod, Ordering::Release);
        self.published = self.prod;
        true
    }
}

impl Consumer {
    /// Start consuming where the shared index says the consumer is.
    pub fn new(ring: RingPtr) -> Self {
        let cons = ring.indices().cons.load(Ordering::Acquire);
        Consumer {
            ring,
            cons,
            published: cons,
            cached_prod: cons,
        }
    }

    /// Descriptors ready, refreshing the producer index from shared memory.
    pub fn available(&mut self) -> Result<u32, RingCorrupt> {
        let prod = self.ring.indices().prod.load(Ordering::Acquire);
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.ring.size {
            return Err(RingCorrupt);
        }
        self.cached_prod = prod;
        Ok(avail)
    }

    /// Take the next descriptor, copied out of shared memory once. The caller validates it.
    pub fn pop(&mut self) -> Result<Option<Desc>, RingCorrupt> {
        if self.cached_prod == self.cons && self.available()? == 0 {
            return Ok(None);
        }
        // SAFETY: the slot is inside the ring and was published by the producer (Acquire
        // in `available`); read_volatile copies it out exactly once.
        let d = unsafe { ptr::read_volatile(self.ring.slot(self.cons)) };
        self.cons = self.cons.wrapping_add(1);
        Ok(Some(d))
    }

    /// The descriptor `k` places after the next one, without taking it (for a look
    /// ahead, e.g. to prefetch what the frame will need). The caller validates it.
    pub fn peek(&mut self, k: u32) -> Option<Desc> {
        if self.cached_prod.wrapping_sub(self.cons) <= k && self.available().ok()? <= k {
            return None;
        }
        // SAFETY: the slot is inside the ring (masked) and was published by the producer
        // (Acquire in `available`); read_volatile copies it out exactly once.
        Some(unsafe { ptr::read_volatile(self.ring.slot(self.cons.wrapping_add(k))) })
    }

    /// Hand consumed slots back to the producer.
    pub fn release(&mut self) {
        if self.cons != self.published {
            self.ring.indices().cons.store(self.cons, Ordering::Release);
            self.published = self.cons;
        }
    }

    /// True if descriptors are waiting (one shared-memory load).
    pub fn has_work(&mut self) -> bool {
        self.cached_prod != self.cons || matches!(self.available(), Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{ring_bytes, RingIndices};

    fn ring_mem(size: u32) -> (Vec<u64>, RingPtr) {
        let mut mem = vec![0u64; ring_bytes(size).div_ceil(8) + 8];
        let base = (mem.as_mut_ptr() as usize).next_multiple_of(64) as *const RingIndices;
        // SAFETY: `mem` has room for the indices and `size` entries after alignment.
        (mem, unsafe { RingPtr::new(base, size) })
    }

    #[test]
    fn push_pop_in_order_and_wraps() {
        let (_mem, r) = ring_mem(8);
        let (mut p, mut c) = (Producer::new(r), Consumer::new(r));
        for round in 0..10u32 {
            for i in 0..8 {
                assert_eq!(
                    p.push(Desc {
                        buf: round * 8 + i,
                        len: i,
                        ..Default::default()
                    }),
                    Ok(true)
                );
            }
            assert_eq!(p.push(Desc::default()), Ok(false));
            assert_eq!(c.pop(), Ok(None), "nothing visible before publish");
            assert!(p.publish());
            for i in 0..8 {
                assert_eq!(c.pop().unwrap().unwrap().buf, round * 8 + i);
            }
            assert_eq!(c.pop(), Ok(None));
            c.release();
        }
    }

    #[test]
    fn lying_peer_indices_are_detected() {
        let (_mem, r) = ring_mem(8);
        let mut c = Consumer::new(r);
        r.indices().prod.store(1000, Ordering::Release);
        assert_eq!(c.pop(), Err(RingCorrupt));
        let mut p = Producer::new(r);
        r.indices()
            .cons
            .store(p.prod.wrapping_add(5), Ordering::Release);
        assert_eq!(p.free(), Err(RingCorrupt));
    }

    #[test]
    fn peek_looks_ahead_without_taking() {
        let (_mem, r) = ring_mem(8);
        let (mut p, mut c) = (Producer::new(r), Consumer::new(r));
        assert_eq!(c.peek(0), None);
        for round in 0..5u32 {
            for i in 0..6 {
                let d = Desc {
                    buf: round * 8 + i,
                    ..Default::default()
                };
                assert_eq!(p.push(d), Ok(true));
            }
            assert_eq!(c.peek(0), None, "nothing visible before publish");
            p.publish();
            for k in 0..6 {
                assert_eq!(c.peek(k).unwrap().buf, round * 8 + k);
            }
            assert_eq!(c.peek(6), None);
            assert_eq!(c.peek(u32::MAX), None);
            // Taking two moves the window: what was third is now first.
            c.pop().unwrap();
            c.pop().unwrap();
            assert_eq!(c.peek(0).unwrap().buf, round * 8 + 2);
            assert_eq!(c.peek(4), None);
            while c.pop().unwrap().is_some() {}
            c.release();
        }
        // A producer index that lies yields nothing to peek at.
        r.indices().prod.store(1000, Ordering::Release);
        assert_eq!(c.peek(0), None);
    }
}
