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
//!
//! The parts: `open` (the socket, its options, ring sizing, the mapping), `block_ring`
//! (V3 RX), `slot_ring` (V2 RX and the TX ring), `rx_frame` (checking and handing up one
//! received frame), `vnet` (the virtio-net header), `layout` (header field offsets).

mod block_ring;
mod layout;
mod open;
mod rx_frame;
mod slot_ring;
mod vnet;

use std::cell::Cell;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::{Fd, Nic, NicStats, RxMeta, TxMeta};
use block_ring::RxRing;
use open::{os_err, Map};
use rx_frame::{RxCounters, RxWant};
use slot_ring::{FrameRx, TxRing};
pub use vnet::{
    VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4,
    VNET_HDR_LEN,
};

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

// SAFETY: the raw pointers in `AfPacketNic`, `RxRing` and `TxRing` point into the mapping
// owned by the same `AfPacketNic`; it is only touched through `&mut self` (or, for
// statistics, through a syscall on the fd), so moving it to another thread is sound.
unsafe impl Send for AfPacketNic {}

/// The RX side, by ring version.
enum Rx {
    Block(RxRing),
    Frames(FrameRx),
}

impl AfPacketNic {
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
