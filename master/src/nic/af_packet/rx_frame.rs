//! One received frame, whichever ring it came from: its header read and checked against
//! its slot or block (`parse_frame`), then handed up, completed or dropped (`deliver`).

use std::mem::size_of;

use super::layout::{rd_u16, rd_u32, Layout};
use super::vnet::{
    VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_HDR_LEN,
};
use crate::nic::{CsumState, RxMeta};

/// Counters the RX walk updates.
#[derive(Default)]
pub(super) struct RxCounters {
    pub(super) frames: u64,
    pub(super) bytes: u64,
    /// Frames dropped here (oversize, truncated by the kernel, GSO of another protocol
    /// than TCP/IPv4).
    pub(super) dropped: u64,
    /// Blocks given back early because of an inconsistent header.
    pub(super) bad_blocks: u64,
    /// Size of the largest oversize frame dropped since the last look (for the warning).
    pub(super) oversize: usize,
    /// Blocks given back by this walk.
    pub(super) blocks: u32,
}

/// One frame header read out of a block, validated against it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RxFrame {
    /// Start and length of the frame data in the block.
    pub(super) start: usize,
    pub(super) len: usize,
    /// Original length on the wire (`tp_len`); larger than `len` if the kernel truncated.
    pub(super) wire_len: usize,
    pub(super) status: u32,
    pub(super) pkttype: u8,
    /// `tp_next_offset` (0 on the block's last frame).
    pub(super) next: usize,
    /// The virtio-net header before the frame (with `PACKET_VNET_HDR`).
    pub(super) vnet: Option<VnetHdr>,
}

/// Read and validate the frame header (layout `l`) at `off` in `area` (a V3 block or a
/// V2 frame slot): the header, its `sockaddr_ll`, the virtio-net header (if `vnet`: just
/// before the frame) and the frame data must all lie inside the area. `None` if not.
pub(super) fn parse_frame(area: &[u8], off: usize, l: &Layout, vnet: bool) -> Option<RxFrame> {
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
pub(super) struct RxWant {
    /// The link MTU's frame size.
    pub(super) max_frame: usize,
    /// Largest TCP/IPv4 GSO frame taken (== max_frame for a caller without metadata).
    pub(super) gso_max_frame: usize,
    /// The caller takes metadata: hand partial checksums up as they are. Without, they are
    /// completed in software (and GSO frames are dropped as oversize).
    pub(super) meta: bool,
}

impl RxWant {
    /// For [`Nic::rx_burst`]: plain frames, no offloads.
    #[cfg(test)]
    pub(super) fn plain(max_frame: usize) -> RxWant {
        RxWant {
            max_frame,
            gso_max_frame: max_frame,
            meta: false,
        }
    }
}

/// Hand one parsed frame to `f` unless it is ours looped back, truncated or oversize.
/// Returns whether `f` was called.
pub(super) fn deliver(
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

#[cfg(test)]
mod tests {
    use super::*;

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
