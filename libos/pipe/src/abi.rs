//! The DockPipe shared-memory ABI: the one definition of every byte the master and the
//! services share. Both `docknetd` and the libOS use these types; there is no second copy.
//!
//! A shared file is a [`PipeHeader`] or [`FcHeader`] page followed by rings and buffer
//! areas. Traffic in one direction is a *channel* (see [`ChannelLayout`]):
//!
//! ```text
//!   sender ──[ring: Desc{buf, len}]──▶ receiver      frames, in the sender's buffers
//!   sender ◀──[ret:  Desc{buf}]─────── receiver      buffers handed back when consumed
//! ```
//!
//! The sender owns the channel's buffer area: it writes a frame into a free buffer, posts
//! a descriptor on `ring`; the receiver reads the frame in place and posts the buffer index
//! back on `ret`. That is AF_XDP's fill/completion/rx/tx arrangement folded into one shape:
//! a pipe is two channels (RX: master → service, whose `ret` is the fill ring; TX: service
//! → master, whose `ret` is the completion ring); a fast channel is two channels between
//! two services.
//!
//! Rings are single-producer/single-consumer with free-running `u32` indices (slot =
//! index & mask). Producer and consumer indices live on separate cache lines (memif's
//! habit). Entries are published with Release and read after an Acquire load.
//!
//! **Everything read from a shared file is untrusted**: the peer may write anything at any
//! time. Readers copy a value out once, then validate it (see `ring.rs`, `channel.rs`).

use core::sync::atomic::AtomicU32;
use static_assertions::{const_assert, const_assert_eq};

/// "DOCKPIPE" little-endian.
pub const PIPE_MAGIC: u64 = u64::from_le_bytes(*b"DOCKPIPE");
/// "DOCKFCHN" little-endian.
pub const FC_MAGIC: u64 = u64::from_le_bytes(*b"DOCKFCHN");
/// Bumped on any incompatible change of this file.
/// 2: channels have a second pool of large buffers (`ChannelLayout::nlarge`).
pub const ABI_VERSION: u32 = 2;

/// Size of the header page that starts every shared file.
pub const HEADER_SIZE: usize = 4096;
/// Cache line size assumed for padding.
pub const CACHE_LINE: usize = 64;
/// Largest ring we accept (entries).
pub const MAX_RING_SIZE: u32 = 1 << 16;
/// Largest buffer count per channel.
pub const MAX_BUFS: u32 = 1 << 16;
/// Largest frame buffer (an IPv4 packet is at most 65535 bytes, plus Ethernet header).
pub const MAX_BUF_SIZE: u32 = 65536 + 128;
/// Smallest frame buffer: an Ethernet frame carrying a 576-byte IPv4 packet.
pub const MIN_BUF_SIZE: u32 = 640;
/// Ethernet header length (the frames themselves: [`crate::frame`]).
pub use crate::frame::ETH_HEADER_LEN;
/// The master's MAC address: the destination of every frame a service sends into its pipe
/// (the master switches by IPv4 address; it answers ARP for pipes' gateways with this).
pub const MASTER_MAC: [u8; 6] = [0x02, 0x44, 0x4e, 0x00, 0x00, 0x01];
/// Largest IP MTU a pipe may have.
pub const MAX_MTU: u32 = 65000;
/// Smallest IP MTU a pipe may have (IPv4 minimum).
pub const MIN_MTU: u32 = 576;

/// The largest IP MTU of a channel's small buffers when it has large ones too (see
/// [`ChannelGeometry::two_pools`]): most frames (requests, ACKs, segments of 9000-byte
/// paths) fit them, and only the large TCP segments between local services take a large
/// buffer.
pub const SMALL_POOL_MTU: u32 = 9000;

/// One ring entry. For `ring`, `buf` and `len` describe a frame; for `ret`, only `buf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Index of a buffer in the channel's buffer area (`< nbufs + nlarge`: the small
    /// buffers first, then the large ones).
    pub buf: u32,
    /// Frame length in bytes (at most the size of buffer `buf`); ignored on `ret` rings.
    pub len: u32,
    /// Reserved for offload flags; written as 0 and ignored today.
    pub flags: u32,
    /// Reserved; keeps the descriptor a power of two.
    pub _reserved: u32,
}
const_assert_eq!(core::mem::size_of::<Desc>(), 16);

/// The two indices of a ring, each alone on its cache line, followed in the file by
/// `size` [`Desc`] entries.
#[repr(C, align(64))]
pub struct RingIndices {
    /// Written only by the producer: the count of entries ever published.
    pub prod: AtomicU32,
    _pad0: [u8; CACHE_LINE - 4],
    /// Written only by the consumer: the count of entries ever consumed.
    pub cons: AtomicU32,
    _pad1: [u8; CACHE_LINE - 4],
}
const_assert_eq!(core::mem::size_of::<RingIndices>(), 2 * CACHE_LINE);
/// Bytes a ring of `size` entries occupies in the file.
pub const fn ring_bytes(size: u32) -> usize {
    core::mem::size_of::<RingIndices>() + size as usize * core::mem::size_of::<Desc>()
}

/// Where one channel lives in the file. Written by the master at creation, then only read.
///
/// The buffer area holds two pools: `nbufs` small buffers, then `nlarge` large ones
/// (none in most channels). Files are allocated whole, so a channel whose every buffer
/// held a 64 KB frame would cost 64 MiB for 1,024 buffers; with two pools it holds as
/// many small frames (a request, an ACK) and a few large TCP segments for a fraction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelLayout {
    /// File offset of the frame ring (sender → receiver): [`RingIndices`] then entries.
    pub ring_off: u64,
    /// File offset of the return ring (receiver → sender).
    pub ret_off: u64,
    /// File offset of the buffer area: `nbufs * buf_size` bytes of small buffers, then
    /// `nlarge * large_size` bytes of large ones.
    pub buf_off: u64,
    /// Entries in each of the two rings (power of two, `>= nbufs + nlarge`: the return
    /// ring must hold every buffer).
    pub ring_size: u32,
    /// Small buffers: indices `0..nbufs`.
    pub nbufs: u32,
    /// Bytes per small buffer (multiple of 64).
    pub buf_size: u32,
    /// Large buffers: indices `nbufs..nbufs + nlarge`; 0 for none.
    pub nlarge: u32,
    /// Bytes per large buffer (multiple of 64, above `buf_size`); 0 when `nlarge` is 0.
    pub large_size: u32,
    pub _reserved: u32,
}
const_assert_eq!(core::mem::size_of::<ChannelLayout>(), 48);

/// A doorbell: how a consumer sleeps and how a producer wakes it.
///
/// The consumer spins for a while; then it stores `sleeping = 1`, issues a SeqCst fence,
/// checks its rings once more, and if still empty waits on the futex `wake` with the value
/// it read *before* re-checking. A producer publishes, fences SeqCst, and if it sees
/// `sleeping != 0` increments `wake` and calls FUTEX_WAKE. The fences make the
/// store-then-load pairs on both sides ordered, so a wake-up is never lost.
#[repr(C, align(64))]
pub struct Doorbell {
    /// Nonzero while the consumer is (about to be) asleep.
    pub sleeping: AtomicU32,
    /// The futex word; bumped by every wake.
    pub wake: AtomicU32,
    _pad: [u8; CACHE_LINE - 8],
}
const_assert_eq!(core::mem::size_of::<Doorbell>(), CACHE_LINE);

impl Doorbell {
    /// A doorbell in private memory (e.g. for a control thread to wake a data-path thread
    /// that sleeps on shared doorbells too).
    pub const fn new() -> Self {
        Doorbell {
            sleeping: AtomicU32::new(0),
            wake: AtomicU32::new(0),
            _pad: [0; CACHE_LINE - 8],
        }
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

/// The header page of a pipe file (`RUN_DIR/pipes/NAME/pipe.map`).
#[repr(C)]
pub struct PipeHeader {
    /// [`PIPE_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Total file size in bytes.
    pub file_size: u64,
    /// The service's MAC address.
    pub mac: [u8; 6],
    /// IPv4 prefix length of `ipv4`.
    pub prefix_len: u8,
    pub _pad0: u8,
    /// The service's IPv4 address (network order bytes).
    pub ipv4: [u8; 4],
    /// Default gateway (the master's address on the pipe subnet), network order bytes.
    pub gateway: [u8; 4],
    /// IP MTU of the pipe.
    pub mtu: u32,
    /// [`PipeFlags`] bits.
    pub flags: u32,
    /// Process id of the attached service, 0 when none. Who may attach is decided by a
    /// file lock on byte 0 of this file (`claim.rs`), not by this field: the lock holder
    /// stores its pid here (over a dead owner's) and clears it on a clean exit.
    pub attached_pid: AtomicU32,
    /// Bumped by the master whenever this pipe's fast channels change; the libOS rescans
    /// its `fc/` directory only when it sees a new value.
    pub fc_generation: AtomicU32,
    /// Nonzero once the master removed the pipe: the service stops using it.
    pub closed: AtomicU32,
    pub _pad1: [u8; 4],
    /// Master → service frames. `ret` is the fill ring.
    pub rx: ChannelLayout,
    /// Service → master frames. `ret` is the completion ring.
    pub tx: ChannelLayout,
    pub _pad2: [u8; 32],
    /// Wakes the service when the master posts on `rx` (fast-channel peers ring the
    /// doorbells in the FC file instead).
    pub service_bell: Doorbell,
    /// Rung by the service when it posts on `tx` (or returns RX buffers); wakes the master.
    pub master_bell: Doorbell,
    /// IPv4 addresses (network-order bytes as a u32; 0 = empty slot) of the fast-channel
    /// peers that may send this service frames with source addresses other than their own
    /// (`docknetctl fc create PEER THIS --forward`: a NAT in front of this service). Written
    /// by the master only, before it bumps `fc_generation`; the libOS reads it when it
    /// rescans its fast channels. It lives here, in the receiver's own pipe, and not in
    /// the channel file, because the peer can write the channel file but not this page.
    pub fc_forwarders: [AtomicU32; MAX_FC_FORWARDERS],
}
const_assert_eq!(core::mem::offset_of!(PipeHeader, rx), 64);
const_assert_eq!(core::mem::offset_of!(PipeHeader, fc_forwarders), 320);
const_assert_eq!(core::mem::offset_of!(PipeHeader, tx), 112);
const_assert_eq!(core::mem::offset_of!(PipeHeader, service_bell), 192);
const_assert_eq!(core::mem::offset_of!(PipeHeader, master_bell), 256);
const_assert!(core::mem::size_of::<PipeHeader>() <= HEADER_SIZE);

/// Most fast-channel peers one pipe accepts forwarded frames from.
pub const MAX_FC_FORWARDERS: usize = 16;

/// Bits of [`PipeHeader::flags`].
pub mod pipe_flags {
    /// Frames on this pipe carry no L3/L4 checksums (the switch is trusted software, like
    /// veth's CHECKSUM_PARTIAL); a NIC backend fills them on egress.
    pub const CSUM_OFFLOAD: u32 = 1 << 0;
    /// The master lets this pipe send with source addresses other than its own
    /// (`pipe create --forwarder`, for a NAT). Informational: the master decides on its
    /// own record, never on this bit, which the service could flip.
    pub const FORWARDER: u32 = 1 << 1;
}

/// The header page of a fast-channel file, shared by two services `a` and `b`
/// (`RUN_DIR/pipes/A/fc/B.map`, hard-linked as `RUN_DIR/pipes/B/fc/A.map`).
#[repr(C)]
pub struct FcHeader {
    /// [`FC_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Total file size in bytes.
    pub file_size: u64,
    /// IPv4 address of side a (network order bytes); a service finds its side by its address.
    pub a_ipv4: [u8; 4],
    /// IPv4 address of side b.
    pub b_ipv4: [u8; 4],
    /// MAC of side a.
    pub a_mac: [u8; 6],
    /// MAC of side b.
    pub b_mac: [u8; 6],
    /// Nonzero once the master has removed the channel: both sides stop using it.
    pub closed: AtomicU32,
    /// Process id of side a once attached, else 0. A sender uses the channel only while
    /// its peer is attached, so frames are never posted where nobody reads them.
    pub a_attached: AtomicU32,
    /// Process id of side b once attached, else 0. (Who may attach a side is decided by a
    /// file lock on byte 0 (a) or 1 (b) of this file, `claim.rs`.)
    pub b_attached: AtomicU32,
    pub _pad0: [u8; 8],
    /// Frames from a to b (a owns the buffers).
    pub a_to_b: ChannelLayout,
    /// Frames from b to a.
    pub b_to_a: ChannelLayout,
    /// IP MTU the master made the channel for (`fc create --mtu`); 0 in files of masters
    /// before that option (then: the buffers less the Ethernet header). A service never
    /// sends larger packets on it, nor more than its buffers hold whatever this says.
    pub mtu: u32,
    pub _pad1: [u8; 28],
    /// Wakes side a (rung by b after posting on `b_to_a`).
    pub a_bell: Doorbell,
    /// Wakes side b.
    pub b_bell: Doorbell,
}
const_assert_eq!(core::mem::offset_of!(FcHeader, a_to_b), 64);
const_assert_eq!(core::mem::offset_of!(FcHeader, mtu), 160);
const_assert_eq!(core::mem::offset_of!(FcHeader, a_bell), 192);
const_assert!(core::mem::size_of::<FcHeader>() <= HEADER_SIZE);

/// Sizes chosen for a channel; [`ChannelGeometry::layout_at`] places it in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelGeometry {
    pub ring_size: u32,
    pub nbufs: u32,
    pub buf_size: u32,
    pub nlarge: u32,
    pub large_size: u32,
}

/// Bytes of a buffer for frames of IP MTU `mtu`: the frame, rounded up to cache lines.
fn buf_size_for(mtu: u32) -> u32 {
    let frame = mtu as usize + ETH_HEADER_LEN;
    (frame.div_ceil(CACHE_LINE) * CACHE_LINE) as u32
}

impl ChannelGeometry {
    /// Geometry for frames of IP MTU `mtu`, with `nbufs` buffers.
    pub fn for_mtu(mtu: u32, nbufs: u32) -> Self {
        ChannelGeometry {
            ring_size: nbufs.next_power_of_two(),
            nbufs,
            buf_size: buf_size_for(mtu),
            nlarge: 0,
            large_size: 0,
        }
    }

    /// True if frames of IP MTU `mtu` need buffers larger than the small pool's (MTUs
    /// just above [`SMALL_POOL_MTU`] round up to the same buffer size and do not).
    pub fn has_large_pool(mtu: u32) -> bool {
        buf_size_for(mtu) > buf_size_for(SMALL_POOL_MTU)
    }

    /// Geometry for frames of IP MTU `mtu` in two pools: `nbufs` buffers for frames up to
    /// [`SMALL_POOL_MTU`] and `nlarge` for the larger ones. One pool when a small buffer
    /// holds a frame of `mtu` ([`Self::has_large_pool`]) or `nlarge` is 0.
    pub fn two_pools(mtu: u32, nbufs: u32, nlarge: u32) -> Self {
        if !Self::has_large_pool(mtu) || nlarge == 0 {
            return Self::for_mtu(mtu, nbufs);
        }
        ChannelGeometry {
            ring_size: (nbufs + nlarge).next_power_of_two(),
            nbufs,
            buf_size: buf_size_for(SMALL_POOL_MTU),
            nlarge,
            large_size: buf_size_for(mtu),
        }
    }

    /// Bytes this channel needs (rings and buffers), each part cache-aligned.
    pub fn bytes(&self) -> usize {
        2 * ring_bytes(self.ring_size) + self.buf_area_bytes()
    }

    fn buf_area_bytes(&self) -> usize {
        self.nbufs as usize * self.buf_size as usize
            + self.nlarge as usize * self.large_size as usize
    }

    /// Lay the channel out at file offset `off`; returns the layout and the next free offset.
    pub fn layout_at(&self, off: usize) -> (ChannelLayout, usize) {
        let ring_off = off;
        let ret_off = ring_off + ring_bytes(self.ring_size);
        let buf_off = ret_off + ring_bytes(self.ring_size);
        let end = buf_off + self.buf_area_bytes();
        (
            ChannelLayout {
                ring_off: ring_off as u64,
                ret_off: ret_off as u64,
                buf_off: buf_off as u64,
                ring_size: self.ring_size,
                nbufs: self.nbufs,
                buf_size: self.buf_size,
                nlarge: self.nlarge,
                large_size: self.large_size,
                _reserved: 0,
            },
            end.div_ceil(4096) * 4096,
        )
    }
}

/// Why a channel layout read from a file is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    RingSize(u32),
    BufCount(u32),
    BufSize(u32),
    /// The large pool: count and buffer size.
    LargePool(u32, u32),
    OutOfFile {
        what: &'static str,
        end: u64,
        file_size: u64,
    },
    Overlap,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::RingSize(n) => write!(
                f,
                "ring size {n} is not a power of two in 2..={MAX_RING_SIZE}"
            ),
            LayoutError::BufCount(n) => write!(
                f,
                "buffer count {n} is 0, above {MAX_BUFS}, or above the ring size"
            ),
            LayoutError::BufSize(n) => write!(
                f,
                "buffer size {n} is not a multiple of 64 in {MIN_BUF_SIZE}..={MAX_BUF_SIZE}"
            ),
            LayoutError::LargePool(n, size) => write!(
                f,
                "large pool of {n} buffers of {size} bytes: with buffers, their size must \
                 be a multiple of 64 above the small buffers' and at most {MAX_BUF_SIZE}; \
                 without, 0"
            ),
            LayoutError::OutOfFile {
                what,
                end,
                file_size,
            } => {
                write!(
                    f,
                    "{what} ends at byte {end}, beyond the file's {file_size} bytes"
                )
            }
            LayoutError::Overlap => write!(f, "rings and buffers overlap the header or each other"),
        }
    }
}

impl ChannelLayout {
    /// Bytes of the buffer area (both pools). Overflow-free for a validated layout; on
    /// an unvalidated one it saturates.
    pub fn buf_area_bytes(&self) -> u64 {
        (self.nbufs as u64 * self.buf_size as u64)
            .saturating_add(self.nlarge as u64 * self.large_size as u64)
    }

    /// The file bytes `[start, end)` the channel's three parts span, wherever a header put
    /// them (saturating: for a validated layout the exact span).
    pub fn span(&self) -> (u64, u64) {
        let ring = ring_bytes(self.ring_size.min(MAX_RING_SIZE)) as u64;
        let start = self.ring_off.min(self.ret_off).min(self.buf_off);
        let end = (self.ring_off.saturating_add(ring))
            .max(self.ret_off.saturating_add(ring))
            .max(self.buf_off.saturating_add(self.buf_area_bytes()));
        (start, end)
    }

    /// True if the two channels' spans share a byte.
    pub fn overlaps(&self, other: &ChannelLayout) -> bool {
        let (a, b) = (self.span(), other.span());
        a.0 < b.1 && b.0 < a.1
    }

    /// Where buffer `idx` lies: its offset from `buf_off` and its size in bytes (small
    /// buffers first, then the large ones); `None` for an index of neither pool.
    pub fn buffer(&self, idx: u32) -> Option<(u64, u32)> {
        let small = self.nbufs as u64 * self.buf_size as u64;
        if idx < self.nbufs {
            Some((idx as u64 * self.buf_size as u64, self.buf_size))
        } else if idx - self.nbufs < self.nlarge {
            let off = small + (idx - self.nbufs) as u64 * self.large_size as u64;
            Some((off, self.large_size))
        } else {
            None
        }
    }

    /// The largest frame a buffer of this channel holds (a large one, if it has any).
    pub fn max_frame(&self) -> u32 {
        if self.nlarge > 0 {
            self.large_size.max(self.buf_size)
        } else {
            self.buf_size
        }
    }

    /// Check that every part lies inside a file of `file_size` bytes, after the header,
    /// aligned, and without overlap. Called on every layout read from a file before use.
    pub fn validate(&self, file_size: u64) -> Result<(), LayoutError> {
        let rs = self.ring_size;
        if !(2..=MAX_RING_SIZE).contains(&rs) || !rs.is_power_of_two() {
            return Err(LayoutError::RingSize(rs));
        }
        if self.nbufs == 0 || self.nbufs > MAX_BUFS || self.nbufs > rs {
            return Err(LayoutError::BufCount(self.nbufs));
        }
        let bs = self.buf_size;
        if !(MIN_BUF_SIZE..=MAX_BUF_SIZE).contains(&bs) || !bs.is_multiple_of(CACHE_LINE as u32) {
            return Err(LayoutError::BufSize(bs));
        }
        let (nl, ls) = (self.nlarge, self.large_size);
        let large_ok = if nl == 0 {
            ls == 0
        } else {
            // Both pools' buffers must fit the ring (it names every buffer), and the
            // indices of both together stay below MAX_BUFS.
            self.nbufs as u64 + nl as u64 <= rs.min(MAX_BUFS) as u64
                && ls > bs
                && ls <= MAX_BUF_SIZE
                && ls.is_multiple_of(CACHE_LINE as u32)
        };
        if !large_ok {
            return Err(LayoutError::LargePool(nl, ls));
        }
        let ring_len = ring_bytes(rs) as u64;
        let parts = [
            ("frame ring", self.ring_off, ring_len),
            ("return ring", self.ret_off, ring_len),
            ("buffer area", self.buf_off, self.buf_area_bytes()),
        ];
        for (what, off, len) in parts {
            let end = off.checked_add(len).ok_or(LayoutError::Overlap)?;
            if end > file_size {
                return Err(LayoutError::OutOfFile {
                    what,
                    end,
                    file_size,
                });
            }
            if off < HEADER_SIZE as u64 || !off.is_multiple_of(CACHE_LINE as u64) {
                return Err(LayoutError::Overlap);
            }
        }
        for i in 0..parts.len() {
            for j in i + 1..parts.len() {
                let (a, b) = (parts[i], parts[j]);
                if a.1 < b.1 + b.2 && b.1 < a.1 + a.2 {
                    return Err(LayoutError::Overlap);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_lays_out_valid_channels() {
        for mtu in [MIN_MTU, 1500, 9000, MAX_MTU] {
            let g = ChannelGeometry::for_mtu(mtu, 256);
            let (l, end) = g.layout_at(HEADER_SIZE);
            assert!(g.buf_size as usize >= mtu as usize + ETH_HEADER_LEN);
            assert_eq!(l.validate(end as u64), Ok(()));
            assert!(l.validate(end as u64 - 4097).is_err());
        }
    }

    #[test]
    fn two_pools_lay_out_valid_channels() {
        let g = ChannelGeometry::two_pools(MAX_MTU, 1024, 32);
        assert_eq!(g.nbufs, 1024);
        assert_eq!(g.nlarge, 32);
        assert!(g.buf_size as usize >= SMALL_POOL_MTU as usize + ETH_HEADER_LEN);
        assert!(g.large_size as usize >= MAX_MTU as usize + ETH_HEADER_LEN);
        assert!(g.ring_size >= 1024 + 32);
        let (l, end) = g.layout_at(HEADER_SIZE);
        assert_eq!(l.validate(end as u64), Ok(()));
        assert_eq!(l.max_frame(), g.large_size);
        assert_eq!(l.buffer(1), Some((g.buf_size as u64, g.buf_size)));
        let small = 1024 * g.buf_size as u64;
        assert_eq!(l.buffer(1024), Some((small, g.large_size)));
        assert_eq!(
            l.buffer(1024 + 31),
            Some((small + 31 * g.large_size as u64, g.large_size))
        );
        assert_eq!(l.buffer(1024 + 32), None);
        assert_eq!(l.buffer(u32::MAX), None);
        assert_eq!(
            l.buf_area_bytes(),
            1024 * g.buf_size as u64 + 32 * g.large_size as u64
        );
        // The last large buffer is part of the area: a file one page short fails.
        assert!(l.validate(end as u64 - 4096).is_err());
        // At or below the small pool's MTU, or without large buffers: one pool.
        assert_eq!(
            ChannelGeometry::two_pools(9000, 1024, 32),
            ChannelGeometry::for_mtu(9000, 1024)
        );
        assert_eq!(
            ChannelGeometry::two_pools(MAX_MTU, 512, 0),
            ChannelGeometry::for_mtu(MAX_MTU, 512)
        );
        // Every MTU lays out a channel its own validation accepts, including those just
        // above the small pool's whose frames still fit a small buffer.
        for mtu in (SMALL_POOL_MTU - 70..=SMALL_POOL_MTU + 130).chain([16000, MAX_MTU]) {
            let g = ChannelGeometry::two_pools(mtu, 64, 8);
            let (l, end) = g.layout_at(HEADER_SIZE);
            assert_eq!(l.validate(end as u64), Ok(()), "MTU {mtu}: {g:?}");
            assert!(
                l.max_frame() as usize >= mtu as usize + ETH_HEADER_LEN,
                "MTU {mtu}"
            );
            assert_eq!(
                g.nlarge > 0,
                ChannelGeometry::has_large_pool(mtu),
                "MTU {mtu}"
            );
        }
    }

    #[test]
    fn validate_rejects_bad_large_pools() {
        let g = ChannelGeometry::two_pools(MAX_MTU, 64, 8);
        let (l, end) = g.layout_at(HEADER_SIZE);
        let end = end as u64;
        let bad = |f: &dyn Fn(&mut ChannelLayout)| {
            let mut b = l;
            f(&mut b);
            b.validate(end)
        };
        // Large buffers no larger than the small ones, misaligned, or too large.
        assert!(matches!(
            bad(&|b| b.large_size = b.buf_size),
            Err(LayoutError::LargePool(..))
        ));
        assert!(matches!(
            bad(&|b| b.large_size += 1),
            Err(LayoutError::LargePool(..))
        ));
        assert!(matches!(
            bad(&|b| b.large_size = MAX_BUF_SIZE + 64),
            Err(LayoutError::LargePool(..))
        ));
        // More buffers than the ring names.
        assert!(matches!(
            bad(&|b| b.nlarge = b.ring_size),
            Err(LayoutError::LargePool(..))
        ));
        // A size without buffers.
        assert!(matches!(
            bad(&|b| b.nlarge = 0),
            Err(LayoutError::LargePool(..))
        ));
        // More large buffers than the file holds.
        assert!(matches!(
            bad(&|b| b.nlarge = 64),
            Err(LayoutError::OutOfFile { .. })
        ));
        let mut huge = l;
        huge.nlarge = u32::MAX;
        huge.large_size = MAX_BUF_SIZE;
        assert!(huge.validate(u64::MAX).is_err());
    }

    #[test]
    fn validate_rejects_bad_layouts() {
        let g = ChannelGeometry::for_mtu(1500, 64);
        let (l, end) = g.layout_at(HEADER_SIZE);
        let end = end as u64;
        let mut bad = l;
        bad.ring_size = 48;
        assert_eq!(bad.validate(end), Err(LayoutError::RingSize(48)));
        let mut bad = l;
        bad.nbufs = 65;
        assert!(matches!(bad.validate(end), Err(LayoutError::BufCount(65))));
        let mut bad = l;
        bad.buf_size = 100;
        assert!(matches!(bad.validate(end), Err(LayoutError::BufSize(100))));
        let mut bad = l;
        bad.ret_off = l.ring_off;
        assert_eq!(bad.validate(end), Err(LayoutError::Overlap));
        let mut bad = l;
        bad.buf_off = u64::MAX - 10;
        assert!(bad.validate(end).is_err());
        let mut bad = l;
        bad.ring_off = 0;
        assert_eq!(bad.validate(end), Err(LayoutError::Overlap));
    }
}
