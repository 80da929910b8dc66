//! Rings of fixed frame slots: TPACKET_V2 RX (`FrameRx`) and the TX ring of either
//! version (`TxRing`, frames written in place and marked for the kernel).

use std::sync::atomic::{AtomicU32, Ordering};

use super::layout::Layout;
use super::rx_frame::{deliver, parse_frame, RxCounters, RxWant};
use super::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::nic::{RxMeta, TxMeta};

/// A ring of fixed frame slots (TPACKET_V2 RX, and the TX ring of either version).
pub(super) struct Slots {
    pub(super) base: *mut u8,
    pub(super) block_size: usize,
    pub(super) frame_size: usize,
    pub(super) frames_per_block: usize,
    pub(super) frame_nr: usize,
    /// Header layout of a slot.
    pub(super) l: Layout,
    /// Next slot to read (RX) or fill (TX).
    pub(super) head: usize,
}

impl Slots {
    /// Start of slot `i` (`i < frame_nr`); slots never straddle blocks.
    fn slot(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        // SAFETY: `i < frame_nr = frames_per_block * block_nr`, so `off` + frame_size is
        // inside this ring's part of the mapping.
        unsafe { self.base.add(off) }
    }

    fn status(&self, slot: *mut u8) -> &AtomicU32 {
        // SAFETY: `slot` is a slot start (16-aligned), tp_status is at a 4-aligned offset
        // inside it; the mapping outlives `&self`. The kernel writes it too: atomic access.
        unsafe { &*(slot.add(self.l.status) as *const AtomicU32) }
    }

    fn advance(&mut self) {
        self.head = (self.head + 1) % self.frame_nr;
    }
}

/// TPACKET_V2 RX: one slot per frame, handed over one by one.
pub(super) struct FrameRx {
    pub(super) s: Slots,
    /// Frames are preceded by a virtio-net header.
    pub(super) vnet: bool,
}

impl FrameRx {
    /// Hand up to `max` frames to `f`; see [`Nic::rx_burst`](crate::nic::Nic::rx_burst).
    pub(super) fn burst(
        &mut self,
        max: usize,
        want: RxWant,
        c: &mut RxCounters,
        f: &mut dyn FnMut(&[u8], RxMeta),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let slot = self.s.slot(self.s.head);
            if self.s.status(slot).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break; // the kernel still owns it: nothing more to read
            }
            {
                // SAFETY: the slot is inside the mapping and, its status being
                // TP_STATUS_USER (Acquire above), ours until we store TP_STATUS_KERNEL
                // below, after this slice is gone. No other reference exists (`&mut self`).
                let area = unsafe { std::slice::from_raw_parts_mut(slot, self.s.frame_size) };
                match parse_frame(area, 0, &self.s.l, self.vnet) {
                    Some(fr) => {
                        if deliver(area, &fr, want, c, f) {
                            n += 1;
                        }
                    }
                    None => c.bad_blocks += 1,
                }
            }
            self.s
                .status(slot)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.s.advance();
            if self.s.head.is_multiple_of(self.s.frames_per_block) {
                c.blocks += 1;
            }
        }
        n
    }
}

/// Where the TX ring stands.
pub(super) struct TxRing {
    pub(super) s: Slots,
    /// Frames marked since the last kick (or a kick that failed and must be retried).
    pub(super) pending: usize,
    /// Frames are preceded by a virtio-net header (built from the `TxMeta`).
    pub(super) vnet: bool,
}

impl TxRing {
    /// Largest frame a slot holds.
    pub(super) fn capacity(&self) -> usize {
        self.s.frame_size - self.s.l.hdr - if self.vnet { VNET_HDR_LEN } else { 0 }
    }

    /// Queue one frame; see [`Nic::tx_meta`](crate::nic::Nic::tx_meta). The caller checked
    /// `len` against max_frame (or gso_max_frame) and `meta` against what the ring does
    /// (none without `vnet`).
    pub(super) fn push(
        &mut self,
        len: usize,
        meta: &TxMeta,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        let l = self.s.l;
        if len > self.capacity() {
            return false;
        }
        let vlen = if self.vnet { VNET_HDR_LEN } else { 0 };
        let slot = self.s.slot(self.s.head);
        let status = self.s.status(slot).load(Ordering::Acquire);
        // TP_STATUS_WRONG_FORMAT: the kernel refused the frame (cannot happen with
        // PACKET_LOSS set, which skips such frames); the slot is free again either way.
        if status != libc::TP_STATUS_AVAILABLE && status & libc::TP_STATUS_WRONG_FORMAT == 0 {
            return false;
        }
        // SAFETY: the slot's status is AVAILABLE (Acquire), so the kernel is done with it
        // and will not touch it before we store SEND_REQUEST; the header and `len` data
        // bytes lie inside the slot (checked above). No other reference exists (`&mut self`).
        let s = unsafe { std::slice::from_raw_parts_mut(slot, l.hdr + vlen + len) };
        // tp_len counts the virtio-net header (tpacket_snd takes it off the front).
        let len32 = ((vlen + len) as u32).to_ne_bytes();
        if let Some(next) = l.next {
            // V3 TX slots are fixed-size: the kernel requires tp_next_offset == 0.
            s[next..next + 4].copy_from_slice(&0u32.to_ne_bytes());
        }
        s[l.len..l.len + 4].copy_from_slice(&len32);
        s[l.snaplen..l.snaplen + 4].copy_from_slice(&len32);
        fill(&mut s[l.hdr + vlen..]);
        if self.vnet {
            let (h, frame) = s[l.hdr..].split_at_mut(VNET_HDR_LEN);
            h.copy_from_slice(&VnetHdr::for_tx(meta, frame).encode());
        }
        self.s
            .status(slot)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.s.advance();
        self.pending += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{rd_u32, V2, V3};
    use super::super::vnet::{VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4};
    use super::*;
    use crate::nic::CsumState;

    fn slots(mem: &mut [u64], l: Layout) -> Slots {
        Slots {
            base: mem.as_mut_ptr().cast(),
            block_size: 4096,
            frame_size: 2048,
            frames_per_block: 2,
            frame_nr: 4,
            l,
            head: 0,
        }
    }

    impl TxRing {
        fn push_plain(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
            self.push(len, &TxMeta::default(), fill)
        }
    }

    #[test]
    fn tx_ring_fills_slots_and_stops_when_full() {
        for l in [V2, V3] {
            let frame_size = 2048;
            let mut mem = vec![0u64; 2 * 4096 / 8];
            let mut tx = TxRing {
                s: slots(&mut mem, l),
                pending: 0,
                vnet: false,
            };
            for i in 0..4u8 {
                assert!(tx.push_plain(100, &mut |b: &mut [u8]| b.fill(i)));
            }
            assert!(!tx.push_plain(100, &mut |_: &mut [u8]| panic!("no room")));
            assert!(!tx.push_plain(frame_size, &mut |_: &mut [u8]| panic!("too big")));
            assert_eq!(tx.pending, 4);
            // SAFETY: viewing a Vec<u64> as bytes.
            let bytes: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 2 * 4096) };
            for i in 0..4usize {
                let s = i * frame_size;
                assert_eq!(
                    rd_u32(bytes, s + l.status),
                    Some(libc::TP_STATUS_SEND_REQUEST)
                );
                assert_eq!(rd_u32(bytes, s + l.len), Some(100));
                assert!(bytes[s + l.hdr..s + l.hdr + 100]
                    .iter()
                    .all(|&b| b == i as u8));
            }
            // The kernel sent slot 0: it is usable again.
            bytes[l.status..l.status + 4].copy_from_slice(&libc::TP_STATUS_AVAILABLE.to_ne_bytes());
            assert!(tx.push_plain(60, &mut |b: &mut [u8]| b.fill(9)));
        }
    }

    #[test]
    fn v2_frame_ring_reads_validates_and_gives_back() {
        let mut mem = vec![0u64; 2 * 4096 / 8];
        let mut rx = FrameRx {
            s: slots(&mut mem, V2),
            vnet: false,
        };
        let l = V2;
        let put = |mem: &mut [u64], slot: usize, data: &[u8], snap: u32, mac: u16, pkttype: u8| {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 2 * 4096) };
            let h = slot * 2048;
            b[h + l.len..h + l.len + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[h + l.snaplen..h + l.snaplen + 4].copy_from_slice(&snap.to_ne_bytes());
            b[h + l.mac..h + l.mac + 2].copy_from_slice(&mac.to_ne_bytes());
            b[h + l.pkttype()] = pkttype;
            let m = h + mac as usize;
            if m + data.len() <= b.len() {
                b[m..m + data.len()].copy_from_slice(data);
            }
            b[h + l.status..h + l.status + 4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        };
        let a = vec![0xabu8; 100];
        put(&mut mem, 0, &a, 100, 66, 0);
        put(&mut mem, 1, &a, 100, 66, libc::PACKET_OUTGOING);
        put(&mut mem, 2, &a, 2000, 66, 0); // runs past the slot
        put(&mut mem, 3, &a, 100, 66, 0);
        let mut got = Vec::new();
        let mut c = RxCounters::default();
        let n = rx.burst(10, RxWant::plain(1514), &mut c, &mut |f: &[u8], _| {
            got.push(f.to_vec())
        });
        assert_eq!(n, 2);
        assert_eq!(got, vec![a.clone(), a.clone()]);
        assert_eq!(c.bad_blocks, 1);
        assert_eq!(rx.s.head, 0, "wrapped around");
        // SAFETY: viewing a Vec<u64> as bytes.
        let b: &[u8] = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast(), 2 * 4096) };
        for slot in 0..4 {
            assert_eq!(
                rd_u32(b, slot * 2048 + l.status),
                Some(libc::TP_STATUS_KERNEL)
            );
        }
    }

    #[test]
    fn tx_ring_writes_the_vnet_header_before_the_frame() {
        let mut mem = vec![0u64; 2 * 4096 / 8];
        let mut tx = TxRing {
            s: slots(&mut mem, V2),
            pending: 0,
            vnet: true,
        };
        assert_eq!(tx.capacity(), 2048 - V2.hdr - VNET_HDR_LEN);
        let meta = TxMeta {
            gso_size: Some(1000),
            csum_partial: Some((34, 16)),
        };
        let mut f = vec![7u8; 200];
        f[14 + 20 + 12] = 5 << 4;
        assert!(tx.push(200, &meta, &mut |b: &mut [u8]| b.copy_from_slice(&f)));
        assert!(
            !tx.push(tx.capacity() + 1, &meta, &mut |_: &mut [u8]| panic!(
                "too big"
            ))
        );
        // SAFETY: viewing a Vec<u64> as bytes.
        let b: &[u8] = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast(), 2 * 4096) };
        assert_eq!(rd_u32(b, V2.len), Some(200 + VNET_HDR_LEN as u32));
        let h = VnetHdr::decode(&b[V2.hdr..]).unwrap();
        assert_eq!(h, VnetHdr::for_tx(&meta, &f));
        assert_eq!(h.hdr_len, 54);
        assert_eq!(
            &b[V2.hdr + VNET_HDR_LEN..V2.hdr + VNET_HDR_LEN + 200],
            &f[..]
        );
    }

    /// A V2 slot as the kernel fills it with PACKET_VNET_HDR: frame at `mac`, the
    /// virtio-net header just before it.
    fn put_vnet_slot(b: &mut [u8], slot: usize, data: &[u8], status: u32, v: &VnetHdr) {
        let l = V2;
        let h = slot * 8192;
        let mac = 76usize;
        b[h + l.len..h + l.len + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        b[h + l.snaplen..h + l.snaplen + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        b[h + l.mac..h + l.mac + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
        b[h + l.pkttype()] = 0;
        b[h + mac - VNET_HDR_LEN..h + mac].copy_from_slice(&v.encode());
        b[h + mac..h + mac + data.len()].copy_from_slice(data);
        b[h + l.status..h + l.status + 4]
            .copy_from_slice(&(libc::TP_STATUS_USER | status).to_ne_bytes());
    }

    #[test]
    fn vnet_rx_hands_up_gso_frames_and_checksum_state() {
        let mut mem = vec![0u64; 4 * 8192 / 8];
        let mut rx = FrameRx {
            s: Slots {
                base: mem.as_mut_ptr().cast(),
                block_size: 16384,
                frame_size: 8192,
                frames_per_block: 2,
                frame_nr: 4,
                l: V2,
                head: 0,
            },
            vnet: true,
        };
        let gso = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
        };
        let udp_gso = VnetHdr {
            gso_type: 5, // VIRTIO_NET_HDR_GSO_UDP_L4
            ..gso
        };
        let valid = VnetHdr {
            flags: VNET_F_DATA_VALID,
            ..VnetHdr::default()
        };
        let big = vec![0x11u8; 5000];
        let small = vec![0x22u8; 100];
        {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 4 * 8192) };
            put_vnet_slot(b, 0, &big, libc::TP_STATUS_CSUMNOTREADY, &gso);
            put_vnet_slot(b, 1, &big, libc::TP_STATUS_CSUMNOTREADY, &udp_gso);
            put_vnet_slot(b, 2, &small, 0, &valid);
            put_vnet_slot(b, 3, &small, 0, &VnetHdr::default());
        }
        let want = RxWant {
            max_frame: 1514,
            gso_max_frame: 8000,
            meta: true,
        };
        let mut got = Vec::new();
        let mut c = RxCounters::default();
        let n = rx.burst(10, want, &mut c, &mut |f: &[u8], m| {
            got.push((f.to_vec(), m))
        });
        assert_eq!(n, 3);
        assert_eq!(c.dropped, 1, "UDP GSO is not taken");
        let m = |csum, gso_size| RxMeta { csum, gso_size };
        assert_eq!(
            got,
            vec![
                (big.clone(), m(CsumState::Partial, 1460)),
                (small.clone(), m(CsumState::Valid, 0)),
                (small.clone(), m(CsumState::Unknown, 0)),
            ]
        );
        // A caller without metadata gets no GSO frame.
        {
            // SAFETY: viewing a Vec<u64> as bytes.
            let b: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast(), 4 * 8192) };
            put_vnet_slot(b, 0, &big, libc::TP_STATUS_CSUMNOTREADY, &gso);
        }
        let mut c = RxCounters::default();
        let n = rx.burst(10, RxWant::plain(1514), &mut c, &mut |_: &[u8], _| {
            panic!("oversize frame handed up")
        });
        assert_eq!((n, c.dropped, c.oversize), (0, 1, 5000));
    }
}
