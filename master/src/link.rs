//! The NIC side of the switch: its counters, and the master's ARP neighbour table.
//!
//! Egress frames for an address not yet resolved wait in a small fixed pool while the
//! master asks for it (no allocation per frame: the pool's buffers are made once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

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
    /// Dropped on receive: IPv4 source is one of this host's pipes (spoofed).
    spoofed,
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
    /// Frames from pipes sent (or parked for ARP) toward a route's next hop
    /// (`docknetctl route`; per route in `route ls`).
    routed,
    /// Frames from pipes dropped: their destination is outside every local pipe subnet,
    /// the link's subnet (`--link-ip`) and every route. Only with `--link-ip`: without it
    /// every such destination is taken to be on the link.
    no_route,
}

/// Most neighbours remembered (and most addresses being asked for): the table is bounded
/// so that ARP floods from the link cannot grow it without end.
const MAX_NEIGHBORS: usize = 4096;

/// Frames waiting for ARP resolution.
const PENDING_SLOTS: usize = 64;
/// How long a frame may wait for its destination's ARP reply.
const PENDING_MAX_AGE: Duration = Duration::from_secs(1);
/// Least time between two broadcast ARP requests for an unresolved address.
const ARP_RETRY: Duration = Duration::from_millis(200);
/// Most re-validation probes queued at once (more wait for the next frame that needs them).
const MAX_DUE_PROBES: usize = 64;

/// How the master ages what it learnt on the link, after Linux's neighbour states
/// (`net.ipv4.neigh.*`, RFC 4861 §7.3): an entry confirmed less than `reachable` ago is used
/// as it is; an older one is still used (*stale*) while it is re-validated by up to `probes`
/// ARP requests `retrans` apart (the first `unicast_probes` to the known MAC, then
/// broadcast, so a neighbour whose MAC changed is found again); only when none is answered
/// is the entry dropped and its frames wait for a fresh answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborTimers {
    /// How long an answer is trusted without asking again (Linux: 15–45 s).
    pub reachable: Duration,
    /// Time between two probes of a stale entry (Linux: 1 s).
    pub retrans: Duration,
    /// Probes of a stale entry before it is dropped.
    pub probes: u8,
    /// How many of those go to the known MAC rather than to broadcast.
    pub unicast_probes: u8,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers {
            reachable: Duration::from_secs(30),
            retrans: Duration::from_secs(1),
            probes: 3,
            unicast_probes: 2,
        }
    }
}

impl NeighborTimers {
    /// Timers with `reachable` as the trust period; the probe spacing shrinks with it (to a
    /// fifth, at most 1 s, at least 50 ms), so short periods used by tests still re-validate
    /// well inside each period.
    pub fn with_reachable(reachable: Duration) -> Self {
        NeighborTimers {
            reachable,
            retrans: (reachable / 5).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            ..Self::default()
        }
    }
}

/// What the master knows of one address on the link.
struct Neighbor {
    /// `None` while it is being asked for and no answer came yet (*incomplete*).
    mac: Option<[u8; 6]>,
    /// When the neighbour last answered a question of ours. `None`: its MAC is known only
    /// from what it sent unasked (its own request, a gratuitous ARP), which, as in Linux and
    /// RFC 4861 §7.3.3, does not prove it hears us: the entry is used but probed (*stale*).
    confirmed: Option<Instant>,
    /// Last change of any kind (for eviction when the table is full).
    updated: Instant,
    /// Requests sent since the last answer; the last one went out at `asked`.
    probes: u8,
    asked: Option<Instant>,
    /// A frame from the link came from this address with another MAC: the MAC may have
    /// changed, so frames for it wait for a fresh (broadcast) answer instead of going to a
    /// MAC that may be gone. An ARP packet from the address clears it.
    suspect: bool,
    /// Our address to ask from: the source of the last frame that needed this neighbour
    /// (a pipe's address, as a proxy-ARP router asks; never the target itself, which a
    /// host would take for someone claiming its address and not answer).
    ask_as: u32,
    /// A probe for it waits in `Neighbors::due`.
    queued: bool,
}

impl Neighbor {
    /// An entry being asked for, on behalf of `ask_as`.
    fn incomplete(ask_as: u32, now: Instant) -> Self {
        Neighbor {
            mac: None,
            confirmed: None,
            updated: now,
            probes: 0,
            asked: None,
            suspect: false,
            ask_as,
            queued: false,
        }
    }
}

/// One ARP request the data path should send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpAsk {
    /// The address asked for.
    pub target: u32,
    /// Our address named as sender.
    pub sender: u32,
    /// Unicast to this MAC (a re-validation probe), or broadcast if `None`.
    pub to: Option<[u8; 6]>,
}

struct Pending {
    ip: u32,
    /// Source address of the parked frame (the address to ask from).
    src: u32,
    len: usize,
    since: Instant,
    buf: Box<[u8]>,
}

/// IPv4 → MAC on the link, with Linux-like aging, plus frames waiting for an answer.
pub struct Neighbors {
    table: HashMap<u32, Neighbor>,
    timers: NeighborTimers,
    /// Stale entries a frame used whose probe is due (sent by [`Neighbors::ask_due`]).
    due: Vec<u32>,
    /// The (address, MAC) pair [`Neighbors::saw_frame`] last found in agreement with the
    /// table: frames from one host in a row cost one comparison, not a lookup. Cleared on
    /// every change to an entry's MAC.
    agreed: Option<(u32, [u8; 6])>,
    pending: Vec<Pending>,
    /// Indices of free `pending` slots.
    free: Vec<usize>,
}

impl Neighbors {
    /// A table whose waiting pool holds frames up to `max_frame` bytes.
    pub fn new(max_frame: usize, timers: NeighborTimers) -> Self {
        let pending = (0..PENDING_SLOTS)
            .map(|_| Pending {
                ip: 0,
                src: 0,
                len: 0,
                since: Instant::now(),
                buf: vec![0; max_frame].into_boxed_slice(),
            })
            .collect();
        Neighbors {
            table: HashMap::new(),
            timers,
            due: Vec::with_capacity(MAX_DUE_PROBES),
            agreed: None,
            pending,
            free: (0..PENDING_SLOTS).rev().collect(),
        }
    }

    /// The MAC to send a frame from `src` to `ip` to at `now`, if there is one to use. A
    /// stale entry is still used and gets a re-validation probe queued (sent by
    /// [`Neighbors::ask_due`]); an entry whose probes all went unanswered is dropped to
    /// *incomplete*. `None`: park the frame and ask.
    pub fn resolve(&mut self, ip: u32, src: u32, now: Instant) -> Option<[u8; 6]> {
        let t = self.timers;
        let n = self.table.get_mut(&ip)?;
        let mac = n.mac?;
        if n.suspect {
            n.ask_as = src;
            return None;
        }
        if n.confirmed
            .is_some_and(|c| now.saturating_duration_since(c) < t.reachable)
        {
            return Some(mac);
        }
        let probe_due = match n.asked {
            None => true,
            Some(at) => n.probes == 0 || now.saturating_duration_since(at) >= t.retrans,
        };
        if !probe_due || n.queued {
            return Some(mac);
        }
        if n.probes >= t.probes {
            // Every probe went unanswered: the neighbour is gone (or moved). Frames wait
            // for a fresh answer from now on.
            self.agreed = None;
            n.mac = None;
            n.probes = 0;
            n.asked = None;
            n.ask_as = src;
            n.updated = now;
            return None;
        }
        if self.due.len() < MAX_DUE_PROBES {
            n.queued = true;
            n.ask_as = src;
            self.due.push(ip);
        }
        Some(mac)
    }

    /// The MAC frames for `ip` may go to (known, fresh or stale, and not suspect), without
    /// side effects.
    pub fn usable(&self, ip: u32) -> Option<[u8; 6]> {
        let n = self.table.get(&ip)?;
        n.mac.filter(|_| !n.suspect)
    }

    /// True if `ip` answered a question of ours less than the trust period before `now`.
    pub fn is_fresh(&self, ip: u32, now: Instant) -> bool {
        self.table.get(&ip).is_some_and(|n| {
            n.mac.is_some()
                && !n.suspect
                && n.confirmed
                    .is_some_and(|c| now.saturating_duration_since(c) < self.timers.reachable)
        })
    }

    /// Make room for one more entry if the table is full: forget what has not been
    /// confirmed for a while. False if it is still full.
    fn room(&mut self, now: Instant) -> bool {
        if self.table.len() < MAX_NEIGHBORS {
            return true;
        }
        let keep = self.timers.reachable.max(PENDING_MAX_AGE);
        self.table
            .retain(|_, n| n.queued || now.saturating_duration_since(n.updated) < keep);
        self.table.len() < MAX_NEIGHBORS
    }

    /// Record `ip` at `mac` from an ARP packet seen on the link. Like Linux, a new entry is
    /// made only when the packet was meant for us (`for_us`: its target is one of our
    /// addresses, or it answers our request); known entries follow any packet, so a
    /// neighbour whose MAC changed is found again (its gratuitous ARP, its own request, its
    /// answer to a broadcast probe). Only `confirms` (an answer sent to our MAC) proves the
    /// neighbour hears us and makes the entry fresh; anything else leaves it, or makes it
    /// when the MAC is new, stale: used, and probed on first use.
    pub fn learn(&mut self, ip: u32, mac: [u8; 6], for_us: bool, confirms: bool, now: Instant) {
        if ip == 0 || mac[0] & 1 != 0 {
            return;
        }
        if !self.table.contains_key(&ip) {
            if !(for_us || confirms) || !self.room(now) {
                return;
            }
            self.table.insert(ip, Neighbor::incomplete(0, now));
        }
        self.agreed = None;
        if let Some(n) = self.table.get_mut(&ip) {
            if n.mac != Some(mac) {
                n.mac = Some(mac);
                n.confirmed = None;
                n.probes = 0;
            }
            if confirms {
                n.confirmed = Some(now);
                n.probes = 0;
            }
            n.suspect = false;
            n.updated = now;
        }
    }

    /// An IPv4 frame from the link came from `ip` with source MAC `mac`. If that is not the
    /// MAC we know, the neighbour may have changed its MAC: its entry becomes suspect, so
    /// the next frame for it waits for a broadcast answer (one round trip) rather than
    /// being sent to the old MAC until the entry ages out. Nothing is learnt from the
    /// frame itself (an IPv4 source is as easy to forge as ARP, but costs nothing here).
    pub fn saw_frame(&mut self, ip: u32, mac: &[u8]) {
        if self.agreed.is_some_and(|(i, m)| i == ip && m[..] == *mac) {
            return;
        }
        let Some(n) = self.table.get_mut(&ip) else {
            return;
        };
        match n.mac {
            Some(m) if m[..] == *mac && !n.suspect => self.agreed = Some((ip, m)),
            Some(m) if m[..] != *mac && !n.suspect => {
                n.suspect = true;
                n.probes = 0;
                n.asked = None;
            }
            _ => {}
        }
    }

    /// Park a frame from `src` for `ip` (written by `fill` into a pool buffer of `len`
    /// bytes). False if the pool is full or the frame too long: the frame is dropped.
    pub fn park(
        &mut self,
        ip: u32,
        src: u32,
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
        p.src = src;
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
            if let Some(mac) = self.usable(p.ip) {
                send(&p.buf[..p.len], mac);
                self.free.push(i);
            } else if now.saturating_duration_since(p.since) > PENDING_MAX_AGE {
                dropped += 1;
                self.free.push(i);
            }
        }
        dropped
    }

    /// Call `ask` for each ARP request due now: re-validation probes of stale entries that
    /// frames used (unicast first, then broadcast), and broadcast requests for addresses
    /// that parked frames wait for (at most one per [`ARP_RETRY`] per address).
    pub fn ask_due(&mut self, now: Instant, mut ask: impl FnMut(ArpAsk)) {
        let t = self.timers;
        for ip in self.due.drain(..) {
            let Some(n) = self.table.get_mut(&ip) else {
                continue;
            };
            n.queued = false;
            let Some(mac) = n.mac else { continue };
            let to = (n.probes < t.unicast_probes).then_some(mac);
            n.probes = n.probes.saturating_add(1);
            n.asked = Some(now);
            ask(ArpAsk {
                target: ip,
                sender: n.ask_as,
                to,
            });
        }
        for i in 0..self.pending.len() {
            if self.free.contains(&i) {
                continue;
            }
            let (ip, src) = (self.pending[i].ip, self.pending[i].src);
            if self.usable(ip).is_some() {
                continue;
            }
            if !self.table.contains_key(&ip) {
                if !self.room(now) {
                    continue;
                }
                self.table.insert(ip, Neighbor::incomplete(src, now));
            }
            let Some(n) = self.table.get_mut(&ip) else {
                continue;
            };
            if n.asked
                .is_some_and(|at| now.saturating_duration_since(at) < ARP_RETRY)
            {
                continue;
            }
            n.asked = Some(now);
            n.probes = n.probes.saturating_add(1);
            ask(ArpAsk {
                target: ip,
                sender: src,
                to: None,
            });
        }
    }

    /// True if frames are waiting.
    pub fn has_pending(&self) -> bool {
        self.free.len() < self.pending.len()
    }

    /// True if probes are queued (the next round sends them).
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{arp_request, parse_arp, ArpSeen};

    const MAC_A: [u8; 6] = [2, 0xa, 0xa, 0xa, 0xa, 0xa];
    const MAC_B: [u8; 6] = [2, 0xb, 0xb, 0xb, 0xb, 0xb];
    /// The pipe whose frames need the neighbour.
    const PIPE: u32 = 0x0a58_0002;
    /// The neighbour (a host at the pipe subnet's gateway address, say).
    const HOST: u32 = 0x0a58_0001;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timers() -> NeighborTimers {
        NeighborTimers::with_reachable(ms(1000)) // retrans 200 ms
    }

    /// The MAC to use for `ip`, if the entry is fresh (no probe needed).
    trait Fresh {
        fn usable_at(&self, ip: u32, now: Instant) -> Option<[u8; 6]>;
    }
    impl Fresh for Neighbors {
        fn usable_at(&self, ip: u32, now: Instant) -> Option<[u8; 6]> {
            self.usable(ip).filter(|_| self.is_fresh(ip, now))
        }
    }

    fn asks(n: &mut Neighbors, now: Instant) -> Vec<ArpAsk> {
        let mut v = Vec::new();
        n.ask_due(now, |a| v.push(a));
        v
    }

    #[test]
    fn arp_request_parses_back() {
        let f = arp_request([2, 0, 0, 0, 0, 9], 0x0a580001, 0x0a580002, None);
        assert_eq!(f[0..6], [0xff; 6]);
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
        let u = arp_request([2, 0, 0, 0, 0, 9], 1, 2, Some(MAC_A));
        assert_eq!(u[0..6], MAC_A, "a probe goes to the known MAC");
    }

    #[test]
    fn only_arp_meant_for_us_makes_new_entries() {
        let t0 = Instant::now();
        let mut n = Neighbors::new(100, timers());
        n.learn(9, [2, 9, 9, 9, 9, 9], false, false, t0);
        assert_eq!(
            n.usable_at(9, t0),
            None,
            "a stranger's broadcast is not learnt"
        );
        n.learn(9, [2, 9, 9, 9, 9, 9], true, true, t0);
        assert_eq!(n.usable_at(9, t0), Some([2, 9, 9, 9, 9, 9]));
        n.learn(9, [2, 8, 8, 8, 8, 8], false, false, t0);
        assert_eq!(
            n.usable(9),
            Some([2, 8, 8, 8, 8, 8]),
            "known entries follow a new MAC (a gratuitous ARP moves them)"
        );
        assert!(
            !n.is_fresh(9, t0),
            "but unasked news is stale until confirmed"
        );
        assert_eq!(n.resolve(9, PIPE, t0), Some([2, 8, 8, 8, 8, 8]));
        assert_eq!(
            asks(&mut n, t0),
            vec![ArpAsk {
                target: 9,
                sender: PIPE,
                to: Some([2, 8, 8, 8, 8, 8])
            }],
            "so its first use probes it"
        );
        assert!(n.park(10, PIPE, 1, t0, |_| {}));
        assert_eq!(
            asks(&mut n, t0),
            vec![ArpAsk {
                target: 10,
                sender: PIPE,
                to: None
            }]
        );
        n.learn(10, [2, 1, 0, 0, 0, 1], false, true, t0);
        assert_eq!(
            n.usable_at(10, t0),
            Some([2, 1, 0, 0, 0, 1]),
            "an answer to our question is learnt"
        );
        n.learn(11, [3, 0, 0, 0, 0, 1], true, true, t0);
        assert_eq!(n.usable_at(11, t0), None, "multicast MACs are refused");
    }

    #[test]
    fn parked_frames_leave_when_resolved_or_expire() {
        let mut n = Neighbors::new(100, timers());
        let t0 = Instant::now();
        assert!(n.park(7, PIPE, 10, t0, |b| b.fill(1)));
        assert!(n.park(8, PIPE, 10, t0, |b| b.fill(2)));
        assert!(!n.park(9, PIPE, 101, t0, |_| {}));
        let a = asks(&mut n, t0);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(asks(&mut n, t0 + ms(10)).is_empty(), "rate-limited");
        assert_eq!(asks(&mut n, t0 + ARP_RETRY).len(), 2, "asked again");
        n.learn(7, [2, 1, 1, 1, 1, 1], true, true, t0);
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
            assert!(n.park(i + 100, PIPE, 1, t0, |_| {}));
        }
        assert!(!n.park(1, PIPE, 1, t0, |_| {}), "pool full");
    }

    /// The bug this table was rewritten for: an entry past its trust period must not stop
    /// traffic, and the master must ask in the name of the pipe, not of the target.
    #[test]
    fn stale_entries_keep_working_while_probed_as_the_pipe() {
        let t = timers();
        let mut n = Neighbors::new(100, t);
        let t0 = Instant::now();
        n.learn(HOST, MAC_A, true, true, t0);
        assert_eq!(n.resolve(HOST, PIPE, t0 + ms(500)), Some(MAC_A));
        // The neighbour's own requests (its re-validation of us) do not stand for an
        // answer: they would keep the entry fresh forever without our asking.
        n.learn(HOST, MAC_A, true, false, t0 + ms(900));
        assert!(asks(&mut n, t0 + ms(500)).is_empty(), "fresh: no probe");

        // Stale: still used, and a unicast probe is queued, asked as the pipe.
        let s = t0 + t.reachable;
        assert_eq!(n.resolve(HOST, PIPE, s), Some(MAC_A));
        assert_eq!(
            n.resolve(HOST, PIPE, s),
            Some(MAC_A),
            "one probe queued, not two"
        );
        let a = asks(&mut n, s);
        assert_eq!(
            a,
            vec![ArpAsk {
                target: HOST,
                sender: PIPE,
                to: Some(MAC_A)
            }]
        );
        assert_ne!(a[0].sender, a[0].target);
        // No second probe before `retrans`.
        assert_eq!(n.resolve(HOST, PIPE, s + ms(10)), Some(MAC_A));
        assert!(asks(&mut n, s + ms(10)).is_empty());

        // The answer makes it fresh again: no more probes until the next period.
        n.learn(HOST, MAC_A, true, true, s + ms(20));
        assert_eq!(n.resolve(HOST, PIPE, s + ms(30)), Some(MAC_A));
        assert!(asks(&mut n, s + ms(30)).is_empty());
        assert_eq!(n.usable_at(HOST, s + ms(30)), Some(MAC_A));
    }

    #[test]
    fn a_silent_neighbour_is_probed_then_dropped_then_asked_by_broadcast() {
        let t = timers();
        let mut n = Neighbors::new(100, t);
        let t0 = Instant::now();
        n.learn(HOST, MAC_A, true, true, t0);
        let mut now = t0 + t.reachable;
        let mut probes = Vec::new();
        for _ in 0..t.probes {
            assert_eq!(n.resolve(HOST, PIPE, now), Some(MAC_A), "used while probed");
            probes.extend(asks(&mut n, now));
            now += t.retrans;
        }
        let to: Vec<_> = probes.iter().map(|a| a.to).collect();
        assert_eq!(
            to,
            vec![Some(MAC_A), Some(MAC_A), None],
            "unicast, then broadcast"
        );
        // Every probe unanswered: frames now wait for a fresh answer.
        assert_eq!(n.resolve(HOST, PIPE, now), None);
        assert!(n.park(HOST, PIPE, 1, now, |_| {}));
        assert_eq!(
            asks(&mut n, now),
            vec![ArpAsk {
                target: HOST,
                sender: PIPE,
                to: None
            }]
        );
        // It answers from a new MAC: followed.
        n.learn(HOST, MAC_B, true, true, now + ms(1));
        let mut sent = Vec::new();
        n.release(now + ms(1), |_, mac| sent.push(mac));
        assert_eq!(sent, vec![MAC_B]);
        assert_eq!(n.resolve(HOST, PIPE, now + ms(2)), Some(MAC_B));
    }

    #[test]
    fn a_frame_from_a_new_mac_makes_the_entry_wait_for_a_fresh_answer() {
        let t = timers();
        let mut n = Neighbors::new(100, t);
        let t0 = Instant::now();
        n.learn(HOST, MAC_A, true, true, t0);
        n.saw_frame(HOST, &MAC_A);
        assert_eq!(
            n.resolve(HOST, PIPE, t0),
            Some(MAC_A),
            "same MAC: nothing changes"
        );
        n.saw_frame(HOST, &MAC_B);
        assert_eq!(
            n.resolve(HOST, PIPE, t0),
            None,
            "not to the old MAC, not to the new"
        );
        assert!(n.park(HOST, PIPE, 1, t0, |_| {}));
        assert_eq!(
            asks(&mut n, t0),
            vec![ArpAsk {
                target: HOST,
                sender: PIPE,
                to: None
            }]
        );
        n.learn(HOST, MAC_B, true, true, t0 + ms(1));
        let mut sent = Vec::new();
        assert_eq!(n.release(t0 + ms(1), |_, mac| sent.push(mac)), 0);
        assert_eq!(sent, vec![MAC_B], "the parked frame goes to the new MAC");
        // A frame claiming the address from elsewhere did not move the entry by itself.
        n.saw_frame(HOST, &MAC_A);
        assert_eq!(n.resolve(HOST, PIPE, t0 + ms(2)), None);
        n.learn(HOST, MAC_B, true, true, t0 + ms(3));
        assert_eq!(n.resolve(HOST, PIPE, t0 + ms(3)), Some(MAC_B));
        // Frames in agreement are remembered, but a change of the entry forgets that.
        n.saw_frame(HOST, &MAC_B);
        n.learn(HOST, MAC_A, false, false, t0 + ms(4));
        n.saw_frame(HOST, &MAC_B);
        assert_eq!(
            n.resolve(HOST, PIPE, t0 + ms(4)),
            None,
            "B is no longer the entry's MAC"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut n = Neighbors::new(100, timers());
        for ip in 1..=(MAX_NEIGHBORS as u32 + 100) {
            n.learn(ip, MAC_A, true, true, t0);
        }
        assert_eq!(n.table.len(), MAX_NEIGHBORS);
        // Once the old ones have aged, new ones take their place.
        let later = t0 + Duration::from_secs(10);
        n.learn(1_000_000, MAC_B, true, true, later);
        assert_eq!(n.usable_at(1_000_000, later), Some(MAC_B));
        assert!(n.table.len() <= MAX_NEIGHBORS);
    }
}
