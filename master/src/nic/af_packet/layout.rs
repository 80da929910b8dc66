//! Where the kernel puts things in the rings: the frame header layouts of TPACKET_V2 and
//! V3, the V3 block descriptor's offsets, and bounds-checked reads of the words it writes.

use std::mem::{offset_of, size_of};

/// `TPACKET_ALIGN(x)` (linux/if_packet.h).
pub(super) const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}
/// Offsets inside `struct tpacket_block_desc` (linux/if_packet.h): `version`,
/// `offset_to_priv`, then the `tpacket_hdr_v1` union member.
const BLK_HDR_OFF: usize = offset_of!(libc::tpacket_block_desc, hdr);
pub(super) const BLK_STATUS_OFF: usize =
    BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, block_status);
pub(super) const BLK_NUM_PKTS_OFF: usize = BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, num_pkts);
pub(super) const BLK_FIRST_OFF: usize =
    BLK_HDR_OFF + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);

/// Where the fields of a frame header sit, for `tpacket2_hdr` or `tpacket3_hdr`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) status: usize,
    pub(super) len: usize,
    pub(super) snaplen: usize,
    pub(super) mac: usize,
    /// `tp_next_offset` (V3 only).
    pub(super) next: Option<usize>,
    /// `TPACKET_ALIGN(sizeof(header))`: where the `sockaddr_ll` follows on RX and where
    /// frame data starts in a TX slot (`po->tp_hdrlen - sizeof(struct sockaddr_ll)` in
    /// af_packet.c, without PACKET_TX_HAS_OFF).
    pub(super) hdr: usize,
}

pub(super) const V3: Layout = Layout {
    status: offset_of!(libc::tpacket3_hdr, tp_status),
    len: offset_of!(libc::tpacket3_hdr, tp_len),
    snaplen: offset_of!(libc::tpacket3_hdr, tp_snaplen),
    mac: offset_of!(libc::tpacket3_hdr, tp_mac),
    next: Some(offset_of!(libc::tpacket3_hdr, tp_next_offset)),
    hdr: tpacket_align(size_of::<libc::tpacket3_hdr>()),
};

pub(super) const V2: Layout = Layout {
    status: offset_of!(libc::tpacket2_hdr, tp_status),
    len: offset_of!(libc::tpacket2_hdr, tp_len),
    snaplen: offset_of!(libc::tpacket2_hdr, tp_snaplen),
    mac: offset_of!(libc::tpacket2_hdr, tp_mac),
    next: None,
    hdr: tpacket_align(size_of::<libc::tpacket2_hdr>()),
};

impl Layout {
    /// Offset of `sll_pkttype` in the `sockaddr_ll` after an RX header.
    pub(super) const fn pkttype(&self) -> usize {
        self.hdr + offset_of!(libc::sockaddr_ll, sll_pkttype)
    }
}

pub(super) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

pub(super) fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}
