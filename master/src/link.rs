//! The NIC side of the switch: its counters, and the master's ARP neighbour table.
//!
//! Egress frames for an address not yet resolved wait in a small fixed pool while the
//! master asks for it (no allocation per frame: the pool's buffers are made once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::net::{ARP_FRAME_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4};

macro_rules! link_counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// The data path's private totals for the NIC.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct LinkCounters { $($(#[$m])* pub $name: u64,)* }

        /// The shared copy the control plane reads.
        #[derive(Debug, Default)]
        pub struct LinkStats { $($(#[$m])* pub $name: AtomicU64,)* }

        /// The NIC's counters as `docknetctl stats` reports them.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub struct LinkSnapshot { $($(#[$m])* pub $name: u64,)* }

        impl LinkStats {
            /// Publish (single writer: plain stores).
            pub fn publish(&self, c: &LinkCounters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }
            /// Read.
            pub fn snapshot(&self) -> LinkSnapshot {
                LinkSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        /// Column names, in table order.
        pub const LINK_COLUMNS: &[&str] = &[$(stringify!($name),)*];

        impl LinkSnapshot {
            /// Values in [`LINK_COLUMNS`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name,)*]
            }
        }
    };
}

link_counters! {
    /// Frames received from the link.
    rx_frames,
    /// Bytes received from the link.
    rx_bytes,
    /// Frames sent on the link.
    tx_frames,
    /// Bytes sent on the link.
    tx_bytes,
    /// Received frames delivered to a pipe.
    delivered,
    /// Dropped on receive: truncated or malformed Ethernet/ARP/IPv4.
    bad_frame,
    /// Dropped on receive: wrong IPv4 header, TCP, UDP or ICMP checksum.
    bad_csum,
    /// Dropped on receive: IPv4 destination is no pipe of this host.
    unknown_dst,
    /// Dropped on receive: unicast to another MAC (seen in promiscuous mode).
    not_for_us,
    /// Dropped on receive: EtherType or IP fragment we do not handle.
    unsupported,
    /// Dropped on receive: the destination pipe had no free buffer or is not attached.
    pipe_full,
    /// ARP requests for pipe addresses the master answered on the link.
    arp_answered,
    /// ARP requests the master sent to resolve egress destinations.
    arp_requests,
    /// Egress frames dropped because the destination never answered ARP (or the wait
    /// pool was full).
    no_neighbor,
    /// Egress frames the backend could not send (ring full, oversize).
    tx_dropped,
    /// Frames the link lost before the master saw them (backend ring overruns).
    rx_dropped,
}

/// Most neighbours remembered (and most addresses being asked for): the table is bounded
/// so that ARP floods from the link cannot grow it without end.
const MAX_NEIGHBORS: usize = 4096;
/// How long a learnt MAC is used before it is asked for again.
const NEIGHBOR_TTL: Duration = Duration::from_secs(60);

/// Frames waiting for ARP resolution.
const PENDING_SLOTS: usize = 64;
/// How long a frame may wait for its destination's ARP reply.
const PENDING_MAX_AGE: Duration = Duration::from_secs(1);
/// Least time between two ARP requests for the same address.
const ARP_RETRY: Duration = Duration::from_millis(200);

struct Pending {
    ip: u32,
    len: usize,
    since: Instant,
    buf: Box<[u8]>,
}

/// IPv4 → MAC on the link, plus frames waiting for an answer.
pub struct Neighbors {
    /// MAC and when it was last confirmed; entries older than [`NEIGHBOR_TTL`] are asked
    /// for again (a host that changed its MAC is found again).
    table: HashMap<u32, ([u8; 6], Instant)>,
    asked: HashMap<u32, Instant>,
    pending: Vec<Pending>,
    /// Indices of free `pending` slots.
    free: Vec<usize>,
}

impl Neighbors {
    /// A table whose waiting pool holds frames up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        let pending = (0..PENDING_SLOTS)
            .map(|_| Pending {
                ip: 0,
                len: 0,
                since: Instant::now(),
                buf: vec![0; max_frame].into_boxed_slice(),
            })
            .collect();
        Neighbors {
            table: HashMap::new(),
            asked: HashMap::new(),
            pending,
            free: (0..PENDING_SLOTS).rev().collect(),
        }
    }

    /// The MAC of `ip`, if known.
    pub fn lookup(&self, ip: u32) -> Option<[u8; 6]> {
        self.lookup_at(ip, Instant::now())
    }

    /// The MAC of `ip` if known and not older than the TTL at `now`.
    pub fn lookup_at(&self, ip: u32, now: Instant) -> Option<[u8; 6]> {
        match self.table.get(&ip) {
            Some((mac, at)) if now.duration_since(*at) < NEIGHBOR_TTL => Some(*mac),
            _ => None,
        }
    }

    /// Record `ip` at `mac` from an ARP packet seen on the link. Like Linux, a new entry is
    /// made only when the packet was meant for us (`for_us`: its target is one of our
    /// addresses, or it answers our request); known entries are refreshed by any packet.
    pub fn learn(&mut self, ip: u32, mac: [u8; 6], for_us: bool) {
        if ip == 0 || mac[0] & 1 != 0 {
            return;
        }
        let known = self.table.contains_key(&ip) || self.asked.contains_key(&ip);
        if !(for_us || known) {
            return;
        }
        if !self.table.contains_key(&ip) && self.table.len() >= MAX_NEIGHBORS {
            let now = Instant::now();
            self.table
                .retain(|_, (_, at)| now.duration_since(*at) < NEIGHBOR_TTL);
            if self.table.len() >= MAX_NEIGHBORS {
                return;
            }
        }
        self.table.insert(ip, (mac, Instant::now()));
        self.asked.remove(&ip);
    }

    /// True if an ARP request for `ip` should go out now (rate-limited per address).
    pub fn should_ask(&mut self, ip: u32, now: Instant) -> bool {
        match self.asked.get(&ip) {
            Some(t) if now.duration_since(*t) < ARP_RETRY => false,
            _ => {
                if self.asked.len() >= MAX_NEIGHBORS {
                    self.asked
                        .retain(|_, t| now.duration_since(*t) < PENDING_MAX_AGE);
                }
                self.asked.insert(ip, now);
                true
            }
        }
    }

    /// Park a frame for `ip` (written by `fill` into a pool buffer of `len` bytes). False
    /// if the pool is full or the frame too long: the frame is dropped.
    pub fn park(
        &mut self,
        ip: u32,
        len: usize,
        now: Instant,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        let p = &mut self.pending[i];
        if len > p.buf.len() {
            self.free.push(i);
            return false;
        }
        fill(&mut p.buf[..len]);
        p.ip = ip;
        p.len = len;
        p.since = now;
        true
    }

    /// Take the parked frames that can go now (their address resolved), passing each with
    /// its destination MAC to `send`, and drop those that waited too long. Returns the
    /// number dropped.
    pub fn release(&mut self, now: Instant, mut send: impl FnMut(&[u8], [u8; 6])) -> u64 {
        let mut dropped = 0;
        for i in 0..self.pending.len() {
            if self.free.contains(&i) {
                continue;
            }
            let p = &self.pending[i];
            if let Some(mac) = self.lookup_at(p.ip, now) {
                send(&p.buf[..p.len], mac);
                self.free.push(i);
            } else if now.duration_since(p.since) > PENDING_MAX_AGE {
                dropped += 1;
                self.asked.remove(&p.ip);
                self.free.push(i);
            }
        }
        dropped
    }

    /// Call `ask` for each address that parked frames wait for and that is due another ARP
    /// request (rate-limited per address).
    pub fn ask_due(&mut self, now: Instant, mut ask: impl FnMut(u32)) {
        for i in 0..self.pending.len() {
            if self.free.contains(&i) {
                continue;
            }
            let ip = self.pending[i].ip;
            if self.lookup_at(ip, now).is_none() && self.should_ask(ip, now) {
                ask(ip);
            }
        }
    }

    /// True if frames are waiting.
    pub fn has_pending(&self) -> bool {
        self.free.len() < self.pending.len()
    }
}

/// Build an ARP request from `mac`/`ip` asking for `target`.
pub fn arp_request(mac: [u8; 6], ip: u32, target: u32) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.to_be_bytes());
    f[38..42].copy_from_slice(&target.to_be_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_request_parses_back() {
        let f = arp_request([2, 0, 0, 0, 0, 9], 0x0a580001, 0x0a580002);
        let a = parse_arp(&f).unwrap();
        assert_eq!(
            a,
            ArpSeen {
                op: 1,
                sender_mac: [2, 0, 0, 0, 0, 9],
                sender_ip: 0x0a580001,
                target_ip: 0x0a580002
            }
        );
        assert!(parse_arp(&f[..41]).is_none());
    }

    #[test]
    fn only_arp_meant_for_us_makes_new_entries() {
        let mut n = Neighbors::new(100);
        n.learn(9, [2, 9, 9, 9, 9, 9], false);
        assert_eq!(n.lookup(9), None, "a stranger's broadcast is not learnt");
        n.learn(9, [2, 9, 9, 9, 9, 9], true);
        assert_eq!(n.lookup(9), Some([2, 9, 9, 9, 9, 9]));
        n.learn(9, [2, 8, 8, 8, 8, 8], false);
        assert_eq!(
            n.lookup(9),
            Some([2, 8, 8, 8, 8, 8]),
            "known entries are refreshed"
        );
        assert!(n.should_ask(10, Instant::now()));
        n.learn(10, [2, 1, 0, 0, 0, 1], false);
        assert_eq!(
            n.lookup(10),
            Some([2, 1, 0, 0, 0, 1]),
            "an answer to our question is learnt"
        );
        n.learn(11, [3, 0, 0, 0, 0, 1], true);
        assert_eq!(n.lookup(11), None, "multicast MACs are refused");
    }

    #[test]
    fn parked_frames_leave_when_resolved_or_expire() {
        let mut n = Neighbors::new(100);
        let t0 = Instant::now();
        assert!(n.should_ask(7, t0));
        assert!(!n.should_ask(7, t0));
        assert!(n.park(7, 10, t0, |b| b.fill(1)));
        assert!(n.park(8, 10, t0, |b| b.fill(2)));
        assert!(!n.park(9, 101, t0, |_| {}));
        n.learn(7, [2, 1, 1, 1, 1, 1], true);
        let mut sent = Vec::new();
        assert_eq!(n.release(t0, |f, mac| sent.push((f.to_vec(), mac))), 0);
        assert_eq!(sent, vec![(vec![1; 10], [2, 1, 1, 1, 1, 1])]);
        assert!(n.has_pending());
        assert_eq!(
            n.release(t0 + Duration::from_secs(2), |_, _| panic!("unresolved")),
            1
        );
        assert!(!n.has_pending());
        for i in 0..PENDING_SLOTS as u32 {
            assert!(n.park(i + 100, 1, t0, |_| {}));
        }
        assert!(!n.park(1, 1, t0, |_| {}), "pool full");
    }
}
