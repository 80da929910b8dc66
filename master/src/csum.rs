//! Internet checksums (RFC 1071) for frames crossing the NIC.
//!
//! Pipes carry no checksums (the switch is trusted software, like veth's
//! CHECKSUM_PARTIAL); the edge fills them on egress and verifies them on ingress. The sum
//! runs over native-endian 64-bit words with end-around carry; on a little-endian machine
//! that yields the byte-swapped big-endian sum, which is why results are stored with
//! `to_le_bytes` (RFC 1071 §2(B): the sum is byte-order independent up to a swap).

/// Partial one's-complement sum of `data` (even-offset aligned), added to `acc`.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes(c.try_into().expect("8-byte chunk"));
        let (s, carry) = acc.overflowing_add(w);
        acc = s + carry as u64;
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        let (s, carry) = acc.overflowing_add(u16::from_ne_bytes([c[0], c[1]]) as u64);
        acc = s + carry as u64;
    }
    if let [b] = rest.remainder() {
        let (s, carry) = acc.overflowing_add(u16::from_ne_bytes([*b, 0]) as u64);
        acc = s + carry as u64;
    }
    acc
}

/// Fold a partial sum to 16 bits (native order, see module docs).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field's bytes for a partial sum: the complement, in wire order.
pub fn field(acc: u64) -> [u8; 2] {
    (!fold(acc)).to_ne_bytes()
}

/// IPv4 pseudo-header sum for an L4 checksum.
fn pseudo(ip: &[u8], proto: u8, l4_len: usize) -> u64 {
    let mut p = [0u8; 12];
    p[0..8].copy_from_slice(&ip[12..20]);
    p[9] = proto;
    p[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    sum(&p, 0)
}

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Where the L4 checksum sits, if the protocol has one we handle: (offset in L4 header,
/// whether the pseudo-header is included).
fn l4_field(proto: u8) -> Option<(usize, bool)> {
    match proto {
        PROTO_TCP => Some((16, true)),
        PROTO_UDP => Some((6, true)),
        PROTO_ICMP => Some((2, false)),
        _ => None,
    }
}

/// Header length and protocol of an IPv4 packet `ip` (exactly total-length bytes), if its
/// header is well formed and not a fragment (fragments are not reassembled here).
fn parse(ip: &[u8]) -> Option<(usize, u8, bool)> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 || ihl > ip.len() || u16::from_be_bytes([ip[2], ip[3]]) as usize != ip.len() {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    Some((ihl, ip[9], frag))
}

/// Fill the IPv4 header checksum and the TCP/UDP/ICMP checksum of `ip` (one IPv4 packet,
/// exactly its total length). Returns false if the packet is malformed (left untouched).
pub fn fill(ip: &mut [u8]) -> bool {
    let Some((ihl, proto, frag)) = parse(ip) else {
        return false;
    };
    ip[10..12].copy_from_slice(&[0, 0]);
    let h = field(sum(&ip[..ihl], 0));
    ip[10..12].copy_from_slice(&h);
    if frag {
        return true;
    }
    let Some((off, with_pseudo)) = l4_field(proto) else {
        return true;
    };
    let l4_len = ip.len() - ihl;
    if l4_len < off + 2 || (proto == PROTO_TCP && l4_len < 20) {
        return false;
    }
    let base = if with_pseudo {
        pseudo(ip, proto, l4_len)
    } else {
        0
    };
    let l4 = &mut ip[ihl..];
    l4[off..off + 2].copy_from_slice(&[0, 0]);
    let mut c = field(sum(l4, base));
    if proto == PROTO_UDP && c == [0, 0] {
        c = [0xff, 0xff]; // RFC 768: a computed 0 is sent as all ones.
    }
    l4[off..off + 2].copy_from_slice(&c);
    true
}

/// Prepare `ip` (one TCP or UDP over IPv4 packet, exactly its total length, not a
/// fragment) for a link that fills the L4 checksum (`CHECKSUM_PARTIAL`, virtio
/// `NEEDS_CSUM`): fill the IPv4 header checksum and put the folded pseudo-header sum, not
/// complemented, into the L4 checksum field. Returns (L4 header offset in `ip` = IHL,
/// checksum field offset in the L4 header); `None` (packet untouched) for anything else,
/// which the caller then fills with [`fill`].
pub fn fill_partial(ip: &mut [u8]) -> Option<(usize, usize)> {
    let (ihl, proto, frag) = parse(ip)?;
    if frag || !(proto == PROTO_TCP || proto == PROTO_UDP) {
        return None;
    }
    let (off, _) = l4_field(proto)?;
    let l4_len = ip.len() - ihl;
    if (proto == PROTO_TCP && l4_len < 20) || (proto == PROTO_UDP && l4_len < 8) {
        return None;
    }
    ip[10..12].copy_from_slice(&[0, 0]);
    let h = field(sum(&ip[..ihl], 0));
    ip[10..12].copy_from_slice(&h);
    let p = fold(pseudo(ip, proto, l4_len)).to_ne_bytes();
    ip[ihl + off..ihl + off + 2].copy_from_slice(&p);
    Some((ihl, off))
}

/// Check that `ip` is a well-formed, unfragmented IPv4 packet (exactly its total length)
/// with a good header checksum, without looking at the L4 checksum: for frames whose L4
/// checksum the link vouches for (or left for a device to fill).
pub fn verify_header(ip: &[u8]) -> Result<(), Bad> {
    let (ihl, _, frag) = parse(ip).ok_or(Bad::Malformed)?;
    if frag {
        return Err(Bad::Malformed);
    }
    if fold(sum(&ip[..ihl], 0)) != 0xffff {
        return Err(Bad::HeaderChecksum);
    }
    Ok(())
}

/// Why an incoming packet failed verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not a well-formed, unfragmented IPv4 packet.
    Malformed,
    /// The IPv4 header checksum is wrong.
    HeaderChecksum,
    /// The TCP/UDP/ICMP checksum is wrong.
    Checksum,
}

/// Verify the checksums of `ip` (one IPv4 packet, exactly its total length).
pub fn verify(ip: &[u8]) -> Result<(), Bad> {
    let (ihl, proto, frag) = parse(ip).ok_or(Bad::Malformed)?;
    if frag {
        return Err(Bad::Malformed);
    }
    if fold(sum(&ip[..ihl], 0)) != 0xffff {
        return Err(Bad::HeaderChecksum);
    }
    let Some((off, with_pseudo)) = l4_field(proto) else {
        return Ok(());
    };
    let l4_len = ip.len() - ihl;
    if l4_len < off + 2 || (proto == PROTO_TCP && l4_len < 20) || (proto == PROTO_UDP && l4_len < 8)
    {
        return Err(Bad::Malformed);
    }
    let l4 = &ip[ihl..];
    if proto == PROTO_UDP && l4[6..8] == [0, 0] {
        return Ok(()); // UDP without a checksum.
    }
    let base = if with_pseudo {
        pseudo(ip, proto, l4_len)
    } else {
        0
    };
    if fold(sum(l4, base)) != 0xffff {
        return Err(Bad::Checksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: RFC 1071 sum over big-endian 16-bit words.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn packet(proto: u8, payload: usize) -> Vec<u8> {
        let l4 = match proto {
            PROTO_TCP => 20,
            PROTO_UDP => 8,
            _ => 8,
        } + payload;
        let total = 20 + l4;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 88, 0, 2]);
        p[16..20].copy_from_slice(&[192, 168, 7, 9]);
        if proto == PROTO_TCP {
            p[32] = 0x50;
        }
        if proto == PROTO_UDP {
            p[24..26].copy_from_slice(&(l4 as u16).to_be_bytes());
        }
        for (i, b) in p[total - payload..].iter_mut().enumerate() {
            *b = (i * 31 + 7) as u8;
        }
        p
    }

    #[test]
    fn matches_the_reference_sum() {
        for len in [0, 1, 2, 7, 8, 9, 63, 64, 65, 1499, 9000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 + 17) as u8).collect();
            assert_eq!(
                u16::from_be_bytes(field(sum(&data, 0))),
                reference(&data),
                "len {len}"
            );
        }
    }

    #[test]
    fn fill_then_verify_for_every_protocol() {
        for proto in [PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47] {
            for payload in [0, 1, 5, 1000, 8959 - 20] {
                let mut p = packet(proto, payload);
                assert!(fill(&mut p));
                assert_eq!(verify(&p), Ok(()), "proto {proto} payload {payload}");
                // The header checksum agrees with the reference.
                let mut h = p[..20].to_vec();
                h[10..12].copy_from_slice(&[0, 0]);
                assert_eq!(u16::from_be_bytes([p[10], p[11]]), reference(&h));
                if proto != 47 && payload > 0 {
                    let last = p.len() - 1;
                    p[last] ^= 0x40;
                    assert_eq!(verify(&p), Err(Bad::Checksum));
                }
            }
        }
    }

    /// What a device does with a `CHECKSUM_PARTIAL` packet: sum from csum_start to the end
    /// (the field holding the pseudo-header sum) and store the complement in the field.
    fn device_completes(ip: &mut [u8], start: usize, off: usize) {
        let c = field(sum(&ip[start..], 0));
        ip[start + off..start + off + 2].copy_from_slice(&c);
    }

    #[test]
    fn partial_fill_is_completed_by_the_device_into_a_valid_packet() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            for payload in [0, 1, 7, 1000, 65000 - 40] {
                let mut p = packet(proto, payload);
                let mut want = p.clone();
                assert!(fill(&mut want));
                let (start, off) = fill_partial(&mut p).expect("TCP/UDP");
                assert_eq!((start, off), (20, if proto == PROTO_TCP { 16 } else { 6 }));
                assert_eq!(verify_header(&p), Ok(()));
                // The field holds the pseudo-header sum: the reference sum of the
                // pseudo-header, not complemented.
                let mut ph = p[12..20].to_vec();
                ph.extend([0, proto]);
                ph.extend(((p.len() - 20) as u16).to_be_bytes());
                let field_be = u16::from_be_bytes([p[start + off], p[start + off + 1]]);
                assert_eq!(field_be, !reference(&ph), "proto {proto} payload {payload}");
                device_completes(&mut p, start, off);
                assert_eq!(verify(&p), Ok(()), "proto {proto} payload {payload}");
                if proto == PROTO_TCP {
                    assert_eq!(p, want, "same bytes as a software fill");
                }
            }
        }
        // ICMP, other protocols, fragments and malformed packets are left to `fill`.
        for mut p in [packet(PROTO_ICMP, 10), packet(47, 10)] {
            let q = p.clone();
            assert_eq!(fill_partial(&mut p), None);
            assert_eq!(p, q);
        }
        let mut f = packet(PROTO_TCP, 10);
        f[6] = 0x20;
        assert_eq!(fill_partial(&mut f), None);
        assert_eq!(fill_partial(&mut packet(PROTO_TCP, 10)[..30]), None);
    }

    #[test]
    fn verify_header_ignores_the_l4_checksum_only() {
        let mut p = packet(PROTO_TCP, 100);
        assert!(fill(&mut p));
        p[40] ^= 0xff; // L4 checksum now wrong
        assert_eq!(verify(&p), Err(Bad::Checksum));
        assert_eq!(verify_header(&p), Ok(()));
        p[8] ^= 1;
        assert_eq!(verify_header(&p), Err(Bad::HeaderChecksum));
        let mut f = packet(PROTO_TCP, 10);
        assert!(fill(&mut f));
        f[6] = 0x20;
        assert_eq!(verify_header(&f), Err(Bad::Malformed));
        assert_eq!(verify_header(&f[..30]), Err(Bad::Malformed));
    }

    #[test]
    fn verify_rejects_bad_headers() {
        let mut p = packet(PROTO_TCP, 10);
        assert!(fill(&mut p));
        let mut q = p.clone();
        q[8] ^= 1;
        assert_eq!(verify(&q), Err(Bad::HeaderChecksum));
        assert_eq!(verify(&p[..30]), Err(Bad::Malformed));
        let mut f = p.clone();
        f[6] = 0x20; // more fragments
        assert_eq!(verify(&f), Err(Bad::Malformed));
        assert_eq!(verify(&[]), Err(Bad::Malformed));
        let mut u = packet(PROTO_UDP, 3);
        assert!(fill(&mut u));
        u[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(verify(&u), Ok(()), "UDP checksum 0 means none");
    }
}
