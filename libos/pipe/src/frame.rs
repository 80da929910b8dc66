//! The frames pipes and fast channels carry: Ethernet II with IPv4 (and ARP, which only
//! the master answers). The offsets and the few header fields that the master and the
//! libOS read before any full parser sees a frame are defined here once.
//!
//! Every accessor takes the frame's first bytes (a private copy, or a frame the caller
//! owns) and returns `None` if they are too short: nothing here panics on short input.

use std::ops::Range;

/// Ethernet header length.
pub const ETH_HEADER_LEN: usize = 14;
/// Ethernet destination MAC.
pub const ETH_DST: Range<usize> = 0..6;
/// Ethernet source MAC.
pub const ETH_SRC: Range<usize> = 6..12;
/// EtherType.
pub const ETH_TYPE: Range<usize> = 12..14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv4 source address in an Ethernet frame (no IP options come before it).
pub const IPV4_SRC: Range<usize> = ETH_HEADER_LEN + 12..ETH_HEADER_LEN + 16;
/// IPv4 destination address in an Ethernet frame.
pub const IPV4_DST: Range<usize> = ETH_HEADER_LEN + 16..ETH_HEADER_LEN + 20;
/// Ethernet header plus the fixed IPv4 header.
pub const IPV4_MIN_FRAME_LEN: usize = ETH_HEADER_LEN + 20;

/// The frame's EtherType.
pub fn ethertype(f: &[u8]) -> Option<u16> {
    f.get(ETH_TYPE).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The frame's Ethernet source MAC.
pub fn eth_src(f: &[u8]) -> Option<[u8; 6]> {
    f.get(ETH_SRC).and_then(|b| b.try_into().ok())
}

/// The IPv4 source address (as a big-endian `u32`) of an Ethernet/IPv4 frame.
pub fn ipv4_src(f: &[u8]) -> Option<u32> {
    be32(f, IPV4_SRC)
}

/// The IPv4 destination address (as a big-endian `u32`) of an Ethernet/IPv4 frame.
pub fn ipv4_dst(f: &[u8]) -> Option<u32> {
    be32(f, IPV4_DST)
}

fn be32(f: &[u8], r: Range<usize>) -> Option<u32> {
    f.get(r)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_short_frames() {
        let mut f = [0u8; 34];
        f[ETH_SRC].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        f[ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[IPV4_SRC].copy_from_slice(&[10, 88, 0, 2]);
        f[IPV4_DST].copy_from_slice(&[10, 88, 0, 3]);
        assert_eq!(ethertype(&f), Some(ETHERTYPE_IPV4));
        assert_eq!(eth_src(&f), Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(ipv4_src(&f), Some(0x0a58_0002));
        assert_eq!(ipv4_dst(&f), Some(0x0a58_0003));
        for n in 0..34 {
            let s = &f[..n];
            assert_eq!(ethertype(s).is_some(), n >= 14);
            assert_eq!(eth_src(s).is_some(), n >= 12);
            assert_eq!(ipv4_src(s).is_some(), n >= 30);
            assert_eq!(ipv4_dst(s).is_some(), n >= 34);
        }
    }
}
