//! Opening an interface: the packet socket and its options, ring sizing, the one mapping
//! of both rings, then the bind and promiscuous mode.

use std::cell::Cell;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::block_ring::RxRing;
use super::layout::{tpacket_align, V2, V3};
use super::slot_ring::{FrameRx, Slots, TxRing};
use super::vnet::VNET_HDR_LEN;
use super::{AfPacketNic, RingVersion, Rx};
use crate::nic::{iface_mac_mtu, Fd, NicStats};

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

/// The shared ring mapping.
pub(super) struct Map {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to the
        // mapping after the owning `AfPacketNic` is dropped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub(super) fn os_err() -> std::io::Error {
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
}
