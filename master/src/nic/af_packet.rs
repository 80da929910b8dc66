//! `--nic af-packet:IFACE`: an existing interface (a veth end, a physical NIC) through
//! AF_PACKET memory-mapped rings.
//!
//! One `SOCK_RAW` packet socket per interface with an RX ring and a TX ring in one `mmap`,
//! in one of two TPACKET versions ([`RingVersion`]):
//!
//! - **V2 (the default)**: both rings are arrays of fixed slots (`tpacket2_hdr` + frame).
//!   The kernel hands each received frame over as soon as it is written, so a frame costs
//!   what a plain socket costs (measured here: ~3 µs from `send` on the far veth end to
//!   `rx_burst`).
//! - **V3**: the RX ring is the block ring: the kernel packs frames back to back into a
//!   block (`tpacket_block_desc` + a chain of `tpacket3_hdr`) and hands the whole block
//!   over only when it is full or its retire timer (`tp_retire_blk_tov`, 1 ms, the
//!   smallest the API takes) fires. Under load that batches nicely; at a low rate every
//!   frame waits for the timer: ~730 µs p50, up to a few ms, measured here — 200× the V2
//!   figure and ten times the kernel TCP path DockNet is meant to beat. So V2 is the
//!   default and V3 is kept for bulk capture-like loads (`open_with`). The V3 TX ring
//!   (Linux 4.11+) is run like the V2 one: fixed slots, `tp_next_offset == 0`; the packet
//!   version is per socket, so V3 RX forces V3 TX.
//!
//! [`rx_burst`](Nic::rx_burst) walks slots (V2) or a block's frame chain (V3), hands each
//! frame to the caller and gives the slot or block back (`TP_STATUS_KERNEL`, Release);
//! a partly walked V3 block is remembered across calls. Every offset and length the kernel
//! wrote is checked against its slot or block before a slice is made: a bad one gives the
//! slot/block back and is counted (`rx_dropped`), never a panic.
//! [`tx`](Nic::tx) writes the frame in place in the next slot and marks it
//! `TP_STATUS_SEND_REQUEST`; [`flush_tx`](Nic::flush_tx) makes one `sendto(MSG_DONTWAIT)`
//! per batch (retried next round if the device is busy). `PACKET_QDISC_BYPASS` skips the
//! qdisc (without offloads only, see below) and `PACKET_LOSS` makes the kernel skip (not
//! stall on) a frame it refuses.
//!
//! The socket is created with protocol 0 (it hears nothing) and only bound with
//! `ETH_P_ALL` to the interface once both rings exist, so no frame of another interface
//! ever lands in the ring. Frames the socket itself sent are not looped back
//! (`PACKET_IGNORE_OUTGOING`, Linux 4.20+; `sll_pkttype == PACKET_OUTGOING` frames are
//! skipped as well, for older kernels). The interface is put in promiscuous mode for as
//! long as the socket lives. Kernel ring overruns (`PACKET_STATISTICS` `tp_drops`) are read
//! every 64 blocks and on [`stats`](Nic::stats), and count in `rx_dropped`.
//!
//! Two things the kernel hands an AF_PACKET reader that a NIC would not:
//! - frames sent by the kernel on the other end of a veth carry `CHECKSUM_PARTIAL`
//!   (`TP_STATUS_CSUMNOTREADY`): their TCP/UDP checksum is not filled in. They are
//!   completed in place ([`crate::csum::fill`], IPv4) before the caller sees them, as the
//!   switch verifies checksums on ingress.
//! - on an interface with GRO/LRO on, the kernel may hand up merged frames larger than
//!   the MTU. They are dropped and counted (`rx_dropped`), with a one-time warning that
//!   names the `ethtool -K IFACE gro off lro off` fix.

use std::cell::Cell;
use std::mem::{offset_of, size_of};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{iface_mac_mtu, CsumState, Fd, Nic, NicStats, RxMeta, TxMeta};

/// Size of one RX block. Large enough for one frame of any MTU up to 64 KiB + headers.
const RX_BLOCK_SIZE: usize = 256 * 1024;
/// RX blocks: 64 × 256 KiB = 16 MiB, ~10 000 full-size frames of slack.
const RX_BLOCK_NR: usize = 64;
/// Block retire timeout in ms: the smallest value the API takes (0 means "kernel picks",
/// which is 8 ms or more).
const RX_RETIRE_TOV_MS: u32 = 1;
/// TX ring: blocks of this size, carved into fixed frame slots.
const TX_BLOCK_SIZE: usize = 256 * 1024;
/// TX blocks: 8 × 256 KiB = 2 MiB, 1024 slots of 2 KiB at MTU 1500.
const TX_BLOCK_NR: usize = 8;
/// Smallest slot size (header + frame), a power of two.
const MIN_FRAME_SIZE: usize = 2048;
/// With offloads (`PACKET_VNET_HDR`): slot size, RX and TX. The kernel allocates ring
/// blocks in power-of-two page runs, so 64 KiB (not 64 KiB + headers): a slot holds a
/// 65 460-byte frame on V2 RX (65 536 - 76 bytes of headers), enough for the kernel's own
/// GSO frames (`sk_gso_max_size` = 65 536 - 321) and for pipe-MTU-65000 frames.
const GSO_FRAME_SIZE: usize = 64 * 1024;
/// With offloads: RX blocks (4 slots each): 128 × 256 KiB = 32 MiB, 512 slots.
const GSO_RX_BLOCK_NR: usize = 128;
/// With offloads: TX blocks: 64 × 256 KiB = 16 MiB, 256 slots.
const GSO_TX_BLOCK_NR: usize = 64;
/// Longest IPv4 packet in an Ethernet frame: 65 535 + 14.
const MAX_IPV4_FRAME: usize = 65_535 + 14;
/// `TPACKET_ALIGN(x)` (linux/if_packet.h).
const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}
/// Offsets inside `struct tpacket_block_desc` (linux/if_packet.h): `version`,
/// `offset_to_priv`, then the `tpacket_hdr_v1` union member.
const BLK_HDR_OFF: usize = offset_of!(libc::tpacket_block_desc, hdr);
const BLK_STATUS_OFF: usize = BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, block_status);
const BLK_NUM_PKTS_OFF: usize = BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, num_pkts);
const BLK_FIRST_OFF: usize = BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);

/// Where the fields of a frame header sit, for `tpacket2_hdr` or `tpacket3_hdr`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    status: usize,
    len: usize,
    snaplen: usize,
    mac: usize,
    /// `tp_next_offset` (V3 only).
    next: Option<usize>,
    /// `TPACKET_ALIGN(sizeof(header))`: where the `sockaddr_ll` follows on RX and where
    /// frame data starts in a TX slot (`po->tp_hdrlen - sizeof(struct sockaddr_ll)` in
    /// af_packet.c, without PACKET_TX_HAS_OFF).
    hdr: usize,
}

const V3: Layout = Layout {
    status: offset_of!(libc::tpacket3_hdr, tp_status),
    len: offset_of!(libc::tpacket3_hdr, tp_len),
    snaplen: offset_of!(libc::tpacket3_hdr, tp_snaplen),
    mac: offset_of!(libc::tpacket3_hdr, tp_mac),
    next: Some(offset_of!(libc::tpacket3_hdr, tp_next_offset)),
    hdr: tpacket_align(size_of::<libc::tpacket3_hdr>()),
};

const V2: Layout = Layout {
    status: offset_of!(libc::tpacket2_hdr, tp_status),
    len: offset_of!(libc::tpacket2_hdr, tp_len),
    snaplen: offset_of!(libc::tpacket2_hdr, tp_snaplen),
    mac: offset_of!(libc::tpacket2_hdr, tp_mac),
    next: None,
    hdr: tpacket_align(size_of::<libc::tpacket2_hdr>()),
};

impl Layout {
    /// Offset of `sll_pkttype` in the `sockaddr_ll` after an RX header.
    const fn pkttype(&self) -> usize {
        self.hdr + offset_of!(libc::sockaddr_ll, sll_pkttype)
    }
}
/// `sizeof(struct virtio_net_hdr)` (linux/virtio_net.h): what `PACKET_VNET_HDR` puts before
/// every frame, on RX and on TX.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is to be filled from `csum_start`.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VNET_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on `gso_type`).
pub const VNET_GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (without `num_buffers`). Its 16-bit fields are in the host's
/// byte order: AF_PACKET reads and writes them as legacy virtio (`vio_le()`: little-endian
/// exactly when the host is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP) to copy into the linear part.
    pub hdr_len: u16,
    /// Payload bytes per segment, for GSO.
    pub gso_size: u16,
    /// Where checksumming starts (from the start of the frame) ...
    pub csum_start: u16,
    /// ... and where, from `csum_start`, the result goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header for a frame sent with `meta`; `frame` is the frame as written (to find
    /// the TCP header length, so the kernel copies exactly the headers into the skb's
    /// linear part).
    fn for_tx(meta: &TxMeta, frame: &[u8]) -> VnetHdr {
        let mut h = VnetHdr::default();
        if let Some((start, off)) = meta.csum_partial {
            h.flags = VNET_F_NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = off;
            h.hdr_len = start + off + 2;
        }
        if let Some(size) = meta.gso_size {
            h.gso_type = VNET_GSO_TCPV4;
            h.gso_size = size;
            let start = h.csum_start as usize;
            if let Some(&doff) = frame.get(start + 12) {
                let end = start + (doff >> 4) as usize * 4;
                if end >= start + 20 && end <= frame.len() {
                    h.hdr_len = end as u16;
                }
            }
        }
        h
    }
}

/// Read the packet statistics every this many `rx_burst` calls that found a block.
const STATS_EVERY_BLOCKS: u32 = 64;

/// Which TPACKET version (and so which RX ring) to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RingVersion {
    /// TPACKET_V2: one fixed slot per frame, handed to user space as soon as it is
    /// written. Latency of a plain socket (a few µs); the default.
    #[default]
    V2,
    /// TPACKET_V3: variable-size frames packed into blocks, handed over when a block
    /// fills or its 1 ms retire timer fires. Denser, fewer status writes, but at a low rate
    /// every frame waits for the timer (~0.7-1 ms measured here).
    V3,
}

/// An interface driven through TPACKET rings.
pub struct AfPacketNic {
    name: String,
    iface: String,
    fd: Fd,
    map: Map,
    rx: Rx,
    tx: TxRing,
    mac: [u8; 6],
    max_frame: usize,
    /// Frames carry a virtio-net header (`PACKET_VNET_HDR`): GSO and checksum offload.
    vnet: bool,
    /// Largest GSO frame taken and handed up; `max_frame` without `vnet`.
    gso_max_frame: usize,
    stats: NicStats,
    /// Kernel drop counter (`tp_drops`); the kernel zeroes it on every read, so it is
    /// accumulated here. A `Cell` so that [`Nic::stats`] (which takes `&self`) can refresh it.
    kernel_drops: Cell<u64>,
    blocks_since_stats: u32,
    warned_oversize: bool,
}

/// The shared ring mapping.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to the
        // mapping after the owning `AfPacketNic` is dropped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// SAFETY: the raw pointers in `AfPacketNic`, `RxRing` and `TxRing` point into the mapping
// owned by the same `AfPacketNic`; it is only touched through `&mut self` (or, for
// statistics, through a syscall on the fd), so moving it to another thread is sound.
unsafe impl Send for AfPacketNic {}

/// Where the RX walk stands.
struct RxRing {
    base: *mut u8,
    block_size: usize,
    block_nr: usize,
    /// Block the walk is in (or waits on).
    cur: usize,
    /// Frames left in the current block; 0 = no block taken yet.
    left: u32,
    /// Offset in the current block of the next frame header.
    off: usize,
    /// Frames are preceded by a virtio-net header.
    vnet: bool,
}

/// Counters the RX walk updates.
#[derive(Default)]
struct RxCounters {
    frames: u64,
    bytes: u64,
    /// Frames dropped here (oversize, truncated by the kernel, GSO of another protocol
    /// than TCP/IPv4).
    dropped: u64,
    /// Blocks given back early because of an inconsistent header.
    bad_blocks: u64,
    /// Size of the largest oversize frame dropped since the last look (for the warning).
    oversize: usize,
    /// Blocks given back by this walk.
    blocks: u32,
}

/// One frame header read out of a block, validated against it.
#[derive(Debug, PartialEq, Eq)]
struct RxFrame {
    /// Start and length of the frame data in the block.
    start: usize,
    len: usize,
    /// Original length on the wire (`tp_len`); larger than `len` if the kernel truncated.
    wire_len: usize,
    status: u32,
    pkttype: u8,
    /// `tp_next_offset` (0 on the block's last frame).
    next: usize,
    /// The virtio-net header before the frame (with `PACKET_VNET_HDR`).
    vnet: Option<VnetHdr>,
}

fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

/// Read and validate the frame header (layout `l`) at `off` in `area` (a V3 block or a
/// V2 frame slot): the header, its `sockaddr_ll`, the virtio-net header (if `vnet`: just
/// before the frame) and the frame data must all lie inside the area. `None` if not.
fn parse_frame(area: &[u8], off: usize, l: &Layout, vnet: bool) -> Option<RxFrame> {
    let block = area;
    // The header and the sockaddr_ll after it must fit.
    if off.checked_add(l.hdr + size_of::<libc::sockaddr_ll>())? > block.len() {
        return None;
    }
    let next = match l.next {
        Some(o) => rd_u32(block, off + o)? as usize,
        None => 0,
    };
    let snaplen = rd_u32(block, off + l.snaplen)? as usize;
    let wire_len = rd_u32(block, off + l.len)? as usize;
    let status = rd_u32(block, off + l.status)?;
    let mac = rd_u16(block, off + l.mac)? as usize;
    let pkttype = *block.get(off + l.pkttype())?;
    let vlen = if vnet { VNET_HDR_LEN } else { 0 };
    if mac < l.hdr + vlen {
        return None; // the data would overlap the header
    }
    let start = off.checked_add(mac)?;
    if start.checked_add(snaplen)? > block.len() {
        return None;
    }
    let vnet = if vnet {
        Some(VnetHdr::decode(&block[start - VNET_HDR_LEN..start])?)
    } else {
        None
    };
    Some(RxFrame {
        start,
        len: snaplen,
        wire_len,
        status,
        pkttype,
        next,
        vnet,
    })
}

/// Complete the checksums of a frame the kernel handed up with `CHECKSUM_PARTIAL`
/// (IPv4 only: the only network protocol the switch carries). Leaves other frames alone.
fn complete_checksum(frame: &mut [u8]) {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    if let Some(ip) = frame.get_mut(14..14 + total) {
        crate::csum::fill(ip);
    }
}

/// What the caller of an RX walk takes.
#[derive(Clone, Copy, Debug)]
struct RxWant {
    /// The link MTU's frame size.
    max_frame: usize,
    /// Largest TCP/IPv4 GSO frame taken (== max_frame for a caller without metadata).
    gso_max_frame: usize,
    /// The caller takes metadata: hand partial checksums up as they are. Without, they are
    /// completed in software (and GSO frames are dropped as oversize).
    meta: bool,
}

impl RxWant {
    /// For [`Nic::rx_burst`]: plain frames, no offloads.
    #[cfg(test)]
    fn plain(max_frame: usize) -> RxWant {
        RxWant {
            max_frame,
            gso_max_frame: max_frame,
            meta: false,
        }
    }
}

/// Hand one parsed frame to `f` unless it is ours looped back, truncated or oversize.
/// Returns whether `f` was called.
fn deliver(
    area: &mut [u8],
    fr: &RxFrame,
    want: RxWant,
    c: &mut RxCounters,
    f: &mut dyn FnMut(&[u8], RxMeta),
) -> bool {
    if fr.pkttype == libc::PACKET_OUTGOING {
        return false; // our own frame looped back: not traffic
    }
    let vnet = fr.vnet.unwrap_or_default();
    // A frame longer than the MTU is only taken as a TCP/IPv4 GSO frame (sent by the
    // kernel with TSO, or merged by GRO), and only by a caller that takes metadata.
    let gso = fr.len > want.max_frame
        && want.meta
        && vnet.gso_type & !VNET_GSO_ECN == VNET_GSO_TCPV4
        && vnet.gso_size > 0;
    if fr.len != fr.wire_len || (fr.len > want.max_frame && !gso) || fr.len > want.gso_max_frame {
        c.dropped += 1;
        c.oversize = c.oversize.max(fr.wire_len);
        return false;
    }
    // parse_frame checked the range against the area.
    let frame = &mut area[fr.start..fr.start + fr.len];
    let partial =
        fr.status & libc::TP_STATUS_CSUMNOTREADY != 0 || vnet.flags & VNET_F_NEEDS_CSUM != 0;
    let mut meta = RxMeta::default();
    if want.meta {
        meta.csum = if partial {
            CsumState::Partial
        } else if fr.status & libc::TP_STATUS_CSUM_VALID != 0 || vnet.flags & VNET_F_DATA_VALID != 0
        {
            CsumState::Valid
        } else {
            CsumState::Unknown
        };
        if gso {
            meta.gso_size = vnet.gso_size;
        }
    } else if partial {
        complete_checksum(frame);
    }
    f(frame, meta);
    c.frames += 1;
    c.bytes += fr.len as u64;
    true
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

    /// Hand up to `max` frames to `f`; see [`Nic::rx_burst`].
    fn burst(
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

/// A ring of fixed frame slots (TPACKET_V2 RX, and the TX ring of either version).
struct Slots {
    base: *mut u8,
    block_size: usize,
    frame_size: usize,
    frames_per_block: usize,
    frame_nr: usize,
    /// Header layout of a slot.
    l: Layout,
    /// Next slot to read (RX) or fill (TX).
    head: usize,
}

impl Slots {
    /// Start of slot `i` (`i < frame_nr`); slots never straddle blocks.
    fn slot(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        // SAFETY: `i < frame_nr = frames_per_block * block_nr`, so `off` + frame_size is
        // inside this ring's part of the mapping.
        unsafe { self.base.add(off) }
    }

    fn status(&self, slot: *mut u8) -> &AtomicU32 {
        // SAFETY: `slot` is a slot start (16-aligned), tp_status is at a 4-aligned offset
        // inside it; the mapping outlives `&self`. The kernel writes it too: atomic access.
        unsafe { &*(slot.add(self.l.status) as *const AtomicU32) }
    }

    fn advance(&mut self) {
        self.head = (self.head + 1) % self.frame_nr;
    }
}

/// TPACKET_V2 RX: one slot per frame, handed over one by one.
struct FrameRx {
    s: Slots,
    /// Frames are preceded by a virtio-net header.
    vnet: bool,
}

impl FrameRx {
    /// Hand up to `max` frames to `f`; see [`Nic::rx_burst`].
    fn burst(
        &mut self,
        max: usize,
        want: RxWant,
        c: &mut RxCounters,
        f: &mut dyn FnMut(&[u8], RxMeta),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let slot = self.s.slot(self.s.head);
            if self.s.status(slot).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break; // the kernel still owns it: nothing more to read
            }
            {
                // SAFETY: the slot is inside the mapping and, its status being
                // TP_STATUS_USER (Acquire above), ours until we store TP_STATUS_KERNEL
                // below, after this slice is gone. No other reference exists (`&mut self`).
                let area = unsafe { std::slice::from_raw_parts_mut(slot, self.s.frame_size) };
                match parse_frame(area, 0, &self.s.l, self.vnet) {
                    Some(fr) => {
                        if deliver(area, &fr, want, c, f) {
                            n += 1;
                        }
                    }
                    None => c.bad_blocks += 1,
                }
            }
            self.s
                .status(slot)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.s.advance();
            if self.s.head.is_multiple_of(self.s.frames_per_block) {
                c.blocks += 1;
            }
        }
        n
    }
}

/// The RX side, by ring version.
enum Rx {
    Block(RxRing),
    Frames(FrameRx),
}

/// Where the TX ring stands.
struct TxRing {
    s: Slots,
    /// Frames marked since the last kick (or a kick that failed and must be retried).
    pending: usize,
    /// Frames are preceded by a virtio-net header (built from the `TxMeta`).
    vnet: bool,
}

impl TxRing {
    /// Largest frame a slot holds.
    fn capacity(&self) -> usize {
        self.s.frame_size - self.s.l.hdr - if self.vnet { VNET_HDR_LEN } else { 0 }
    }

    /// Queue one frame; see [`Nic::tx_meta`]. The caller checked `len` against max_frame
    /// (or gso_max_frame) and `meta` against what the ring does (none without `vnet`).
    fn push(&mut self, len: usize, meta: &TxMeta, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let l = self.s.l;
        if len > self.capacity() {
            return false;
        }
        let vlen = if self.vnet { VNET_HDR_LEN } else { 0 };
        let slot = self.s.slot(self.s.head);
        let status = self.s.status(slot).load(Ordering::Acquire);
        // TP_STATUS_WRONG_FORMAT: the kernel refused the frame (cannot happen with
        // PACKET_LOSS set, which skips such frames); the slot is free again either way.
        if status != libc::TP_STATUS_AVAILABLE && status & libc::TP_STATUS_WRONG_FORMAT == 0 {
            return false;
        }
        // SAFETY: the slot's status is AVAILABLE (Acquire), so the kernel is done with it
        // and will not touch it before we store SEND_REQUEST; the header and `len` data
        // bytes lie inside the slot (checked above). No other reference exists (`&mut self`).
        let s = unsafe { std::slice::from_raw_parts_mut(slot, l.hdr + vlen + len) };
        // tp_len counts the virtio-net header (tpacket_snd takes it off the front).
        let len32 = ((vlen + len) as u32).to_ne_bytes();
        if let Some(next) = l.next {
            // V3 TX slots are fixed-size: the kernel requires tp_next_offset == 0.
            s[next..next + 4].copy_from_slice(&0u32.to_ne_bytes());
        }
        s[l.len..l.len + 4].copy_from_slice(&len32);
        s[l.snaplen..l.snaplen + 4].copy_from_slice(&len32);
        fill(&mut s[l.hdr + vlen..]);
        if self.vnet {
            let (h, frame) = s[l.hdr..].split_at_mut(VNET_HDR_LEN);
            h.copy_from_slice(&VnetHdr::for_tx(meta, frame).encode());
        }
        self.s
            .status(slot)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.s.advance();
        self.pending += 1;
        true
    }
}

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// `setsockopt(fd, SOL_PACKET, opt, &val)`.
fn set_opt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> std::io::Result<()> {
    // SAFETY: `val` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(os_err())
    } else {
        Ok(())
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl AfPacketNic {
    /// Open `iface` (an existing interface) with an RX and a TX ring of the default
    /// version ([`RingVersion::V2`]). Needs CAP_NET_RAW.
    pub fn open(iface: &str) -> Result<AfPacketNic, String> {
        AfPacketNic::open_with(iface, RingVersion::default())
    }

    /// Open `iface` with rings of TPACKET version `version`, with offloads if the kernel
    /// takes `PACKET_VNET_HDR`.
    pub fn open_with(iface: &str, version: RingVersion) -> Result<AfPacketNic, String> {
        AfPacketNic::open_offload(iface, version, true)
    }

    /// Open `iface` with rings of TPACKET version `version`; `offload`: try
    /// `PACKET_VNET_HDR` (GSO and checksum offload, 64 KiB slots), falling back to plain
    /// MTU-sized slots if the kernel refuses it.
    pub fn open_offload(
        iface: &str,
        version: RingVersion,
        offload: bool,
    ) -> Result<AfPacketNic, String> {
        let e = |what: &str, err: std::io::Error| format!("af-packet:{iface}: {what}: {err}");
        let (mac, mtu) = iface_mac_mtu(iface).map_err(|m| format!("af-packet:{iface}: {m}"))?;
        let max_frame = mtu as usize + 14;
        let cname = std::ffi::CString::new(iface)
            .map_err(|_| format!("af-packet:{iface}: bad interface name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(e("if_nametoindex", os_err()));
        }

        // Protocol 0: the socket hears nothing until bound below, after the rings exist.
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(e("socket(AF_PACKET, SOCK_RAW)", os_err()));
        }
        let fd = Fd(raw);
        let (v, l) = match version {
            RingVersion::V2 => (libc::tpacket_versions::TPACKET_V2, V2),
            RingVersion::V3 => (libc::tpacket_versions::TPACKET_V3, V3),
        };
        set_opt(fd.0, libc::PACKET_VERSION, &(v as libc::c_int))
            .map_err(|err| e(&format!("setsockopt(PACKET_VERSION, {version:?})"), err))?;
        let one: libc::c_int = 1;
        // Frames we send are not looped back to us. Older kernels (< 4.20) lack the option;
        // the RX walk also skips `PACKET_OUTGOING` frames, so that is only a debug note.
        if let Err(err) = set_opt(fd.0, libc::PACKET_IGNORE_OUTGOING, &one) {
            log::debug!("af-packet:{iface}: PACKET_IGNORE_OUTGOING: {err}; filtering by hand");
        }
        set_opt(fd.0, libc::PACKET_LOSS, &one).map_err(|err| e("setsockopt(PACKET_LOSS)", err))?;
        // Must come before the rings exist (EBUSY after).
        let vnet = offload
            && match set_opt(fd.0, libc::PACKET_VNET_HDR, &one) {
                Ok(()) => true,
                Err(err) => {
                    log::warn!("af-packet:{iface}: setsockopt(PACKET_VNET_HDR): {err}; no GSO or checksum offload");
                    false
                }
            };
        // Without offloads, skip the qdisc. With them, keep it: the bypass path
        // (`__dev_direct_xmit`) drops every skb that `validate_xmit_skb` had to change, i.e.
        // every GSO frame the device cannot take as is (no TSO, or TX checksumming off)
        // and so must be segmented in software; `dev_queue_xmit` segments it instead. On a
        // veth (qdisc `noqueue`) that path costs next to nothing more.
        if !vnet {
            set_opt(fd.0, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(|err| e("setsockopt(PACKET_QDISC_BYPASS)", err))?;
        }

        // A slot holds a header, its sockaddr_ll and a max_frame frame (on RX the frame
        // starts at TPACKET_ALIGN(hdrlen + 16) - 14: 66 bytes in for V2, 82 for V3; 10 more
        // with the virtio-net header).
        let frame_size = if vnet {
            GSO_FRAME_SIZE.max((128 + max_frame).next_power_of_two())
        } else {
            (128 + max_frame).next_power_of_two().max(MIN_FRAME_SIZE)
        };
        let (rx_block_nr, tx_block_nr) = if vnet {
            (GSO_RX_BLOCK_NR, GSO_TX_BLOCK_NR)
        } else {
            (RX_BLOCK_NR, TX_BLOCK_NR)
        };
        let page = 4096;
        // An RX block holds at least one slot (V2) or one frame with its headers (V3).
        let rx_block = RX_BLOCK_SIZE.max(round_up(frame_size, page).next_power_of_two());
        let tx_block = TX_BLOCK_SIZE.max(round_up(frame_size, page).next_power_of_two());
        let rx_fpb = rx_block / frame_size;
        let tx_fpb = tx_block / frame_size;
        let ring = |opt: libc::c_int, what: &str, block: usize, nr: usize, fpb: usize, tov: u32| {
            let r = match version {
                RingVersion::V2 => set_opt(
                    fd.0,
                    opt,
                    &libc::tpacket_req {
                        tp_block_size: block as u32,
                        tp_block_nr: nr as u32,
                        tp_frame_size: frame_size as u32,
                        tp_frame_nr: (fpb * nr) as u32,
                    },
                ),
                // The V3 TX ring takes a tpacket_req3 too, with the V3-only fields zero.
                RingVersion::V3 => set_opt(
                    fd.0,
                    opt,
                    &libc::tpacket_req3 {
                        tp_block_size: block as u32,
                        tp_block_nr: nr as u32,
                        tp_frame_size: frame_size as u32,
                        tp_frame_nr: (fpb * nr) as u32,
                        tp_retire_blk_tov: tov,
                        tp_sizeof_priv: 0,
                        tp_feature_req_word: 0,
                    },
                ),
            };
            r.map_err(|err| e(&format!("setsockopt({what}, {nr} x {block} bytes)"), err))
        };
        ring(
            libc::PACKET_RX_RING,
            "PACKET_RX_RING",
            rx_block,
            rx_block_nr,
            rx_fpb,
            RX_RETIRE_TOV_MS,
        )?;
        ring(
            libc::PACKET_TX_RING,
            "PACKET_TX_RING",
            tx_block,
            tx_block_nr,
            tx_fpb,
            0,
        )?;

        let rx_len = rx_block * rx_block_nr;
        let map_len = rx_len + tx_block * tx_block_nr;
        // SAFETY: mapping the socket's rings (RX first, then TX, as the kernel lays them
        // out) with the total size requested above.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.0,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(e(&format!("mmap of the rings ({map_len} bytes)"), os_err()));
        }
        let map = Map {
            ptr: ptr.cast(),
            len: map_len,
        };

        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(e("bind", os_err()));
        }
        // SAFETY: packet_mreq is plain old data; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        set_opt(fd.0, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|err| e("setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC)", err))?;

        let rx = match version {
            RingVersion::V3 => Rx::Block(RxRing {
                base: map.ptr,
                block_size: rx_block,
                block_nr: rx_block_nr,
                cur: 0,
                left: 0,
                off: 0,
                vnet,
            }),
            RingVersion::V2 => Rx::Frames(FrameRx {
                s: Slots {
                    base: map.ptr,
                    block_size: rx_block,
                    frame_size,
                    frames_per_block: rx_fpb,
                    frame_nr: rx_fpb * rx_block_nr,
                    l,
                    head: 0,
                },
                vnet,
            }),
        };
        let tx = TxRing {
            s: Slots {
                // SAFETY: rx_len < map_len: the TX ring starts inside the mapping.
                base: unsafe { map.ptr.add(rx_len) },
                block_size: tx_block,
                frame_size,
                frames_per_block: tx_fpb,
                frame_nr: tx_fpb * tx_block_nr,
                l,
                head: 0,
            },
            pending: 0,
            vnet,
        };
        // The longest frame every ring holds: a TX slot, and (V2) an RX slot, whose frame
        // starts at TPACKET_ALIGN(hdrlen + 16) + 10 - 14 (tpacket_rcv's macoff).
        let gso_max_frame = if vnet {
            let rx_macoff =
                tpacket_align(l.hdr + size_of::<libc::sockaddr_ll>() + 16) + VNET_HDR_LEN - 14;
            let rx_cap = match version {
                RingVersion::V2 => frame_size - rx_macoff,
                RingVersion::V3 => rx_block - rx_macoff - 64,
            };
            MAX_IPV4_FRAME.min(tx.capacity()).min(rx_cap).max(max_frame)
        } else {
            max_frame
        };
        log::info!(
            "af-packet:{iface}: ifindex {ifindex}, MTU {mtu}, {version:?} rings: RX {rx_block_nr} x {} KiB, TX {} slots of {frame_size} bytes, offloads {}",
            rx_block / 1024,
            tx.s.frame_nr,
            if vnet { format!("on (GSO frames up to {gso_max_frame} bytes)") } else { "off".to_string() }
        );
        Ok(AfPacketNic {
            name: format!("af-packet:{iface}"),
            iface: iface.to_string(),
            fd,
            map,
            rx,
            tx,
            mac,
            max_frame,
            vnet,
            gso_max_frame,
            stats: NicStats::default(),
            kernel_drops: Cell::new(0),
            blocks_since_stats: 0,
            warned_oversize: false,
        })
    }

    /// Add the kernel's ring-overrun count (`tp_drops`, reset by every read) to ours.
    fn poll_kernel_drops(&self) {
        // SAFETY: tpacket_stats_v3 is plain old data; all-zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st`/`len` describe a live buffer of the right size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.0,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + st.tp_drops as u64);
        }
    }

    /// Total size of the ring mapping, for logs and tests.
    pub fn ring_bytes(&self) -> usize {
        self.map.len
    }

    /// Number of TX slots.
    pub fn tx_slots(&self) -> usize {
        self.tx.s.frame_nr
    }

    /// Number of RX slots (V2; 0 for the V3 block ring).
    pub fn rx_slots(&self) -> usize {
        match &self.rx {
            Rx::Frames(r) => r.s.frame_nr,
            Rx::Block(_) => 0,
        }
    }

    /// Whether frames carry a virtio-net header (GSO and checksum offload are on).
    pub fn offloads(&self) -> bool {
        self.vnet
    }

    fn rx(&mut self, max: usize, want: RxWant, f: &mut dyn FnMut(&[u8], RxMeta)) -> usize {
        let mut c = RxCounters::default();
        let n = match &mut self.rx {
            Rx::Block(r) => r.burst(max, want, &mut c, f),
            Rx::Frames(r) => r.burst(max, want, &mut c, f),
        };
        self.stats.rx_frames += c.frames;
        self.stats.rx_bytes += c.bytes;
        self.stats.rx_dropped += c.dropped + c.bad_blocks;
        if c.bad_blocks > 0 {
            log::debug!(
                "{}: gave back {} RX blocks with bad headers",
                self.name,
                c.bad_blocks
            );
        }
        if c.oversize > 0 && !self.warned_oversize {
            self.warned_oversize = true;
            if self.vnet {
                log::warn!(
                    "{}: dropped a {}-byte frame, larger than the MTU allows ({}) and not a TCP/IPv4 GSO frame of at most {} bytes",
                    self.name, c.oversize, self.max_frame, self.gso_max_frame
                );
            } else {
                log::warn!(
                    "{}: dropped a {}-byte frame, larger than the MTU allows ({}); if GRO/LRO is on, turn it off: ethtool -K {} gro off lro off",
                    self.name, c.oversize, self.max_frame, self.iface
                );
            }
        }
        if c.blocks > 0 {
            self.blocks_since_stats += c.blocks;
            if self.blocks_since_stats >= STATS_EVERY_BLOCKS {
                self.blocks_since_stats = 0;
                self.poll_kernel_drops();
            }
        }
        n
    }
}

impl Nic for AfPacketNic {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let want = RxWant {
            max_frame: self.max_frame,
            gso_max_frame: self.max_frame,
            meta: false,
        };
        self.rx(max, want, &mut |frame, _| f(frame))
    }

    fn rx_burst_meta(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> usize {
        let want = RxWant {
            max_frame: self.max_frame,
            gso_max_frame: self.gso_max_frame,
            meta: true,
        };
        self.rx(max, want, f)
    }

    fn tx(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.tx_meta(len, TxMeta::default(), fill)
    }

    fn tx_meta(&mut self, len: usize, meta: TxMeta, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let limit = match meta.gso_size {
            Some(_) => self.gso_max_frame,
            None => self.max_frame,
        };
        let meta_ok = meta == TxMeta::default()
            || (self.vnet && (meta.gso_size.is_none() || meta.csum_partial.is_some()));
        if len <= limit && meta_ok && self.tx.push(len, &meta, fill) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += len as u64;
            true
        } else {
            self.stats.tx_dropped += 1;
            false
        }
    }

    fn gso_max_frame(&self) -> usize {
        self.gso_max_frame
    }

    fn tx_csum_offload(&self) -> bool {
        self.vnet
    }

    fn flush_tx(&mut self) {
        if self.tx.pending == 0 {
            return;
        }
        // SAFETY: a zero-length sendto on our socket: the kernel sends every slot marked
        // TP_STATUS_SEND_REQUEST in the TX ring.
        let r = unsafe {
            libc::sendto(
                self.fd.0,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let err = os_err();
            match err.raw_os_error() {
                // The device is busy: the frames stay queued; kick again next round.
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => return,
                _ => log::debug!("{}: TX kick: {err}", self.name),
            }
        }
        self.tx.pending = 0;
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.0)
    }

    fn stats(&self) -> NicStats {
        self.poll_kernel_drops();
        let mut s = self.stats;
        s.rx_dropped += self.kernel_drops.get();
        s
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

    fn slots(mem: &mut [u64], l: Layout) -> Slots {
        Slots {
            base: mem.as_mut_ptr().cast(),
            block_size: 4096,
            frame_size: 2048,
            frames_per_block: 2,
            frame_nr: 4,
            l,
            head: 0,
        }
    }

    impl TxRing {
        fn push_plain(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
            self.push(len, &TxMeta::default(), fill)
        }
    }

    #[test]
    fn tx_ring_fills_slots_and_stops_when_full() {
        for l in [V2, V3] {
            let frame_size = 2048;
            let mut mem = vec![0u64; 2 * 4096 / 8];
            let mut tx = TxRing {
                s: slots(&mut mem, l),
                pending: 0,
                vnet: false,
            };
            for i in 0..4u8 {
                assert!(tx.push_plain(100, &mut |b: &mut [u8]| b.fill(i)));
            }
            assert!(!tx.push_plain(100, &mut |_: &mut [u8]| panic!("no room")));
            assert!(!tx.push_plain(frame_size, &mut |_: &mut [u8]| panic!("too big")));
            assert_eq!(tx.pending, 4);
            // SAFETY: viewing a Vec<u64> as bytes.
            let bytes: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 2 * 4096) };
            for i in 0..4usize {
                let s = i * frame_size;
                assert_eq!(
                    rd_u32(bytes, s + l.status),
                    Some(libc::TP_STATUS_SEND_REQUEST)
                );
                assert_eq!(rd_u32(bytes, s + l.len), Some(100));
                assert!(bytes[s + l.hdr..s + l.hdr + 100]
                    .iter()
                    .all(|&b| b == i as u8));
            }
            // The kernel sent slot 0: it is usable again.
            bytes[l.status..l.status + 4].copy_from_slice(&libc::TP_STATUS_AVAILABLE.to_ne_bytes());
            assert!(tx.push_plain(60, &mut |b: &mut [u8]| b.fill(9)));
        }
    }

    #[test]
    fn v2_frame_ring_reads_validates_and_gives_back() {
        let mut mem = vec![0u64; 2 * 4096 / 8];
        let mut rx = FrameRx {
            s: slots(&mut mem, V2),
            vnet: false,
        };
        let l = V2;
        let put = |mem: &mut [u64], slot: usize, data: &[u8], snap: u32, mac: u16, pkttype: u8| {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 2 * 4096) };
            let h = slot * 2048;
            b[h + l.len..h + l.len + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[h + l.snaplen..h + l.snaplen + 4].copy_from_slice(&snap.to_ne_bytes());
            b[h + l.mac..h + l.mac + 2].copy_from_slice(&mac.to_ne_bytes());
            b[h + l.pkttype()] = pkttype;
            let m = h + mac as usize;
            if m + data.len() <= b.len() {
                b[m..m + data.len()].copy_from_slice(data);
            }
            b[h + l.status..h + l.status + 4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        };
        let a = vec![0xabu8; 100];
        put(&mut mem, 0, &a, 100, 66, 0);
        put(&mut mem, 1, &a, 100, 66, libc::PACKET_OUTGOING);
        put(&mut mem, 2, &a, 2000, 66, 0); // runs past the slot
        put(&mut mem, 3, &a, 100, 66, 0);
        let mut got = Vec::new();
        let mut c = RxCounters::default();
        let n = rx.burst(10, RxWant::plain(1514), &mut c, &mut |f: &[u8], _| {
            got.push(f.to_vec())
        });
        assert_eq!(n, 2);
        assert_eq!(got, vec![a.clone(), a.clone()]);
        assert_eq!(c.bad_blocks, 1);
        assert_eq!(rx.s.head, 0, "wrapped around");
        // SAFETY: viewing a Vec<u64> as bytes.
        let b: &[u8] = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast(), 2 * 4096) };
        for slot in 0..4 {
            assert_eq!(
                rd_u32(b, slot * 2048 + l.status),
                Some(libc::TP_STATUS_KERNEL)
            );
        }
    }

    #[test]
    fn vnet_header_encodes_and_decodes() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.encode();
        // struct virtio_net_hdr: u8 flags, u8 gso_type, then u16 hdr_len, gso_size,
        // csum_start, csum_offset in host order.
        let mut want = vec![1u8, 1];
        for v in [66u16, 1448, 34, 16] {
            want.extend(v.to_ne_bytes());
        }
        assert_eq!(b.to_vec(), want);
        assert_eq!(VnetHdr::decode(&b), Some(h));
        assert_eq!(VnetHdr::decode(&b[..9]), None);
        assert_eq!(VnetHdr::decode(&[0; 10]), Some(VnetHdr::default()));
    }

    #[test]
    fn vnet_tx_header_follows_the_meta() {
        // Ethernet + IPv4 (IHL 5) + TCP with 12 bytes of options (doff 8).
        let mut f = vec![0u8; 14 + 20 + 32 + 100];
        f[14 + 20 + 12] = 8 << 4;
        let plain = VnetHdr::for_tx(&TxMeta::default(), &f);
        assert_eq!(plain, VnetHdr::default());
        let csum = TxMeta {
            gso_size: None,
            csum_partial: Some((34, 16)),
        };
        let h = VnetHdr::for_tx(&csum, &f);
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start, h.csum_offset, h.hdr_len),
            (VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 34, 16, 52)
        );
        let gso = TxMeta {
            gso_size: Some(1448),
            csum_partial: Some((34, 16)),
        };
        let h = VnetHdr::for_tx(&gso, &f);
        assert_eq!(
            (h.gso_type, h.gso_size, h.hdr_len),
            (VNET_GSO_TCPV4, 1448, 66)
        );
    }

    #[test]
    fn tx_ring_writes_the_vnet_header_before_the_frame() {
        let mut mem = vec![0u64; 2 * 4096 / 8];
        let mut tx = TxRing {
            s: slots(&mut mem, V2),
            pending: 0,
            vnet: true,
        };
        assert_eq!(tx.capacity(), 2048 - V2.hdr - VNET_HDR_LEN);
        let meta = TxMeta {
            gso_size: Some(1000),
            csum_partial: Some((34, 16)),
        };
        let mut f = vec![7u8; 200];
        f[14 + 20 + 12] = 5 << 4;
        assert!(tx.push(200, &meta, &mut |b: &mut [u8]| b.copy_from_slice(&f)));
        assert!(
            !tx.push(tx.capacity() + 1, &meta, &mut |_: &mut [u8]| panic!(
                "too big"
            ))
        );
        // SAFETY: viewing a Vec<u64> as bytes.
        let b: &[u8] = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast(), 2 * 4096) };
        assert_eq!(rd_u32(b, V2.len), Some(200 + VNET_HDR_LEN as u32));
        let h = VnetHdr::decode(&b[V2.hdr..]).unwrap();
        assert_eq!(h, VnetHdr::for_tx(&meta, &f));
        assert_eq!(h.hdr_len, 54);
        assert_eq!(
            &b[V2.hdr + VNET_HDR_LEN..V2.hdr + VNET_HDR_LEN + 200],
            &f[..]
        );
    }

    /// A V2 slot as the kernel fills it with PACKET_VNET_HDR: frame at `mac`, the
    /// virtio-net header just before it.
    fn put_vnet_slot(b: &mut [u8], slot: usize, data: &[u8], status: u32, v: &VnetHdr) {
        let l = V2;
        let h = slot * 8192;
        let mac = 76usize;
        b[h + l.len..h + l.len + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        b[h + l.snaplen..h + l.snaplen + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        b[h + l.mac..h + l.mac + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
        b[h + l.pkttype()] = 0;
        b[h + mac - VNET_HDR_LEN..h + mac].copy_from_slice(&v.encode());
        b[h + mac..h + mac + data.len()].copy_from_slice(data);
        b[h + l.status..h + l.status + 4]
            .copy_from_slice(&(libc::TP_STATUS_USER | status).to_ne_bytes());
    }

    #[test]
    fn vnet_rx_hands_up_gso_frames_and_checksum_state() {
        let mut mem = vec![0u64; 4 * 8192 / 8];
        let mut rx = FrameRx {
            s: Slots {
                base: mem.as_mut_ptr().cast(),
                block_size: 16384,
                frame_size: 8192,
                frames_per_block: 2,
                frame_nr: 4,
                l: V2,
                head: 0,
            },
            vnet: true,
        };
        let gso = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
        };
        let udp_gso = VnetHdr {
            gso_type: 5, // VIRTIO_NET_HDR_GSO_UDP_L4
            ..gso
        };
        let valid = VnetHdr {
            flags: VNET_F_DATA_VALID,
            ..VnetHdr::default()
        };
        let big = vec![0x11u8; 5000];
        let small = vec![0x22u8; 100];
        {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 4 * 8192) };
            put_vnet_slot(b, 0, &big, libc::TP_STATUS_CSUMNOTREADY, &gso);
            put_vnet_slot(b, 1, &big, libc::TP_STATUS_CSUMNOTREADY, &udp_gso);
            put_vnet_slot(b, 2, &small, 0, &valid);
            put_vnet_slot(b, 3, &small, 0, &VnetHdr::default());
        }
        let want = RxWant {
            max_frame: 1514,
            gso_max_frame: 8000,
            meta: true,
        };
        let mut got = Vec::new();
        let mut c = RxCounters::default();
        let n = rx.burst(10, want, &mut c, &mut |f: &[u8], m| {
            got.push((f.to_vec(), m))
        });
        assert_eq!(n, 3);
        assert_eq!(c.dropped, 1, "UDP GSO is not taken");
        let m = |csum, gso_size| RxMeta { csum, gso_size };
        assert_eq!(
            got,
            vec![
                (big.clone(), m(CsumState::Partial, 1460)),
                (small.clone(), m(CsumState::Valid, 0)),
                (small.clone(), m(CsumState::Unknown, 0)),
            ]
        );
        // A caller without metadata gets no GSO frame.
        {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 4 * 8192) };
            put_vnet_slot(b, 0, &big, libc::TP_STATUS_CSUMNOTREADY, &gso);
        }
        let mut c = RxCounters::default();
        let n = rx.burst(10, RxWant::plain(1514), &mut c, &mut |_: &[u8], _| {
            panic!("oversize frame handed up")
        });
        assert_eq!((n, c.dropped, c.oversize), (0, 1, 5000));
    }

    #[test]
    fn completes_partial_checksums() {
        // An IPv4/UDP frame with a zero checksum field and a bad header checksum.
        let mut f = vec![0u8; 14 + 28 + 4 + 10]; // + Ethernet padding
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&32u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[24..26].copy_from_slice(&12u16.to_be_bytes());
        ip[28..32].copy_from_slice(b"abcd");
        complete_checksum(&mut f);
        assert_eq!(crate::csum::verify(&f[14..46]), Ok(()));
        // Non-IP and truncated frames are left alone.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        complete_checksum(&mut arp);
        let mut short = vec![0u8; 20];
        complete_checksum(&mut short);
    }
}
