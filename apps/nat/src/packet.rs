//! Parsing and in-place rewriting of the frames the NAT forwards (Ethernet II, IPv4,
//! TCP or UDP), and building TCP resets; nothing here allocates or panics, whatever the
//! bytes.
//!
//! Frames inside DockNet carry no valid checksums (the switch fills them where frames
//! leave the host), so the NAT never verifies checksums and updates them incrementally
//! (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) when it rewrites an address or a port: a
//! valid checksum stays valid, and garbage stays harmless garbage.

use std::fmt;

/// TCP header flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers (opens a connection).
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
}

/// Ethernet header length; the IPv4 header follows it.
pub const ETH_HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IPv4 protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IPv4 protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Length of the frames [`write_tcp_rst`] builds.
pub const TCP_RST_FRAME_LEN: usize = ETH_HEADER_LEN + IPV4_MIN_HEADER + TCP_MIN_HEADER;

const IPV4_MIN_HEADER: usize = 20;
const TCP_MIN_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
// Offsets inside the IPv4 header.
const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
// Offsets of the checksum inside the L4 headers.
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
/// IPv4 flags/fragment offset: More Fragments and the offset; DF alone is fine.
const IP_MF_AND_OFFSET: u16 = 0x3fff;
const IP_DF: u16 = 0x4000;

/// The fields of a TCP or UDP frame that the NAT uses, and where its headers are.
/// Addresses are `u32` in host order (`u32::from(Ipv4Addr)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IPv4 header (always [`ETH_HEADER_LEN`]).
    pub ip_off: usize,
    /// IPv4 header length in bytes (20..=60).
    pub ihl: usize,
    /// IPv4 total length (bytes after it in the frame are padding).
    pub total_len: usize,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// IPv4 source address.
    pub src: u32,
    /// IPv4 destination address.
    pub dst: u32,
    /// Offset of the TCP or UDP header.
    pub l4_off: usize,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags ([`tcp_flags`]); 0 for UDP.
    pub tcp_flags: u8,
    /// TCP sequence number; 0 for UDP.
    pub seq: u32,
    /// TCP acknowledgment number; 0 for UDP.
    pub ack: u32,
    /// L4 payload bytes (TCP: after the header and options; UDP: by the UDP length).
    pub payload_len: usize,
}

/// Why a frame is not one the NAT handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not an IPv4 frame (EtherType).
    NotIpv4,
    /// The frame, or the IPv4 packet as its total length says, ends before a header it
    /// must contain.
    Truncated,
    /// A header field is impossible: IP version, header or total length, TCP data offset,
    /// UDP length.
    BadHeader,
    /// An IPv4 fragment (the NAT does not reassemble).
    Fragment,
    /// An IPv4 protocol other than TCP and UDP.
    NotTcpOrUdp,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::NotIpv4 => "not an IPv4 frame",
            Malformed::Truncated => "truncated frame",
            Malformed::BadHeader => "bad IPv4, TCP or UDP header",
            Malformed::Fragment => "IPv4 fragment",
            Malformed::NotTcpOrUdp => "neither TCP nor UDP",
        })
    }
}

impl std::error::Error for Malformed {}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn put16(b: &mut [u8], off: usize, v: u16) -> Option<()> {
    b.get_mut(off..off.checked_add(2)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

fn put32(b: &mut [u8], off: usize, v: u32) -> Option<()> {
    b.get_mut(off..off.checked_add(4)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Parses an Ethernet/IPv4/TCP|UDP frame. Accepts IP options, TCP options and padding
/// after the IPv4 total length; refuses fragments. Checksums are not looked at.
pub fn parse(frame: &[u8]) -> Result<Parsed, Malformed> {
    parse_head(frame, frame.len())
}

/// As [`parse`], from a snapshot of the first bytes of a frame of `frame_len` bytes:
/// lengths are checked against `frame_len`, fields read from `head`, which must reach the
/// end of the TCP or UDP header (else `Truncated`).
pub fn parse_head(head: &[u8], frame_len: usize) -> Result<Parsed, Malformed> {
    use Malformed::*;
    let ethertype = be16(head, 12).ok_or(Truncated)?;
    if ethertype != ETHERTYPE_IPV4 {
        return Err(NotIpv4);
    }
    let ip_off = ETH_HEADER_LEN;
    let ip_room = frame_len.saturating_sub(ip_off);
    let ip = head.get(ip_off..).ok_or(Truncated)?;
    let vihl = *ip.first().ok_or(Truncated)?;
    if vihl >> 4 != 4 {
        return Err(BadHeader);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HEADER {
        return Err(BadHeader);
    }
    if ip.len() < ihl || ip_room < ihl {
        return Err(Truncated);
    }
    let total_len = usize::from(be16(ip, 2).ok_or(Truncated)?);
    if total_len < ihl {
        return Err(BadHeader);
    }
    // The IPv4 packet; whatever follows it in the frame is link padding.
    if total_len > ip_room {
        return Err(Truncated);
    }
    let ip = &ip[..total_len.min(ip.len())];
    if be16(ip, 6).ok_or(Truncated)? & IP_MF_AND_OFFSET != 0 {
        return Err(Fragment);
    }
    let proto = ip[9];
    let src = be32(ip, IP_SRC).ok_or(Truncated)?;
    let dst = be32(ip, IP_DST).ok_or(Truncated)?;
    // `l4_len` is the L4 segment's length by the IP header; `l4` what the head holds.
    let l4_len = total_len - ihl;
    let l4 = &ip[ihl..];
    let mut p = Parsed {
        ip_off,
        ihl,
        total_len,
        proto,
        src,
        dst,
        l4_off: ip_off + ihl,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq: 0,
        ack: 0,
        payload_len: 0,
    };
    match proto {
        PROTO_TCP => {
            if l4_len < TCP_MIN_HEADER || l4.len() < TCP_MIN_HEADER {
                return Err(Truncated);
            }
            let doff = usize::from(l4[12] >> 4) * 4;
            if doff < TCP_MIN_HEADER || doff > l4_len {
                return Err(BadHeader);
            }
            p.seq = be32(l4, 4).ok_or(Truncated)?;
            p.ack = be32(l4, 8).ok_or(Truncated)?;
            p.tcp_flags = l4[13];
            p.payload_len = l4_len - doff;
        }
        PROTO_UDP => {
            if l4_len < UDP_HEADER || l4.len() < UDP_HEADER {
                return Err(Truncated);
            }
            let len = usize::from(be16(l4, 4).ok_or(Truncated)?);
            if len < UDP_HEADER || len > l4_len {
                return Err(BadHeader);
            }
            p.payload_len = len - UDP_HEADER;
        }
        _ => return Err(NotTcpOrUdp),
    }
    p.sport = be16(l4, 0).ok_or(Truncated)?;
    p.dport = be16(l4, 2).ok_or(Truncated)?;
    Ok(p)
}

/// Rewrites the destination address and port (client → VIP becomes client → backend),
/// updating the IPv4 and TCP/UDP checksums incrementally. `frame` is the frame `p` was
/// parsed from (or a copy of it); if it is too short for what `p` says, or `p` is not TCP
/// or UDP, nothing is written.
pub fn rewrite_dst(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = rewrite(frame, p, IP_DST, 2, ip, port);
}

/// Rewrites the source address and port (backend → client becomes VIP → client); as
/// [`rewrite_dst`] otherwise.
pub fn rewrite_src(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = rewrite(frame, p, IP_SRC, 0, ip, port);
}

/// `addr_at`: offset of the address in the IPv4 header; `port_at`: offset of the port in
/// the L4 header. Returns `None` where it wrote nothing.
fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    addr_at: usize,
    port_at: usize,
    ip: u32,
    port: u16,
) -> Option<()> {
    let (l4_min, ck_at) = match p.proto {
        PROTO_TCP => (TCP_MIN_HEADER, TCP_CHECKSUM),
        PROTO_UDP => (UDP_HEADER, UDP_CHECKSUM),
        _ => return None,
    };
    // Check every offset before writing anything, so that a short frame is left as it
    // is (the writes below then cannot fail).
    let ip_end = p.ip_off.checked_add(IPV4_MIN_HEADER)?;
    let l4_end = p.l4_off.checked_add(l4_min)?;
    if ip_end > frame.len() || l4_end > frame.len() {
        return None;
    }
    let (ip_ck_off, l4_ck_off) = (p.ip_off + IP_CHECKSUM, p.l4_off + ck_at);
    let (addr_off, port_off) = (p.ip_off + addr_at, p.l4_off + port_at);

    let old_ip = be32(frame, addr_off)?;
    let old_port = be16(frame, port_off)?;
    let old = [(old_ip >> 16) as u16, old_ip as u16, old_port];
    let new = [(ip >> 16) as u16, ip as u16, port];

    let ip_ck = be16(frame, ip_ck_off)?;
    put16(
        frame,
        ip_ck_off,
        checksum_update(ip_ck, &old[..2], &new[..2]),
    )?;

    // The TCP/UDP checksum covers the address (in the pseudo-header) and the port.
    let l4_ck = be16(frame, l4_ck_off)?;
    if !(p.proto == PROTO_UDP && l4_ck == 0) {
        let mut ck = checksum_update(l4_ck, &old, &new);
        if p.proto == PROTO_UDP && ck == 0 {
            // A computed UDP checksum of 0 is sent as all ones: 0 means "none".
            ck = 0xffff;
        }
        put16(frame, l4_ck_off, ck)?;
    }
    put32(frame, addr_off, ip)?;
    put16(frame, port_off, port)
}

/// RFC 1624 eqn. 3 for several 16-bit words at once: HC' = ~(~HC + Σ(~m + m')).
fn checksum_update(hc: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!hc);
    for &m in old {
        sum += u32::from(!m);
    }
    for &m in new {
        sum += u32::from(m);
    }
    !fold(u64::from(sum))
}

/// Folds a sum of 16-bit words into 16 bits with end-around carry.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The RFC 1071 Internet checksum of `data` (an odd last byte padded with zero), with
/// `initial` added to the sum first (e.g. [`pseudo_header_sum`]): the value to store in a
/// checksum field that was zero while computing it.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    !fold(sum)
}

/// The sum of the TCP/UDP pseudo-header words (addresses in host order, `l4_len` the
/// TCP segment or UDP datagram length), for [`checksum`]'s `initial`.
pub fn pseudo_header_sum(src: u32, dst: u32, proto: u8, l4_len: u16) -> u32 {
    (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff)
        + u32::from(proto)
        + u32::from(l4_len)
}

/// Computes and stores the IPv4 header checksum and the TCP or UDP checksum of a frame
/// that [`parse`] accepts (for building frames, and where a frame leaves DockNet).
/// Returns false, changing nothing, if it does not parse.
pub fn fill_checksums(frame: &mut [u8]) -> bool {
    match parse(frame) {
        Ok(p) => fill_parsed(frame, &p).is_some(),
        Err(_) => false,
    }
}

fn fill_parsed(frame: &mut [u8], p: &Parsed) -> Option<()> {
    let ck_off = p.ip_off + IP_CHECKSUM;
    put16(frame, ck_off, 0)?;
    let ck = checksum(frame.get(p.ip_off..p.l4_off)?, 0);
    put16(frame, ck_off, ck)?;

    let (ck_off, l4_len) = match p.proto {
        PROTO_TCP => (p.l4_off + TCP_CHECKSUM, p.total_len - p.ihl),
        _ => (p.l4_off + UDP_CHECKSUM, UDP_HEADER + p.payload_len),
    };
    put16(frame, ck_off, 0)?;
    // parse guarantees l4_len <= total_len <= 65535.
    let initial = pseudo_header_sum(p.src, p.dst, p.proto, l4_len as u16);
    let mut ck = checksum(frame.get(p.l4_off..p.l4_off + l4_len)?, initial);
    if p.proto == PROTO_UDP && ck == 0 {
        ck = 0xffff;
    }
    put16(frame, ck_off, ck)
}

/// Builds a complete TCP reset frame in `out`: Ethernet (type IPv4, both MACs zero: the
/// sender fills them), IPv4 (TTL 64, DF, no options), TCP (RST, plus ACK with `ack` when
/// it is `Some`; window 0), with correct checksums. `src` and `dst` are (address in host
/// order, port). Returns its length, [`TCP_RST_FRAME_LEN`], or `None` if `out` is shorter.
pub fn write_tcp_rst(
    out: &mut [u8],
    src: (u32, u16),
    dst: (u32, u16),
    seq: u32,
    ack: Option<u32>,
) -> Option<usize> {
    let f = out.get_mut(..TCP_RST_FRAME_LEN)?;
    f.fill(0);
    put16(f, 12, ETHERTYPE_IPV4)?;
    let ip = ETH_HEADER_LEN;
    f[ip] = 0x45;
    put16(f, ip + 2, (IPV4_MIN_HEADER + TCP_MIN_HEADER) as u16)?;
    put16(f, ip + 6, IP_DF)?;
    f[ip + 8] = 64;
    f[ip + 9] = PROTO_TCP;
    put32(f, ip + IP_SRC, src.0)?;
    put32(f, ip + IP_DST, dst.0)?;
    let tcp = ip + IPV4_MIN_HEADER;
    put16(f, tcp, src.1)?;
    put16(f, tcp + 2, dst.1)?;
    put32(f, tcp + 4, seq)?;
    put32(f, tcp + 8, ack.unwrap_or(0))?;
    f[tcp + 12] = ((TCP_MIN_HEADER / 4) as u8) << 4;
    f[tcp + 13] = tcp_flags::RST | if ack.is_some() { tcp_flags::ACK } else { 0 };
    fill_checksums(f).then_some(TCP_RST_FRAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent, byte-at-a-time RFC 1071 sum, to check the code under test against.
    fn ref_sum(data: &[u8]) -> u32 {
        let mut sum = 0u32;
        for (i, &b) in data.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(b) << 8
            } else {
                u32::from(b)
            };
        }
        sum
    }

    fn ref_fold_not(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        !(sum as u16)
    }

    /// The IPv4 and L4 checksums a full recomputation gives for a frame built by `build`.
    fn ref_checksums(f: &[u8], ihl: usize, proto: u8, l4_len: usize) -> (u16, u16) {
        let ip = &f[14..14 + ihl];
        let ip_ck = ref_fold_not(ref_sum(ip) - ref_sum(&ip[10..12]));
        let l4 = &f[14 + ihl..14 + ihl + l4_len];
        let ck_at = if proto == PROTO_TCP { 16 } else { 6 };
        let pseudo = ref_sum(&ip[12..20]) + u32::from(proto) + l4_len as u32;
        let mut l4_ck = ref_fold_not(pseudo + ref_sum(l4) - ref_sum(&l4[ck_at..ck_at + 2]));
        if proto == PROTO_UDP && l4_ck == 0 {
            l4_ck = 0xffff;
        }
        (ip_ck, l4_ck)
    }

    #[derive(Debug, Clone)]
    struct Spec {
        tcp: bool,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        ip_opts: Vec<u8>,
        tcp_opts: Vec<u8>,
        payload: Vec<u8>,
        padding: Vec<u8>,
        flags: u8,
        seq: u32,
        ack: u32,
        ident: u16,
        df: bool,
    }

    /// Builds the frame with correct checksums (computed by the reference code).
    fn build(s: &Spec) -> Vec<u8> {
        let ihl = 20 + s.ip_opts.len();
        let l4_hdr = if s.tcp { 20 + s.tcp_opts.len() } else { 8 };
        let l4_len = l4_hdr + s.payload.len();
        let total = ihl + l4_len;
        let mut f = vec![0u8; 14];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&s.ident.to_be_bytes());
        f.extend_from_slice(&(if s.df { 0x4000u16 } else { 0 }).to_be_bytes());
        f.push(64);
        f.push(if s.tcp { 6 } else { 17 });
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&s.src.to_be_bytes());
        f.extend_from_slice(&s.dst.to_be_bytes());
        f.extend_from_slice(&s.ip_opts);
        f.extend_from_slice(&s.sport.to_be_bytes());
        f.extend_from_slice(&s.dport.to_be_bytes());
        if s.tcp {
            f.extend_from_slice(&s.seq.to_be_bytes());
            f.extend_from_slice(&s.ack.to_be_bytes());
            f.push(((l4_hdr / 4) as u8) << 4);
            f.push(s.flags);
            f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            f.extend_from_slice(&s.tcp_opts);
        } else {
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(&s.payload);
        let proto = if s.tcp { PROTO_TCP } else { PROTO_UDP };
        let (ip_ck, l4_ck) = ref_checksums(&f, ihl, proto, l4_len);
        f[24..26].copy_from_slice(&ip_ck.to_be_bytes());
        let at = 14 + ihl + if s.tcp { 16 } else { 6 };
        f[at..at + 2].copy_from_slice(&l4_ck.to_be_bytes());
        f.extend_from_slice(&s.padding);
        f
    }

    fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
        (0..=max).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), 4 * n))
    }

    fn spec() -> impl Strategy<Value = Spec> {
        use proptest::collection::vec;
        (
            (
                any::<bool>(),
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
            ),
            (
                words(10),
                words(10),
                vec(any::<u8>(), 0..300),
                vec(any::<u8>(), 0..8),
            ),
            (
                any::<u8>(),
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                any::<bool>(),
            ),
        )
            .prop_map(|(a, b, c)| Spec {
                tcp: a.0,
                src: a.1,
                dst: a.2,
                sport: a.3,
                dport: a.4,
                ip_opts: b.0,
                tcp_opts: b.1,
                payload: b.2,
                padding: b.3,
                flags: c.0,
                seq: c.1,
                ack: c.2,
                ident: c.3,
                df: c.4,
            })
    }

    fn sample(tcp: bool) -> Spec {
        Spec {
            tcp,
            src: 0x0a58_0002,
            dst: 0x0a58_0064,
            sport: 40000,
            dport: 80,
            ip_opts: vec![],
            tcp_opts: vec![2, 4, 5, 0xb4],
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            padding: vec![],
            flags: tcp_flags::PSH | tcp_flags::ACK,
            seq: 1000,
            ack: 2000,
            ident: 7,
            df: true,
        }
    }

    fn checksums_of(f: &[u8], p: &Parsed) -> (u16, u16) {
        let at = p.l4_off + if p.proto == PROTO_TCP { 16 } else { 6 };
        (be16(f, p.ip_off + 10).unwrap(), be16(f, at).unwrap())
    }

    fn l4_len(p: &Parsed) -> usize {
        if p.proto == PROTO_TCP {
            p.total_len - p.ihl
        } else {
            8 + p.payload_len
        }
    }

    #[test]
    fn parses_tcp_and_udp() {
        let f = build(&sample(true));
        let p = parse(&f).unwrap();
        assert_eq!(
            p,
            Parsed {
                ip_off: 14,
                ihl: 20,
                total_len: 20 + 24 + 18,
                proto: PROTO_TCP,
                src: 0x0a58_0002,
                dst: 0x0a58_0064,
                l4_off: 34,
                sport: 40000,
                dport: 80,
                tcp_flags: tcp_flags::PSH | tcp_flags::ACK,
                seq: 1000,
                ack: 2000,
                payload_len: 18,
            }
        );
        let mut s = sample(false);
        s.padding = vec![0; 6];
        let f = build(&s);
        let p = parse(&f).unwrap();
        assert_eq!(
            (p.proto, p.sport, p.dport, p.payload_len),
            (PROTO_UDP, 40000, 80, 18)
        );
        assert_eq!((p.tcp_flags, p.seq, p.ack), (0, 0, 0));
    }

    #[test]
    fn rejects_what_it_must() {
        let good = build(&sample(true));
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            parse(&v)
        };
        assert_eq!(parse(&[]), Err(Malformed::Truncated));
        assert_eq!(parse(&good[..14]), Err(Malformed::Truncated));
        assert_eq!(parse(&good[..33]), Err(Malformed::Truncated));
        assert_eq!(with(&|v| v[12] = 0x86), Err(Malformed::NotIpv4));
        assert_eq!(with(&|v| v[13] = 0x06), Err(Malformed::NotIpv4));
        assert_eq!(with(&|v| v[14] = 0x65), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[14] = 0x44), Err(Malformed::BadHeader));
        // 60 bytes of IPv4 header leave 2 for TCP.
        assert_eq!(with(&|v| v[14] = 0x4f), Err(Malformed::Truncated));
        assert_eq!(with(&|v| v[17] = 19), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[17] += 1), Err(Malformed::Truncated));
        assert_eq!(with(&|v| v[20] |= 0x20), Err(Malformed::Fragment));
        assert_eq!(with(&|v| v[21] = 1), Err(Malformed::Fragment));
        assert_eq!(with(&|v| v[23] = 1), Err(Malformed::NotTcpOrUdp));
        assert_eq!(with(&|v| v[46] = 0x40), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[46] = 0xf0), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[17] = 20 + 19), Err(Malformed::Truncated));
        assert_eq!(parse(&good[..good.len() - 1]), Err(Malformed::Truncated));

        let udp = build(&sample(false));
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = udp.clone();
            f(&mut v);
            parse(&v)
        };
        assert_eq!(with(&|v| v[39] = 7), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[39] += 1), Err(Malformed::BadHeader));
        assert_eq!(with(&|v| v[17] = 20 + 7), Err(Malformed::Truncated));
        // A UDP length shorter than the IP payload is consistent (the rest is ignored).
        assert_eq!(with(&|v| v[39] -= 1).map(|p| p.payload_len), Ok(17));
    }

    #[test]
    fn udp_checksum_zero_stays_zero() {
        let mut f = build(&sample(false));
        let p = parse(&f).unwrap();
        f[p.l4_off + 6..p.l4_off + 8].fill(0);
        rewrite_dst(&mut f, &p, 0x0a58_0009, 8080);
        rewrite_src(&mut f, &p, 0x0a58_0001, 53);
        assert_eq!(&f[p.l4_off + 6..p.l4_off + 8], &[0, 0]);
        let q = parse(&f).unwrap();
        assert_eq!(
            (q.src, q.sport, q.dst, q.dport),
            (0x0a58_0001, 53, 0x0a58_0009, 8080)
        );
        assert_eq!(
            checksums_of(&f, &q).0,
            ref_checksums(&f, 20, PROTO_UDP, l4_len(&q)).0
        );
    }

    /// Every destination port, so that rewrites whose UDP checksum computes to 0 (sent as
    /// 0xffff) and rewrites from such a checksum are both covered.
    #[test]
    fn udp_checksum_all_ports() {
        let f = build(&sample(false));
        let p = parse(&f).unwrap();
        let mut saw_ffff = false;
        for port in 0..=u16::MAX {
            let mut g = f.clone();
            rewrite_dst(&mut g, &p, 0x0a58_0077, port);
            let want = ref_checksums(&g, 20, PROTO_UDP, l4_len(&p));
            let got = checksums_of(&g, &p);
            assert_eq!(got, want, "port {port}");
            if got.1 == 0xffff {
                saw_ffff = true;
                // And back from 0xffff.
                let mut h = g.clone();
                rewrite_dst(&mut h, &p, 0x0a58_0064, 80);
                assert_eq!(h, f);
            }
        }
        assert!(saw_ffff);
    }

    #[test]
    fn short_frame_is_left_alone() {
        let f = build(&sample(true));
        let p = parse(&f).unwrap();
        for n in 0..p.l4_off + 20 {
            let mut g = f[..n].to_vec();
            rewrite_dst(&mut g, &p, 1, 2);
            rewrite_src(&mut g, &p, 1, 2);
            assert_eq!(g, &f[..n]);
        }
        let mut weird = p;
        weird.l4_off = usize::MAX - 3;
        let mut g = f.clone();
        rewrite_dst(&mut g, &weird, 1, 2);
        assert_eq!(g, f);
        weird = p;
        weird.proto = 1;
        rewrite_src(&mut g, &weird, 1, 2);
        assert_eq!(g, f);
    }

    #[test]
    fn garbage_checksums_are_not_verified() {
        let mut f = build(&sample(true));
        f[24] ^= 0x5a;
        f[34 + 16] ^= 0xa5;
        let p = parse(&f).unwrap();
        rewrite_dst(&mut f, &p, 0x0a58_0009, 8080);
        let q = parse(&f).unwrap();
        assert_eq!((q.dst, q.dport), (0x0a58_0009, 8080));
        // Still wrong: filling them in changes both.
        let mut g = f.clone();
        assert!(fill_checksums(&mut g));
        assert_ne!(g[24..26], f[24..26]);
        assert_ne!(g[50..52], f[50..52]);
    }

    #[test]
    fn rst_for_a_parsed_packet_parses_back() {
        let f = build(&sample(true));
        let p = parse(&f).unwrap();
        // A reset from the VIP to the client, as the NAT sends when a backend goes away.
        let mut out = [0xeeu8; 64];
        let n = write_tcp_rst(
            &mut out,
            (p.dst, p.dport),
            (p.src, p.sport),
            p.ack,
            Some(p.seq),
        )
        .unwrap();
        assert_eq!(n, TCP_RST_FRAME_LEN);
        assert_eq!(n, 54);
        let r = parse(&out[..n]).unwrap();
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (p.dst, p.dport, p.src, p.sport)
        );
        assert_eq!((r.seq, r.ack), (p.ack, p.seq));
        assert_eq!(r.tcp_flags, tcp_flags::RST | tcp_flags::ACK);
        assert_eq!((r.total_len, r.payload_len, r.ihl), (40, 0, 20));
        assert_eq!(&out[..12], &[0; 12]);
        assert_eq!(out[14 + 8], 64);
        assert_eq!(be16(&out, 14 + 6), Some(0x4000));
        assert_eq!(be16(&out, 34 + 14), Some(0), "window");
        assert_eq!(
            checksums_of(&out, &r),
            ref_checksums(&out, 20, PROTO_TCP, 20)
        );
        assert_eq!(&out[n..], &[0xee; 10]);

        let n = write_tcp_rst(&mut out, (1, 2), (3, 4), 5, None).unwrap();
        let r = parse(&out[..n]).unwrap();
        assert_eq!((r.tcp_flags, r.seq, r.ack), (tcp_flags::RST, 5, 0));
        assert_eq!(
            checksums_of(&out, &r),
            ref_checksums(&out, 20, PROTO_TCP, 20)
        );
        assert_eq!(write_tcp_rst(&mut out[..53], (1, 2), (3, 4), 5, None), None);
    }

    #[test]
    fn checksum_helper() {
        // RFC 1071's example: the sum of these words is 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d, 0), !0xddf2);
        assert_eq!(checksum(&[0xab], 0), !0xab00);
        assert_eq!(checksum(&[], 0x1_fffe), !0xffff);
        assert!(!fill_checksums(&mut [0u8; 10]));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn built_frames_parse(s in spec()) {
            let f = build(&s);
            let p = parse(&f).unwrap();
            prop_assert_eq!((p.src, p.dst, p.sport, p.dport), (s.src, s.dst, s.sport, s.dport));
            prop_assert_eq!(p.ihl, 20 + s.ip_opts.len());
            prop_assert_eq!(p.payload_len, s.payload.len());
            if s.tcp {
                prop_assert_eq!((p.tcp_flags, p.seq, p.ack), (s.flags, s.seq, s.ack));
            }
            let mut g = f.clone();
            prop_assert!(fill_checksums(&mut g));
            prop_assert_eq!(g, f);
        }

        #[test]
        fn rewrites_keep_checksums_valid(
            s in spec(),
            zero_udp in any::<bool>(),
            ip in any::<u32>(),
            port in any::<u16>(),
            src in any::<bool>(),
        ) {
            let mut f = build(&s);
            let p = parse(&f).unwrap();
            let zero = !s.tcp && zero_udp;
            if zero {
                f[p.l4_off + 6..p.l4_off + 8].fill(0);
            }
            let before = f.clone();
            if src {
                rewrite_src(&mut f, &p, ip, port);
            } else {
                rewrite_dst(&mut f, &p, ip, port);
            }
            let q = parse(&f).unwrap();
            if src {
                prop_assert_eq!((q.src, q.sport, q.dst, q.dport), (ip, port, p.dst, p.dport));
            } else {
                prop_assert_eq!((q.src, q.sport, q.dst, q.dport), (p.src, p.sport, ip, port));
            }
            let (ip_ck, l4_ck) = ref_checksums(&f, p.ihl, p.proto, l4_len(&p));
            let got = checksums_of(&f, &p);
            prop_assert_eq!(got.0, ip_ck);
            prop_assert_eq!(got.1, if zero { 0 } else { l4_ck });
            // Nothing else changed.
            let ck_at = p.l4_off + if s.tcp { 16 } else { 6 };
            let (addr, port_at) = if src { (26, p.l4_off) } else { (30, p.l4_off + 2) };
            for i in 0..f.len() {
                let touched = (24..26).contains(&i)
                    || (addr..addr + 4).contains(&i)
                    || (port_at..port_at + 2).contains(&i)
                    || (ck_at..ck_at + 2).contains(&i);
                if !touched {
                    prop_assert_eq!(f[i], before[i], "byte {}", i);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
            ipv4_header in any::<bool>(),
        ) {
            if ipv4_header && bytes.len() >= 15 {
                // Get past the first checks more often.
                bytes[12] = 8;
                bytes[13] = 0;
                bytes[14] = 0x45;
            }
            exercise(&mut bytes);
        }

        #[test]
        fn mutated_frames_never_panic(
            s in spec(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
            do_cut in any::<bool>(),
        ) {
            let mut f = build(&s);
            for (at, b) in edits {
                // Bias towards the headers, where the interesting fields are.
                let i = at % f.len().min(80);
                f[i] = b;
            }
            if do_cut {
                f.truncate(cut % (f.len() + 1));
            }
            exercise(&mut f);
        }
    }

    /// Parses and, if that succeeds, checks the invariants a caller relies on and runs
    /// every rewrite on the frame and on shorter copies of it.
    fn exercise(f: &mut [u8]) {
        let Ok(p) = parse(f) else {
            return;
        };
        assert!(p.ip_off + p.total_len <= f.len());
        assert!(p.l4_off + 8 <= f.len());
        assert!(p.ihl >= 20 && p.l4_off == p.ip_off + p.ihl);
        let l4_hdr = p.total_len
            - p.ihl
            - if p.proto == PROTO_TCP {
                p.payload_len
            } else {
                0
            };
        assert!(l4_hdr >= 8);
        rewrite_dst(f, &p, 0x0102_0304, 99);
        rewrite_src(f, &p, 0x0506_0708, 100);
        let mut copy = f.to_vec();
        assert!(fill_checksums(&mut copy));
        let n = f.len();
        rewrite_dst(&mut f[..n / 2], &p, 1, 1);
        rewrite_src(&mut f[..n / 3], &p, 1, 1);
    }
}
