//! Addresses and frames: validation of names and IPv4 assignments, MAC derivation, and the
//! pure (allocation-free) frame classification and ARP reply construction the switch uses.
//!
//! Everything here works on *copies* of frame bytes: the switch copies the first
//! [`HDR_COPY`] bytes of a frame out of shared memory once and decides on that copy.

use std::net::Ipv4Addr;

/// The master's own MAC address (answers ARP for every pipe's gateway).
pub use docknet_pipe::abi::MASTER_MAC;
/// The framing pipes carry (one definition for the master and the libOS).
pub use docknet_pipe::frame::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HEADER_LEN as ETH_LEN, IPV4_MIN_FRAME_LEN,
};
/// Length of an Ethernet frame carrying an ARP packet for IPv4 over Ethernet.
pub const ARP_FRAME_LEN: usize = 42;
/// How many leading bytes of a frame the switch copies out of shared memory to classify it.
pub const HDR_COPY: usize = ARP_FRAME_LEN;

/// Longest pipe name.
pub const MAX_NAME_LEN: usize = 32;

/// Check a pipe name: `[A-Za-z0-9_-]{1,32}`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "invalid pipe name {name:?}: must be 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "invalid pipe name {name:?}: character {c:?} is not one of A-Z a-z 0-9 _ -"
        ));
    }
    Ok(())
}

/// Parse `A.B.C.D/N` with `N` in 1..=30.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid address {s:?}: expected A.B.C.D/N (e.g. 10.88.0.2/16)"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("invalid address {s:?}: {ip:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("invalid address {s:?}: prefix length {prefix:?} is not a number"))?;
    if !(1..=30).contains(&prefix) {
        return Err(format!(
            "invalid address {s:?}: prefix length must be 1..=30, got {prefix}"
        ));
    }
    Ok((ip, prefix))
}

/// Netmask of a prefix length (1..=32).
pub fn netmask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32) as u32)
    }
}

/// The master's address on the subnet of `ip/prefix`: the network address + 1.
pub fn gateway_of(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(ip) & netmask(prefix)).wrapping_add(1))
}

/// Check that `ip/prefix` is a usable host address for a pipe (not the network or
/// broadcast address of its subnet, not the gateway). Returns the gateway.
pub fn validate_host_addr(ip: Ipv4Addr, prefix: u8) -> Result<Ipv4Addr, String> {
    if !(1..=30).contains(&prefix) {
        return Err(format!("prefix length must be 1..=30, got {prefix}"));
    }
    let a = u32::from(ip);
    let mask = netmask(prefix);
    let net = a & mask;
    let bcast = net | !mask;
    if a == net {
        return Err(format!(
            "{ip} is the network address of {}/{prefix}",
            Ipv4Addr::from(net)
        ));
    }
    if a == bcast {
        return Err(format!(
            "{ip} is the broadcast address of {}/{prefix}",
            Ipv4Addr::from(net)
        ));
    }
    let gw = gateway_of(ip, prefix);
    if ip == gw {
        return Err(format!(
            "{ip} is the gateway of {}/{prefix} (the master's own address there); pick another address",
            Ipv4Addr::from(net)
        ));
    }
    if ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast() {
        return Err(format!("{ip} is not a unicast host address"));
    }
    Ok(gw)
}

/// The MAC of a pipe: `02:00:a:b:c:d` from its IPv4 address (locally administered, unique).
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Why the switch dropped a frame sent by a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Too short, or a malformed ARP/IPv4 header.
    BadFrame,
    /// An ARP operation other than request.
    ArpOp,
    /// An EtherType we do not switch.
    Unsupported,
    /// IPv4 source address is not the sending pipe's.
    Spoofed,
}

/// What a frame is, decided from a copy of its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An ARP request for `target_ip`, from `sender_mac`/`sender_ip` (ARP body fields).
    ArpRequest {
        sender_mac: [u8; 6],
        sender_ip: [u8; 4],
        target_ip: u32,
    },
    /// An IPv4 packet from the pipe's own address to `dst`; `frame_len` is the Ethernet
    /// header plus the IPv4 total length (trailing padding is not forwarded).
    Ipv4 { dst: u32, frame_len: usize },
    /// Drop it.
    Drop(Drop),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Classify a frame of `len` bytes sent by a pipe. With `source: Some(ip)`, an IPv4 frame
/// whose source is not `ip` (the pipe's address) is spoofed; `None` lets any source pass
/// (a `--forwarder` pipe). `hdr` holds a private copy of the frame's first
/// `min(len, HDR_COPY)` bytes (it must be at least that long). Never panics, whatever the
/// bytes.
pub fn classify(hdr: &[u8; HDR_COPY], len: usize, source: Option<u32>) -> Verdict {
    if len < ETH_LEN {
        return Verdict::Drop(Drop::BadFrame);
    }
    match be16(hdr, 12) {
        ETHERTYPE_ARP => {
            // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, checked by parse_arp.
            let Some(a) = parse_arp(&hdr[..len.min(HDR_COPY)]) else {
                return Verdict::Drop(Drop::BadFrame);
            };
            if a.op != 1 {
                return Verdict::Drop(Drop::ArpOp);
            }
            Verdict::ArpRequest {
                sender_mac: a.sender_mac,
                sender_ip: a.sender_ip.to_be_bytes(),
                target_ip: a.target_ip,
            }
        }
        ETHERTYPE_IPV4 => {
            if len < IPV4_MIN_FRAME_LEN {
                return Verdict::Drop(Drop::BadFrame);
            }
            let ip = &hdr[ETH_LEN..];
            let version = ip[0] >> 4;
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = be16(ip, 2) as usize;
            if version != 4 || ihl < 20 || total < ihl || total > len - ETH_LEN {
                return Verdict::Drop(Drop::BadFrame);
            }
            if source.is_some_and(|my_ip| be32(ip, 12) != my_ip) {
                return Verdict::Drop(Drop::Spoofed);
            }
            Verdict::Ipv4 {
                dst: be32(ip, 16),
                frame_len: ETH_LEN + total,
            }
        }
        _ => Verdict::Drop(Drop::Unsupported),
    }
}

/// An Ethernet ARP frame for IPv4: operation `op` (1 request, 2 reply) from
/// `sender_mac`/`sender_ip` about `target_mac`/`target_ip`, Ethernet destination `eth_dst`,
/// Ethernet source the sender.
fn write_arp(
    out: &mut [u8; ARP_FRAME_LEN],
    op: u16,
    eth_dst: [u8; 6],
    (sender_mac, sender_ip): ([u8; 6], [u8; 4]),
    (target_mac, target_ip): ([u8; 6], [u8; 4]),
) {
    out[0..6].copy_from_slice(&eth_dst);
    out[6..12].copy_from_slice(&sender_mac);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..16].copy_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    out[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes()); // ptype IPv4
    out[18] = 6;
    out[19] = 4;
    out[20..22].copy_from_slice(&op.to_be_bytes());
    out[22..28].copy_from_slice(&sender_mac);
    out[28..32].copy_from_slice(&sender_ip);
    out[32..38].copy_from_slice(&target_mac);
    out[38..42].copy_from_slice(&target_ip);
}

/// Build an ARP request from `mac`/`ip` asking for `target`, broadcast or (a re-validation
/// probe) unicast to `to`.
pub fn arp_request(mac: [u8; 6], ip: u32, target: u32, to: Option<[u8; 6]>) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    let eth_dst = to.unwrap_or([0xff; 6]);
    write_arp(
        &mut f,
        1,
        eth_dst,
        (mac, ip.to_be_bytes()),
        ([0; 6], target.to_be_bytes()),
    );
    f
}

/// An ARP packet seen on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: u32,
    pub target_ip: u32,
}

/// Parse an Ethernet ARP frame for IPv4, or `None` if it is not one.
pub fn parse_arp(frame: &[u8]) -> Option<ArpSeen> {
    if frame.len() < ARP_FRAME_LEN || frame[12..14] != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let a = &frame[14..];
    if a[0..2] != [0, 1] || a[2..4] != ETHERTYPE_IPV4.to_be_bytes() || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&a[8..14]);
    Some(ArpSeen {
        op: u16::from_be_bytes([a[6], a[7]]),
        sender_mac,
        sender_ip: u32::from_be_bytes([a[14], a[15], a[16], a[17]]),
        target_ip: u32::from_be_bytes([a[24], a[25], a[26], a[27]]),
    })
}

/// Build an ARP reply saying `answer_ip` is at `answer_mac`, addressed to the requester
/// (`req_mac`/`req_ip` from the request's body) with Ethernet destination `eth_dst`.
pub fn build_arp_reply(
    out: &mut [u8; ARP_FRAME_LEN],
    eth_dst: [u8; 6],
    answer_mac: [u8; 6],
    answer_ip: u32,
    req_mac: [u8; 6],
    req_ip: [u8; 4],
) {
    write_arp(
        out,
        2,
        eth_dst,
        (answer_mac, answer_ip.to_be_bytes()),
        (req_mac, req_ip),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ARP request frame from `mac`/`ip` for `target` (broadcast).
    pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        super::arp_request(mac, ip.into(), target.into(), None).to_vec()
    }

    /// An IPv4/UDP frame with `payload` bytes of payload.
    pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
        let mut f = vec![0xee; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + 8 + payload;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&[
            0x30,
            0x39,
            0x00,
            0x07,
            ((8 + payload) >> 8) as u8,
            (8 + payload) as u8,
            0,
            0,
        ]);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    pub fn hdr_of(f: &[u8]) -> [u8; HDR_COPY] {
        let mut h = [0u8; HDR_COPY];
        let n = f.len().min(HDR_COPY);
        h[..n].copy_from_slice(&f[..n]);
        h
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name("web-1_B").is_ok());
        assert!(validate_name(&"x".repeat(32)).is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(33)).is_err());
        for bad in ["a/b", "..", "a b", "é", "a.b", "-\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.88.0.2/16"), Ok((ip("10.88.0.2"), 16)));
        for bad in [
            "10.88.0.2",
            "10.88.0.2/0",
            "10.88.0.2/31",
            "10.88.0.2/32",
            "10.88.0/16",
            "x/8",
            "10.0.0.1/-1",
            "",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_address_rules() {
        assert_eq!(validate_host_addr(ip("10.88.0.2"), 16), Ok(ip("10.88.0.1")));
        assert_eq!(validate_host_addr(ip("10.88.3.7"), 24), Ok(ip("10.88.3.1")));
        assert!(validate_host_addr(ip("10.88.0.0"), 16)
            .unwrap_err()
            .contains("network"));
        assert!(validate_host_addr(ip("10.88.255.255"), 16)
            .unwrap_err()
            .contains("broadcast"));
        assert!(validate_host_addr(ip("10.88.0.1"), 16)
            .unwrap_err()
            .contains("gateway"));
        assert_eq!(validate_host_addr(ip("10.0.0.2"), 30), Ok(ip("10.0.0.1")));
        assert!(validate_host_addr(ip("10.0.0.3"), 30).is_err());
        assert!(validate_host_addr(ip("224.0.0.5"), 8).is_err());
        assert_eq!(mac_for_ip(ip("10.88.0.2")), [2, 0, 10, 88, 0, 2]);
        assert_eq!(fmt_mac(&MASTER_MAC), "02:44:4e:00:00:01");
    }

    #[test]
    fn arp_reply_bytes() {
        let mut out = [0u8; ARP_FRAME_LEN];
        let req_mac = [2, 0, 10, 88, 0, 2];
        build_arp_reply(
            &mut out,
            req_mac,
            MASTER_MAC,
            u32::from(ip("10.88.0.1")),
            req_mac,
            [10, 88, 0, 2],
        );
        let expect: [u8; 42] = [
            2, 0, 10, 88, 0, 2, 0x02, 0x44, 0x4e, 0, 0, 1, 0x08, 0x06, // ethernet
            0, 1, 0x08, 0x00, 6, 4, 0, 2, // htype ptype hlen plen op=reply
            0x02, 0x44, 0x4e, 0, 0, 1, 10, 88, 0, 1, // sender
            2, 0, 10, 88, 0, 2, 10, 88, 0, 2, // target
        ];
        assert_eq!(out, expect);
    }

    #[test]
    fn classify_arp() {
        let me = ip("10.88.0.2");
        let f = arp_request(mac_for_ip(me), me, ip("10.88.0.3"));
        assert_eq!(
            classify(&hdr_of(&f), f.len(), Some(u32::from(me))),
            Verdict::ArpRequest {
                sender_mac: mac_for_ip(me),
                sender_ip: me.octets(),
                target_ip: u32::from(ip("10.88.0.3"))
            }
        );
        assert_eq!(
            classify(&hdr_of(&f), 41, Some(u32::from(me))),
            Verdict::Drop(Drop::BadFrame)
        );
        let mut reply = f.clone();
        reply[21] = 2;
        assert_eq!(
            classify(&hdr_of(&reply), reply.len(), Some(u32::from(me))),
            Verdict::Drop(Drop::ArpOp)
        );
        let mut bad = f.clone();
        bad[18] = 8; // hlen
        assert_eq!(
            classify(&hdr_of(&bad), bad.len(), Some(u32::from(me))),
            Verdict::Drop(Drop::BadFrame)
        );
    }

    #[test]
    fn classify_ipv4() {
        let (a, b) = (ip("10.88.0.2"), ip("10.88.0.3"));
        let me = u32::from(a);
        let f = ipv4_frame(a, b, 100);
        assert_eq!(
            classify(&hdr_of(&f), f.len(), Some(me)),
            Verdict::Ipv4 {
                dst: u32::from(b),
                frame_len: f.len()
            }
        );
        // Ethernet padding is not forwarded.
        assert_eq!(
            classify(&hdr_of(&f), f.len() + 10, Some(me)),
            Verdict::Ipv4 {
                dst: u32::from(b),
                frame_len: f.len()
            }
        );
        // Spoofed source.
        let s = ipv4_frame(ip("10.88.0.9"), b, 10);
        assert_eq!(
            classify(&hdr_of(&s), s.len(), Some(me)),
            Verdict::Drop(Drop::Spoofed)
        );
        // Bad lengths and versions.
        assert_eq!(
            classify(&hdr_of(&f), 13, Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        assert_eq!(
            classify(&hdr_of(&f), 0, Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        assert_eq!(
            classify(&hdr_of(&f), 33, Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        assert_eq!(
            classify(&hdr_of(&f), f.len() - 1, Some(me)),
            Verdict::Drop(Drop::BadFrame),
            "total length > frame"
        );
        let mut v6 = f.clone();
        v6[14] = 0x65;
        assert_eq!(
            classify(&hdr_of(&v6), v6.len(), Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        let mut ihl = f.clone();
        ihl[14] = 0x44;
        assert_eq!(
            classify(&hdr_of(&ihl), ihl.len(), Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        let mut short_total = f.clone();
        short_total[16] = 0;
        short_total[17] = 19;
        assert_eq!(
            classify(&hdr_of(&short_total), f.len(), Some(me)),
            Verdict::Drop(Drop::BadFrame)
        );
        // Other ethertypes.
        let mut v6 = f.clone();
        v6[12] = 0x86;
        v6[13] = 0xdd;
        assert_eq!(
            classify(&hdr_of(&v6), v6.len(), Some(me)),
            Verdict::Drop(Drop::Unsupported)
        );
    }

    /// A frame the switch sees from a pipe: a valid IPv4 (or ARP) header, then mutated.
    fn mutated_frame() -> impl proptest::strategy::Strategy<Value = ([u8; HDR_COPY], usize)> {
        use proptest::prelude::*;
        let base = prop_oneof![
            Just(ipv4_frame(ip("10.88.0.2"), ip("10.88.0.3"), 100)),
            Just(arp_request(
                mac_for_ip(ip("10.88.0.2")),
                ip("10.88.0.2"),
                ip("10.88.0.3")
            )),
            proptest::collection::vec(any::<u8>(), 0..HDR_COPY),
        ];
        (
            base,
            proptest::collection::vec((0..HDR_COPY, any::<u8>()), 0..12),
            prop_oneof![Just(None), (0usize..70_000).prop_map(Some)],
        )
            .prop_map(|(f, muts, len)| {
                let mut h = [0u8; HDR_COPY];
                let n = f.len().min(HDR_COPY);
                h[..n].copy_from_slice(&f[..n]);
                for (at, v) in muts {
                    h[at] = v;
                }
                (h, len.unwrap_or(f.len()))
            })
    }

    proptest::proptest! {
        // Cases: PROPTEST_CASES (256 by default; the long run in docs/benchmarks.md used more).
        #[test]
        fn classify_never_panics_and_never_overreaches((h, len) in mutated_frame()) {
            for source in [Some(u32::from(ip("10.88.0.2"))), None] {
                match classify(&h, len, source) {
                    Verdict::Ipv4 { frame_len, .. } => {
                        proptest::prop_assert!(frame_len <= len && frame_len >= IPV4_MIN_FRAME_LEN);
                        if let Some(me) = source {
                            proptest::prop_assert_eq!(be32(&h[ETH_LEN..], 12), me, "a spoofed source passed");
                        }
                    }
                    Verdict::ArpRequest { .. } => proptest::prop_assert!(len >= ARP_FRAME_LEN),
                    Verdict::Drop(_) => {}
                }
            }
        }
    }
}
