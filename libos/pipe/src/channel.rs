//! A channel: frames one way through a shared buffer area (see [`crate::abi`]).
//!
//! [`ChannelSender`] owns the buffers: it allocates one, lets the caller write a frame in
//! place, posts it, and later takes it back from the return ring. [`ChannelReceiver`] reads
//! posted frames in place and returns their buffers. Both sides validate everything the
//! peer wrote and count what they had to drop in [`ChannelFaults`].

use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{ChannelLayout, Desc, Doorbell, RingIndices};
use crate::doorbell;
use crate::ring::{Consumer, Producer, RingPtr};
use crate::shm::SharedMap;

/// Counts of bad things a peer wrote into a channel. Shared (`Arc`) with whoever reports
/// stats; updated with relaxed atomics, only when a fault happens.
#[derive(Default, Debug)]
pub struct ChannelFaults {
    /// Descriptors with an out-of-range buffer index or length.
    pub bad_desc: AtomicU64,
    /// Returned buffer indices that were out of range or not lent out (double return).
    pub bad_return: AtomicU64,
    /// Times a peer's ring index was more than a ring away from ours.
    pub ring_corrupt: AtomicU64,
}

impl ChannelFaults {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The buffer area of a channel: `nbufs` small buffers, then `nlarge` large ones, where
/// its (validated) layout puts them.
#[derive(Clone, Copy)]
struct BufArea {
    base: *mut u8,
    layout: ChannelLayout,
}

impl BufArea {
    /// Buffers in both pools: valid indices are below this.
    fn total(&self) -> u32 {
        self.layout.nbufs + self.layout.nlarge
    }

    /// True if `idx` names a large buffer (false for out-of-range indices too).
    fn is_large(&self, idx: u32) -> bool {
        idx >= self.layout.nbufs && idx < self.total()
    }

    /// Bytes of buffer `idx`; 0 for an index out of range.
    fn size_of(&self, idx: u32) -> u32 {
        self.layout.buffer(idx).map_or(0, |(_, size)| size)
    }

    /// Pointer to buffer `idx`. Callers pass only validated indices (`< total()`).
    fn ptr(&self, idx: u32) -> *mut u8 {
        let (off, _) = self.layout.buffer(idx).expect("a validated buffer index");
        // SAFETY: `buffer` places buffer idx inside the area of `buf_area_bytes()` bytes,
        // which lies in the mapping (checked by `ChannelLayout::validate` and `parts`
        // before this was built).
        unsafe { self.base.add(off as usize) }
    }

    /// Start taking the first `len` bytes of buffer `idx` (at most [`PREFETCH_BYTES`])
    /// into this core's cache for writing, if the processor can (`prefetchw`); nothing
    /// otherwise. A hint: it changes no byte and never faults.
    fn prefetch_for_write(&self, idx: u32, len: usize, prefetchw: bool) {
        #[cfg(target_arch = "x86_64")]
        if prefetchw {
            let Some((off, size)) = self.layout.buffer(idx) else {
                return;
            };
            let start = self.base.wrapping_add(off as usize);
            for line in (0..len.min(size as usize).min(PREFETCH_BYTES)).step_by(64) {
                // SAFETY: the processor has `PREFETCHW` (`prefetchw` is `has_prefetchw`).
                unsafe { prefetchw_line(start.wrapping_add(line)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (idx, len, prefetchw);
    }

    /// Pointer to `len` bytes at `offset` in buffer `idx`, if they lie inside it.
    fn range(&self, idx: u32, offset: usize, len: usize) -> Option<*mut u8> {
        if idx >= self.total() || offset.checked_add(len)? > self.size_of(idx) as usize {
            return None;
        }
        // SAFETY: offset + len <= the buffer's size: the range lies inside buffer `idx`.
        Some(unsafe { self.ptr(idx).add(offset) })
    }
}

/// Most bytes of a buffer [`ChannelSender::alloc`] loads ahead: one standard Ethernet
/// frame. Longer frames are written in order, which the processor's own prefetchers
/// follow.
const PREFETCH_BYTES: usize = 1536;

/// True if this processor has `PREFETCHW` (prefetch with intent to write; `cpuid` reports
/// it on AMD since family 10h and Intel since Broadwell). Asked once per process: in a VM
/// each `cpuid` traps to the hypervisor, and the master makes a sender per pipe.
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(ask_prefetchw)
}

/// `cpuid`'s answer for [`has_prefetchw`].
fn ask_prefetchw() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__cpuid;
        // `__cpuid` is a safe function since Rust 1.94; the block keeps older compilers
        // (the workspace's rust-version) building.
        #[allow(unused_unsafe)]
        // SAFETY: `cpuid` exists on every x86_64 processor and only reads identification
        // registers; leaf 0x8000_0001 is asked for only if the processor reports it.
        unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Ask the processor to start taking the cache line holding `p` into this core's cache
/// for writing, from memory or from another core's cache. A hint: it reads nothing into
/// the program, writes nothing and never faults, whatever the address (an unmapped page,
/// a truncated file).
///
/// # Safety
/// The processor must have `PREFETCHW` ([`has_prefetchw`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetchw_line(p: *const u8) {
    // SAFETY: the caller checked `has_prefetchw`; the instruction only names its address
    // operand, touches no flag or stack, and cannot fault.
    unsafe {
        core::arch::asm!(
            "prefetchw [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    };
}

/// Copy `len` bytes between two places of which at least one is shared memory. `memmove`,
/// not `memcpy`: the caller's slice could (in a confused program) alias the mapping, and
/// a copy between two buffers of one file must not assume they are apart.
///
/// # Safety
/// `src` must be readable and `dst` writable for `len` bytes. Shared bytes may change
/// under the copy: the result then holds whatever was there (bytes, never UB for `u8`).
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: as the caller guarantees.
    unsafe { core::ptr::copy(src, dst, len) }
}

/// Copy the first `len` bytes of frame `f`, received on `from`, into buffer `buf` of `to`
/// (allocated, not yet posted), at its start: the master's one copy between two pipes,
/// made without a Rust reference to either side's memory. False (nothing copied) if `len`
/// exceeds the frame or `to`'s buffers, or an index is out of range.
pub fn copy_frame(
    from: &ChannelReceiver,
    f: RxFrame,
    len: usize,
    to: &mut ChannelSender,
    buf: u32,
) -> bool {
    if len > f.len as usize {
        return false;
    }
    let (Some(src), Some(dst)) = (from.bufs.range(f.buf, 0, len), to.bufs.range(buf, 0, len))
    else {
        return false;
    };
    // SAFETY: both ranges were bounds-checked inside their validated buffer areas.
    unsafe { copy_bytes(src, dst, len) };
    true
}

struct Parts {
    ring: RingPtr,
    ret: RingPtr,
    bufs: BufArea,
}

/// Resolve a *validated* layout to pointers in `map`.
fn parts(map: &SharedMap, l: &ChannelLayout) -> Option<Parts> {
    let ring = map.ptr_at::<RingIndices>(l.ring_off as usize)?;
    let ret = map.ptr_at::<RingIndices>(l.ret_off as usize)?;
    let base = map.bytes_at(
        l.buf_off as usize,
        usize::try_from(l.buf_area_bytes()).ok()?,
    )?;
    map.bytes_at(l.ring_off as usize, crate::abi::ring_bytes(l.ring_size))?;
    map.bytes_at(l.ret_off as usize, crate::abi::ring_bytes(l.ring_size))?;
    Some(Parts {
        // SAFETY: both rings were bounds-checked above for `ring_size` entries.
        ring: unsafe { RingPtr::new(ring, l.ring_size) },
        // SAFETY: as above.
        ret: unsafe { RingPtr::new(ret, l.ring_size) },
        bufs: BufArea { base, layout: *l },
    })
}

/// The sending end of a channel.
pub struct ChannelSender {
    ring: Producer,
    ret: Consumer,
    bufs: BufArea,
    /// Small buffers we may write (a stack; never holds more than nbufs entries).
    free: Vec<u32>,
    /// Large buffers we may write (a stack; never more than nlarge entries).
    free_large: Vec<u32>,
    /// One bit per buffer (both pools): lent to the receiver and not yet returned.
    lent: Vec<u64>,
    /// Rung after posting: wakes the receiver.
    receiver_bell: *const Doorbell,
    faults: std::sync::Arc<ChannelFaults>,
    /// Small buffers lent out beyond which `flush` takes returned ones back (see there).
    hot: usize,
    /// The same for large buffers.
    hot_large: usize,
    /// The processor has `PREFETCHW` ([`has_prefetchw`]): `alloc` takes the next buffer
    /// ahead. Without it nothing is prefetched (a prefetch for reading did not measure
    /// better than none, and worse at 64 connections in three of seven alternated pairs:
    /// docs/benchmarks.md, *Frames taken ahead*).
    prefetchw: bool,
}

/// Bytes of buffers a sender keeps cycling through while the receiver keeps up: about
/// half an L2 cache.
const HOT_BYTES: usize = 256 * 1024;

/// The receiving end of a channel.
pub struct ChannelReceiver {
    ring: Consumer,
    ret: Producer,
    bufs: BufArea,
    /// Rung after returning buffers: wakes a sender that waits for them.
    sender_bell: *const Doorbell,
    faults: std::sync::Arc<ChannelFaults>,
}

// SAFETY: the raw pointers point into a SharedMap that the owner keeps alive as long as
// the channel end; an end is used by one thread at a time.
unsafe impl Send for ChannelSender {}
// SAFETY: as above.
unsafe impl Send for ChannelReceiver {}

/// A frame received in place: buffer `buf` holds `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame {
    pub buf: u32,
    pub len: u32,
}

impl ChannelSender {
    /// Build the sending end. `layout` must already be validated against `map`'s length;
    /// `fresh` says whether all buffers start free (a new file), which is the only state a
    /// sender attaches in.
    ///
    /// # Safety
    /// `map` must outlive the returned value, and the bells must point into live mappings
    /// that outlive it too.
    pub unsafe fn new(
        map: &SharedMap,
        layout: &ChannelLayout,
        receiver_bell: *const Doorbell,
        faults: std::sync::Arc<ChannelFaults>,
    ) -> Option<Self> {
        let p = parts(map, layout)?;
        let mut s = ChannelSender {
            ring: Producer::new(p.ring),
            ret: Consumer::new(p.ret),
            bufs: p.bufs,
            free: Vec::new(),
            free_large: Vec::new(),
            lent: Vec::new(),
            receiver_bell,
            faults,
            hot: (HOT_BYTES / layout.buf_size.max(1) as usize).max(16),
            hot_large: (HOT_BYTES / layout.large_size.max(1) as usize).max(16),
            prefetchw: has_prefetchw(),
        };
        s.set_free_except(&vec![0; p.bufs.total().div_ceil(64) as usize]);
        Some(s)
    }

    /// Make every buffer not marked in `lent` free (both stacks, lowest index on top),
    /// and `lent` the record of lent buffers.
    fn set_free_except(&mut self, lent: &[u64]) {
        let is_free = |b: &u32| lent[(b / 64) as usize] & (1 << (b % 64)) == 0;
        let (n, total) = (self.bufs.layout.nbufs, self.bufs.total());
        self.free = (0..n).rev().filter(is_free).collect();
        self.free_large = (n..total).rev().filter(is_free).collect();
        self.lent = lent.to_vec();
    }

    /// Bytes of the largest frame this channel carries (a large buffer's, if it has any).
    pub fn buf_size(&self) -> usize {
        self.bufs.layout.max_frame() as usize
    }

    /// The free stack of the large pool (`large`) or of the small one.
    fn stack(&mut self, large: bool) -> &mut Vec<u32> {
        if large {
            &mut self.free_large
        } else {
            &mut self.free
        }
    }

    /// True if at least `n` buffers of one pool are free, taking back returned ones
    /// first if not. O(1) while plenty are free.
    fn has_free_in(&mut self, large: bool, n: usize) -> bool {
        if self.stack(large).len() < n {
            self.reclaim();
        }
        self.stack(large).len() >= n
    }

    /// True if at least `n` small buffers are free (taking back returned ones if needed
    /// first). O(1) while plenty are free.
    pub fn has_free(&mut self, n: usize) -> bool {
        self.has_free_in(false, n)
    }

    /// True if a frame of `len` bytes would find a free buffer now (taking back returned
    /// ones if needed first).
    pub fn has_free_for(&mut self, len: usize) -> bool {
        self.pool_for(len)
            .is_some_and(|large| self.has_free_in(large, 1))
    }

    /// True if a frame of `len` bytes takes a large buffer.
    pub fn is_large_frame(&self, len: usize) -> bool {
        self.pool_for(len) == Some(true)
    }

    /// True if at least 1/`div` (and at least one) of the buffers of the pool that holds
    /// a frame of `len` bytes are free, taking back returned ones first if not: "not
    /// nearly full", for that frame's pool alone.
    pub fn has_share_free(&mut self, len: usize, div: usize) -> bool {
        let Some(large) = self.pool_for(len) else {
            return false;
        };
        let l = &self.bufs.layout;
        let size = if large { l.nlarge } else { l.nbufs } as usize;
        self.has_free_in(large, (size / div.max(1)).max(1))
    }

    /// Which pool holds a frame of `len` bytes: `Some(false)` the small buffers,
    /// `Some(true)` the large ones, `None` if no buffer holds it.
    fn pool_for(&self, len: usize) -> Option<bool> {
        let l = &self.bufs.layout;
        if len <= l.buf_size as usize {
            Some(false)
        } else if l.nlarge > 0 && len <= l.large_size as usize {
            Some(true)
        } else {
            None
        }
    }

    /// Number of small buffers (the large ones are few and only for large frames).
    pub fn nbufs(&self) -> usize {
        self.bufs.layout.nbufs as usize
    }

    /// Take back buffers the receiver returned; each index is checked to be one we lent.
    pub fn reclaim(&mut self) {
        loop {
            match self.ret.pop() {
                Ok(Some(d)) => {
                    let (w, b) = ((d.buf / 64) as usize, d.buf % 64);
                    if d.buf < self.bufs.total() && self.lent[w] & (1 << b) != 0 {
                        self.lent[w] &= !(1 << b);
                        self.push_free(d.buf);
                    } else {
                        ChannelFaults::bump(&self.faults.bad_return);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    ChannelFaults::bump(&self.faults.ring_corrupt);
                    break;
                }
            }
        }
        self.ret.release();
    }

    /// Start over after a previous owner of this end went away: wait (up to `timeout`)
    /// until the receiver consumed every frame already posted, then forget the buffers it
    /// returned to the previous owner. All buffers are then ours and free; without this a
    /// stale return could free a buffer the receiver still reads.
    pub fn resync(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let drained = loop {
            match self.ring.free() {
                Ok(n) if n == self.ring_size() => break true,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_micros(200))
                }
                _ => break false,
            }
        };
        // A receiver publishes its returns before releasing ring slots (see
        // `ChannelReceiver::flush`), so once the ring is drained every return is visible.
        while let Ok(Some(_)) = self.ret.pop() {}
        self.ret.release();
        drained
    }

    /// Take over this end from a sender that went away without telling anyone which
    /// buffers it had lent (a restarted master), without waiting: buffers named by frames
    /// the receiver has not released yet stay lent (they come back on the return ring as
    /// usual), returns already waiting are taken back, and every other buffer is free.
    /// The consumer index is read before the returns are drained, so a buffer returned
    /// meanwhile is counted once, as lent, and reclaimed later.
    pub fn adopt(&mut self) {
        let n = self.bufs.total();
        let posted = match self.ring.unconsumed() {
            Ok(p) => p,
            Err(_) => {
                ChannelFaults::bump(&self.faults.ring_corrupt);
                Vec::new()
            }
        };
        let mut lent = vec![0u64; n.div_ceil(64) as usize];
        for d in posted {
            if d.buf < n {
                lent[(d.buf / 64) as usize] |= 1 << (d.buf % 64);
            } else {
                ChannelFaults::bump(&self.faults.bad_desc);
            }
        }
        loop {
            match self.ret.pop() {
                Ok(Some(d)) if d.buf < n => lent[(d.buf / 64) as usize] &= !(1 << (d.buf % 64)),
                Ok(Some(_)) => ChannelFaults::bump(&self.faults.bad_return),
                Ok(None) => break,
                Err(_) => {
                    ChannelFaults::bump(&self.faults.ring_corrupt);
                    break;
                }
            }
        }
        self.ret.release();
        self.set_free_except(&lent);
    }

    fn ring_size(&self) -> u32 {
        self.ring.size()
    }

    /// A free buffer to write a frame of `len` bytes into: a small one if the frame
    /// fits, else a large one; `None` if all of that pool are lent out or no buffer
    /// holds `len` bytes.
    pub fn alloc(&mut self, len: usize) -> Option<u32> {
        let large = self.pool_for(len)?;
        self.has_free_in(large, 1);
        let buf = self.stack(large).pop()?;
        // The next frame is likely as long as this one and will take the buffer now on
        // top: start taking its lines now, so writing that frame does not wait for them.
        // The receiver read them last, on another core (or at 10,000 connections they
        // fell out of the caches since): each write to such a line waits in the store
        // queue until the line arrives, and a full queue stalls the whole stack
        // (docs/benchmarks.md, *Frames taken ahead*).
        if let Some(&next) = self.stack(large).last() {
            self.bufs.prefetch_for_write(next, len, self.prefetchw);
        }
        Some(buf)
    }

    /// Give an allocated buffer back without posting it.
    pub fn cancel(&mut self, buf: u32) {
        self.push_free(buf);
    }

    fn push_free(&mut self, buf: u32) {
        let large = self.bufs.is_large(buf);
        self.stack(large).push(buf);
    }

    /// Bytes of buffer `buf` (0 if there is no such buffer).
    pub fn size_of(&self, buf: u32) -> usize {
        self.bufs.size_of(buf) as usize
    }

    /// Writable pointer to an allocated buffer ([`size_of`](Self::size_of) bytes: at
    /// least the `len` it was allocated for), for a libOS writing its frame in place. The
    /// master uses [`write_at`](Self::write_at) instead.
    pub fn buf_ptr(&self, buf: u32) -> *mut u8 {
        self.bufs.ptr(buf)
    }

    /// Copy `src` into buffer `buf` (allocated, not yet posted) at `offset`. False
    /// (nothing written) if it does not fit the buffer.
    pub fn write_at(&mut self, buf: u32, offset: usize, src: &[u8]) -> bool {
        let Some(dst) = self.bufs.range(buf, offset, src.len()) else {
            return false;
        };
        // SAFETY: the range was bounds-checked inside the validated buffer area.
        unsafe { copy_bytes(src.as_ptr(), dst, src.len()) };
        true
    }

    /// Copy up to `dst.len()` bytes from `offset` in buffer `buf` back out (what was just
    /// written there, unless the receiver, which maps it too, changed it since). Returns
    /// the bytes copied (0 if out of range).
    pub fn read_back(&self, buf: u32, offset: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.size_of(buf).saturating_sub(offset));
        let Some(src) = self.bufs.range(buf, offset, n) else {
            return 0;
        };
        // SAFETY: the range was bounds-checked inside the validated buffer area.
        unsafe { copy_bytes(src, dst.as_mut_ptr(), n) };
        n
    }

    /// Post `len` bytes of buffer `buf` (from [`alloc`](Self::alloc)). Not visible until
    /// [`flush`](Self::flush). On a full or corrupt ring the buffer goes back to the free
    /// list and `false` is returned: the frame is dropped.
    pub fn post(&mut self, buf: u32, len: usize) -> bool {
        debug_assert!(len <= self.size_of(buf));
        let d = Desc {
            buf,
            len: len as u32,
            flags: 0,
            _reserved: 0,
        };
        match self.ring.push(d) {
            Ok(true) => {
                self.lent[(buf / 64) as usize] |= 1 << (buf % 64);
                true
            }
            Ok(false) => {
                self.push_free(buf);
                false
            }
            Err(_) => {
                ChannelFaults::bump(&self.faults.ring_corrupt);
                self.push_free(buf);
                false
            }
        }
    }

    /// Copy `frame` into a new buffer and post it. Returns false (frame dropped) if no
    /// buffer or ring slot is free or the frame is too long.
    pub fn send_copy(&mut self, frame: &[u8]) -> bool {
        let Some(buf) = self.alloc(frame.len()) else {
            return false;
        };
        if !self.write_at(buf, 0, frame) {
            self.cancel(buf);
            return false;
        }
        self.post(buf, frame.len())
    }

    /// Publish posted frames and wake the receiver if it sleeps. True if anything was new.
    pub fn flush(&mut self) -> bool {
        // Take returned buffers back early, not only once the free stack runs dry: the
        // next frames then go into buffers used moments ago, still in the caches, instead
        // of walking the whole buffer area (megabytes with large frames) through them.
        if self.nbufs().saturating_sub(self.free.len()) > self.hot
            || (self.bufs.layout.nlarge as usize).saturating_sub(self.free_large.len())
                > self.hot_large
        {
            self.reclaim();
        }
        if self.ring.publish() {
            // SAFETY: the bell is in a live mapping (constructor contract).
            unsafe { doorbell::ring(self.receiver_bell) };
            true
        } else {
            false
        }
    }

    /// True if some buffer is free or can be reclaimed now.
    pub fn can_alloc(&mut self) -> bool {
        self.has_free(1)
    }
}

impl ChannelReceiver {
    /// Bytes of the largest buffer: the longest frame a validated descriptor may name.
    pub fn buf_size(&self) -> usize {
        self.bufs.layout.max_frame() as usize
    }

    /// Build the receiving end. `layout` must already be validated.
    ///
    /// # Safety
    /// As for [`ChannelSender::new`].
    pub unsafe fn new(
        map: &SharedMap,
        layout: &ChannelLayout,
        sender_bell: *const Doorbell,
        faults: std::sync::Arc<ChannelFaults>,
    ) -> Option<Self> {
        let p = parts(map, layout)?;
        Some(ChannelReceiver {
            ring: Consumer::new(p.ring),
            ret: Producer::new(p.ret),
            bufs: p.bufs,
            sender_bell,
            faults,
        })
    }

    /// Next posted frame, validated: its buffer index is in range and its length fits the
    /// buffer. Bad descriptors are dropped and counted; their buffer (if the index is
    /// valid) goes straight back so the sender does not leak it.
    pub fn recv(&mut self) -> Option<RxFrame> {
        loop {
            let d = match self.ring.pop() {
                Ok(Some(d)) => d,
                Ok(None) => return None,
                Err(_) => {
                    ChannelFaults::bump(&self.faults.ring_corrupt);
                    return None;
                }
            };
            if let Some(f) = self.frame_of(d) {
                return Some(f);
            }
            ChannelFaults::bump(&self.faults.bad_desc);
            if d.buf < self.bufs.total() {
                self.give_back(d.buf);
            }
        }
    }

    /// `d` as a frame of this channel, if its buffer index is in range and its length
    /// fits that buffer (a small one's size for a small buffer).
    fn frame_of(&self, d: Desc) -> Option<RxFrame> {
        (d.len != 0 && d.len <= self.bufs.size_of(d.buf)).then_some(RxFrame {
            buf: d.buf,
            len: d.len,
        })
    }

    /// Copy up to `dst.len()` first bytes of the frame `k` places after the next one into
    /// `dst`, without taking it; 0 if there is no such frame or its descriptor is bad
    /// (`recv` counts that when it gets there). For a look ahead only: the sender may
    /// still change a posted frame's bytes, so nothing may rely on them.
    pub fn peek_head(&mut self, k: u32, dst: &mut [u8]) -> usize {
        match self.ring.peek(k).and_then(|d| self.frame_of(d)) {
            Some(f) => self.copy_out(f, 0, dst),
            None => 0,
        }
    }

    /// Pointer to the bytes of a received frame, for a libOS reading it in place. They
    /// stay in the shared buffer (the peer could still scribble on them; treat them as
    /// untrusted bytes). The master uses [`copy_out`](Self::copy_out) instead.
    pub fn frame_ptr(&self, f: RxFrame) -> *const u8 {
        self.bufs.ptr(f.buf)
    }

    /// Copy up to `dst.len()` bytes of frame `f` from `offset` into private memory.
    /// Returns the bytes copied: `min(dst.len(), f.len - offset)`, 0 if `f` is not a
    /// frame of this channel. The bytes are a snapshot: decide on the copy, never on a
    /// second read.
    pub fn copy_out(&self, f: RxFrame, offset: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min((f.len as usize).saturating_sub(offset));
        let Some(src) = self.bufs.range(f.buf, offset, n) else {
            return 0;
        };
        // SAFETY: the range was bounds-checked inside the validated buffer area.
        unsafe { copy_bytes(src, dst.as_mut_ptr(), n) };
        n
    }

    /// Return a consumed buffer to the sender (visible at the next flush).
    pub fn give_back(&mut self, buf: u32) {
        match self.ret.push(Desc {
            buf,
            ..Default::default()
        }) {
            Ok(true) => {}
            // The return ring holds as many entries as there are buffers, so it is full
            // only if the sender lies about its consumer index.
            Ok(false) | Err(_) => ChannelFaults::bump(&self.faults.ring_corrupt),
        }
    }

    /// Publish consumed slots and returned buffers; wake the sender if it waits.
    pub fn flush(&mut self) {
        // Returns first: a sender that re-attaches waits for the ring to drain and then
        // forgets returns, so every return must be visible before the slot is released.
        let returned = self.ret.publish();
        self.ring.release();
        if returned {
            // SAFETY: the bell is in a live mapping (constructor contract).
            unsafe { doorbell::ring(self.sender_bell) };
        }
    }

    /// True if frames are waiting.
    pub fn has_work(&mut self) -> bool {
        self.ring.has_work()
    }

    /// Hand back every waiting frame unread (stale frames left for a previous owner).
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(f) = self.recv() {
            self.give_back(f.buf);
            n += 1;
        }
        self.flush();
        n
    }
}
