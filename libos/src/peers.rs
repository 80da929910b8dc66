//! Teach smoltcp the MAC address of every same-subnet peer that sends us a frame.
//!
//! smoltcp fills its neighbour cache only from ARP packets addressed to it, and sends at
//! most one ARP request per second (`NeighborCache::SILENT_TIME`). On a DockPipe nobody
//! ARPs a service (the master answers every ARP request by proxy), so a server had to ARP
//! for each new client itself: of N clients connecting at once, the last got its SYN-ACK
//! after N−1 seconds. [`PeerLearner`] produces the request a peer on a real L2 segment
//! would have broadcast — "who has <us>? tell <peer IP> at <peer MAC>" — which the device
//! hands to smoltcp just before the peer's frame, and again before smoltcp's 60 s entry
//! lifetime runs out. smoltcp's reply to it is dropped by the device (nobody needs it).
//!
//! A fixed table, no allocation: one hash and compare per received frame.

/// Length of an Ethernet ARP frame for IPv4.
pub const ARP_FRAME_LEN: usize = 42;
/// Table slots (a power of two), in two-way sets. A peer pushed out only costs one more
/// synthetic request.
const SLOTS: usize = 256;
/// Re-teach a peer this long after the last time (smoltcp forgets after 60 s).
const REFRESH_MS: i64 = 20_000;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// 0 = empty (0.0.0.0 is never a peer).
    ip: u32,
    mac: [u8; 6],
    taught_ms: i64,
}

/// Which peers smoltcp has been taught, and when.
pub struct PeerLearner {
    my_ip: u32,
    my_mac: [u8; 6],
    netmask: u32,
    table: [Entry; SLOTS],
    /// Synthetic ARP requests produced so far.
    pub taught: u64,
}

impl PeerLearner {
    /// For a service at `my_ip`/`prefix_len` with MAC `my_mac`.
    pub fn new(my_ip: [u8; 4], prefix_len: u8, my_mac: [u8; 6]) -> PeerLearner {
        let netmask = match prefix_len {
            0 => 0,
            p if p >= 32 => u32::MAX,
            p => u32::MAX << (32 - p),
        };
        PeerLearner {
            my_ip: u32::from_be_bytes(my_ip),
            my_mac,
            netmask,
            table: [Entry::default(); SLOTS],
            taught: 0,
        }
    }

    /// Look at the first bytes of a received Ethernet frame (at least 34 for IPv4; fewer
    /// is fine, nothing is learned). If it is IPv4 from a same-subnet peer smoltcp has not
    /// been taught recently, the ARP request to hand smoltcp before the frame.
    pub fn check(&mut self, frame: &[u8], now_ms: i64) -> Option<[u8; ARP_FRAME_LEN]> {
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            return None;
        }
        let ip = u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&frame[6..12]);
        if ip == 0 || ip == self.my_ip || (ip ^ self.my_ip) & self.netmask != 0 {
            return None;
        }
        // Broadcast/multicast or all-zero source MACs are not neighbours.
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return None;
        }
        // Two-way set: the peer may sit in `slot` or its neighbour `slot ^ 1`.
        let slot = (ip.wrapping_mul(0x9E37_79B1) >> 24) as usize & (SLOTS - 1);
        let (a, b) = (slot, slot ^ 1);
        let way = if self.table[a].ip == ip {
            a
        } else if self.table[b].ip == ip {
            b
        } else if self.table[a].taught_ms <= self.table[b].taught_ms {
            a
        } else {
            b
        };
        let e = &mut self.table[way];
        if e.ip == ip && e.mac == mac && now_ms.saturating_sub(e.taught_ms) < REFRESH_MS {
            return None;
        }
        *e = Entry {
            ip,
            mac,
            taught_ms: now_ms,
        };
        self.taught += 1;
        Some(self.request_from(mac, ip))
    }

    /// "Who has my_ip? Tell `ip` at `mac`", as `mac` would broadcast it.
    fn request_from(&self, mac: [u8; 6], ip: u32) -> [u8; ARP_FRAME_LEN] {
        let mut f = [0u8; ARP_FRAME_LEN];
        f[0..6].copy_from_slice(&self.my_mac);
        f[6..12].copy_from_slice(&mac);
        // EtherType ARP; htype Ethernet, ptype IPv4, hlen 6, plen 4, op 1 (request).
        f[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&mac);
        f[28..32].copy_from_slice(&ip.to_be_bytes());
        // Target MAC unknown (zero), target IP = us.
        f[38..42].copy_from_slice(&self.my_ip.to_be_bytes());
        f
    }
}

/// True if `frame` is an Ethernet ARP reply for IPv4.
pub fn is_arp_reply(frame: &[u8]) -> bool {
    frame.len() >= ARP_FRAME_LEN && frame[12..22] == [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 4] = [10, 88, 0, 2];
    const MY_MAC: [u8; 6] = [2, 0, 10, 88, 0, 2];

    fn ipv4_from(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[0..6].copy_from_slice(&MY_MAC);
        f[6..12].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[26..30].copy_from_slice(&ip);
        f[30..34].copy_from_slice(&ME);
        f
    }

    #[test]
    fn teaches_each_same_subnet_peer_once_then_refreshes() {
        let mut l = PeerLearner::new(ME, 16, MY_MAC);
        let peer_mac = [2, 0, 10, 88, 0, 3];
        let f = ipv4_from(peer_mac, [10, 88, 0, 3]);
        let req = l.check(&f, 0).expect("first frame teaches");
        // A well-formed request from the peer for our address.
        assert_eq!(&req[0..6], &MY_MAC);
        assert_eq!(&req[6..12], &peer_mac);
        assert_eq!(&req[12..22], &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        assert_eq!(&req[22..28], &peer_mac);
        assert_eq!(&req[28..32], &[10, 88, 0, 3]);
        assert_eq!(&req[32..38], &[0; 6]);
        assert_eq!(&req[38..42], &ME);
        assert!(!is_arp_reply(&req));
        assert!(l.check(&f, 1_000).is_none());
        assert!(l.check(&f, REFRESH_MS - 1).is_none());
        assert!(
            l.check(&f, REFRESH_MS).is_some(),
            "refreshed before smoltcp forgets"
        );
        // A new MAC for the same address is taught at once.
        let moved = ipv4_from([2, 0, 0, 0, 0, 9], [10, 88, 0, 3]);
        assert!(l.check(&moved, REFRESH_MS + 1).is_some());
        assert_eq!(l.taught, 3);
    }

    #[test]
    fn ignores_what_is_no_neighbour() {
        let mut l = PeerLearner::new(ME, 16, MY_MAC);
        let mac = [2, 0, 0, 0, 0, 7];
        // Another subnet (reached through the gateway), ourselves, 0.0.0.0.
        assert!(l.check(&ipv4_from(mac, [10, 89, 0, 3]), 0).is_none());
        assert!(l.check(&ipv4_from(mac, ME), 0).is_none());
        assert!(l.check(&ipv4_from(mac, [0, 0, 0, 0]), 0).is_none());
        // Multicast or zero source MAC.
        assert!(l
            .check(&ipv4_from([1, 0, 0x5e, 0, 0, 1], [10, 88, 0, 3]), 0)
            .is_none());
        assert!(l.check(&ipv4_from([0; 6], [10, 88, 0, 3]), 0).is_none());
        // Not IPv4, or too short to say.
        let mut arp = ipv4_from(mac, [10, 88, 0, 3]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(l.check(&arp, 0).is_none());
        assert!(l.check(&ipv4_from(mac, [10, 88, 0, 3])[..33], 0).is_none());
        assert!(l.check(&[], 0).is_none());
        assert_eq!(l.taught, 0);
    }

    #[test]
    fn many_peers_fit_and_collisions_only_reteach() {
        let mut l = PeerLearner::new(ME, 16, MY_MAC);
        let peers: Vec<[u8; 4]> = (3..200u8).map(|i| [10, 88, 1, i]).collect();
        for p in &peers {
            let mac = [2, 0, p[0], p[1], p[2], p[3]];
            assert!(l.check(&ipv4_from(mac, *p), 0).is_some());
        }
        // Second pass: most are remembered; a few share a slot and are taught again.
        let again = peers
            .iter()
            .filter(|p| {
                let mac = [2, 0, p[0], p[1], p[2], p[3]];
                l.check(&ipv4_from(mac, **p), 1).is_some()
            })
            .count();
        assert!(
            again < peers.len() / 4,
            "{again} of {} re-taught",
            peers.len()
        );
    }

    #[test]
    fn recognises_arp_replies() {
        let mut r = [0u8; ARP_FRAME_LEN];
        r[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        assert!(is_arp_reply(&r));
        r[21] = 1;
        assert!(!is_arp_reply(&r));
        assert!(!is_arp_reply(&r[..41]));
    }
}
