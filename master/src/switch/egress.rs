//! Frames leaving the host: one copy from a pipe buffer into the NIC's, addresses for the
//! link, checksums, and ARP when the next hop is not known yet.

use super::*;

/// The address the master names as sender when it asks the link about `target`: `asker`,
/// the pipe whose frame needs the answer (a proxy-ARP router asks the same way), or, if
/// there is none, a pipe in `target`'s subnet, else any pipe. Never `target` itself: a
/// host asked "who has A? tell A" takes it for someone claiming its address and stays
/// silent (and never a pipe subnet's gateway, which on a TAP is the host's own address).
pub(super) fn link_source_ip(slots: &[Option<Slot>], target: u32, asker: u32) -> u32 {
    if asker != 0 && asker != target {
        return asker;
    }
    let pipes = || slots.iter().flatten().filter(|s| s.ip != target);
    pipes()
        .find(|s| (s.ip ^ target) & net::netmask(s.prefix_len) == 0)
        .or_else(|| pipes().next())
        .map_or(0, |s| s.ip)
}

pub(super) enum Egress {
    Sent,
    Parked,
    TooBig,
    Dropped,
}

/// Bytes of a frame's head the egress path copies once to decide on GSO: Ethernet +
/// the longest IPv4 header + the longest TCP header.
pub(super) const EGRESS_HEAD: usize = ETH_LEN + 60 + 60;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;

/// Send an IPv4 frame from a pipe out on the NIC: one copy from the pipe's buffer into the
/// NIC's, Ethernet addresses set for the link, the validated header prefix rewritten from
/// `hdr`, checksums filled (pipes carry none). An unresolved destination parks the frame
/// and asks ARP.
///
/// `next_hop` is the address whose MAC the frame goes to: its destination when that is
/// on the link, else the next hop of the route it matched; `asker` is the address the
/// master names as sender when it has to ask for it (see [`link_source_ip`]).
///
/// With a NIC that offloads: a TCP frame longer than the link's MTU goes out as one GSO
/// frame (the kernel or the device cuts it into MTU-sized segments: `gso_size` = MTU − IP
/// header − TCP header), and TCP/UDP checksums are left for the link to fill (the field
/// holds the pseudo-header sum); the IPv4 header checksum is always filled here. Other
/// frames longer than the MTU are too big (no IP fragmentation).
pub(super) fn egress(
    port: &mut NicPort,
    src: FrameSource<'_>,
    hdr: &[u8; HDR_COPY],
    frame_len: usize,
    next_hop: u32,
    asker: u32,
) -> Egress {
    let gso = frame_len > port.max_frame;
    let proto = hdr[ETH_LEN + 9];
    if gso && (frame_len > port.gso_max_frame || proto != PROTO_TCP) {
        return Egress::TooBig;
    }
    // The headers the decisions below rest on, copied once out of shared memory and
    // written over the frame after its copy (a racing sender cannot make them disagree).
    let mut head = [0u8; EGRESS_HEAD];
    let head_len = frame_len.min(EGRESS_HEAD);
    if src.copy_out(0, &mut head[..head_len]) < head_len {
        return Egress::TooBig; // shorter than classified: cannot happen for a checked frame
    }
    head[..net::IPV4_MIN_FRAME_LEN].copy_from_slice(&hdr[..net::IPV4_MIN_FRAME_LEN]);
    let ihl = (head[ETH_LEN] & 0x0f) as usize * 4;
    let fragment = u16::from_be_bytes([head[ETH_LEN + 6], head[ETH_LEN + 7]]) & 0x3fff != 0;
    let l4 = ETH_LEN + ihl;
    let mut meta = TxMeta::default();
    if (gso || port.tx_csum) && ihl >= 20 && !fragment {
        let min_l4 = if proto == PROTO_TCP { 20 } else { 8 };
        if (proto == PROTO_TCP || proto == PROTO_UDP) && l4 + min_l4 <= frame_len {
            let off = if proto == PROTO_TCP { 16 } else { 6 };
            meta.csum_partial = Some((l4 as u16, off));
        }
    }
    if gso {
        let tcp_len = match head.get(l4 + 12) {
            Some(&doff) => (doff >> 4) as usize * 4,
            None => 0,
        };
        let mss = (port.max_frame - ETH_LEN).saturating_sub(ihl + tcp_len);
        if meta.csum_partial.is_none() || tcp_len < 20 || l4 + tcp_len > frame_len || mss == 0 {
            return Egress::TooBig;
        }
        meta.gso_size = Some(mss as u16);
    }
    let mac = port.mac;
    let fill = |buf: &mut [u8], dst_mac: [u8; 6], meta: &TxMeta| {
        // `buf` is the NIC's private buffer of exactly frame_len bytes, and the frame
        // holds at least frame_len (checked by classify).
        src.copy_out(0, buf);
        buf[..head_len].copy_from_slice(&head[..head_len]);
        buf[0..6].copy_from_slice(&dst_mac);
        buf[6..12].copy_from_slice(&mac);
        if meta.csum_partial.is_none() || crate::csum::fill_partial(&mut buf[ETH_LEN..]).is_none() {
            crate::csum::fill(&mut buf[ETH_LEN..]);
        }
    };
    let now = port.now;
    match port.neighbors.resolve(next_hop, asker, now) {
        Some(dst_mac) => {
            if port
                .nic
                .tx_meta(frame_len, meta, &mut |buf| fill(buf, dst_mac, &meta))
            {
                Egress::Sent
            } else {
                Egress::Dropped
            }
        }
        None => {
            // Parked frames are sent later with plain `tx`: checksums filled here, and
            // only MTU-sized frames park (the first frames of a flow are small).
            let plain = TxMeta::default();
            if gso
                || !port.neighbors.park(next_hop, asker, frame_len, now, |buf| {
                    fill(buf, [0; 6], &plain)
                })
            {
                port.local.no_neighbor += 1;
                return Egress::Parked;
            }
            // The ARP request goes out at the start of the next round (link_round).
            Egress::Parked
        }
    }
}
