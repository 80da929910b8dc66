//! The virtio-net header that `PACKET_VNET_HDR` puts before every frame (RX and TX): how
//! GSO and checksum offload are asked for and reported.

use crate::nic::TxMeta;

/// `sizeof(struct virtio_net_hdr)` (linux/virtio_net.h): what `PACKET_VNET_HDR` puts before
/// every frame, on RX and on TX.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is to be filled from `csum_start`.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VNET_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on `gso_type`).
pub const VNET_GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (without `num_buffers`). Its 16-bit fields are in the host's
/// byte order: AF_PACKET reads and writes them as legacy virtio (`vio_le()`: little-endian
/// exactly when the host is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP) to copy into the linear part.
    pub hdr_len: u16,
    /// Payload bytes per segment, for GSO.
    pub gso_size: u16,
    /// Where checksumming starts (from the start of the frame) ...
    pub csum_start: u16,
    /// ... and where, from `csum_start`, the result goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header for a frame sent with `meta`; `frame` is the frame as written (to find
    /// the TCP header length, so the kernel copies exactly the headers into the skb's
    /// linear part).
    pub(super) fn for_tx(meta: &TxMeta, frame: &[u8]) -> VnetHdr {
        let mut h = VnetHdr::default();
        if let Some((start, off)) = meta.csum_partial {
            h.flags = VNET_F_NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = off;
            h.hdr_len = start + off + 2;
        }
        if let Some(size) = meta.gso_size {
            h.gso_type = VNET_GSO_TCPV4;
            h.gso_size = size;
            let start = h.csum_start as usize;
            if let Some(&doff) = frame.get(start + 12) {
                let end = start + (doff >> 4) as usize * 4;
                if end >= start + 20 && end <= frame.len() {
                    h.hdr_len = end as u16;
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_encodes_and_decodes() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.encode();
        // struct virtio_net_hdr: u8 flags, u8 gso_type, then u16 hdr_len, gso_size,
        // csum_start, csum_offset in host order.
        let mut want = vec![1u8, 1];
        for v in [66u16, 1448, 34, 16] {
            want.extend(v.to_ne_bytes());
        }
        assert_eq!(b.to_vec(), want);
        assert_eq!(VnetHdr::decode(&b), Some(h));
        assert_eq!(VnetHdr::decode(&b[..9]), None);
        assert_eq!(VnetHdr::decode(&[0; 10]), Some(VnetHdr::default()));
    }

    #[test]
    fn vnet_tx_header_follows_the_meta() {
        // Ethernet + IPv4 (IHL 5) + TCP with 12 bytes of options (doff 8).
        let mut f = vec![0u8; 14 + 20 + 32 + 100];
        f[14 + 20 + 12] = 8 << 4;
        let plain = VnetHdr::for_tx(&TxMeta::default(), &f);
        assert_eq!(plain, VnetHdr::default());
        let csum = TxMeta {
            gso_size: None,
            csum_partial: Some((34, 16)),
        };
        let h = VnetHdr::for_tx(&csum, &f);
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start, h.csum_offset, h.hdr_len),
            (VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 34, 16, 52)
        );
        let gso = TxMeta {
            gso_size: Some(1448),
            csum_partial: Some((34, 16)),
        };
        let h = VnetHdr::for_tx(&gso, &f);
        assert_eq!(
            (h.gso_type, h.gso_size, h.hdr_len),
            (VNET_GSO_TCPV4, 1448, 66)
        );
    }
}
