//! Routes between nodes: `docknetctl route add CIDR via IP`.
//!
//! Each node's `docknetd` owns the pipe subnets of its pods; a route says that the
//! addresses of another node's subnet are reached through that node's `docknetd` on the
//! wire (`via`, its `--link-ip`). The data path looks a destination up in a
//! [`RouteTable`]: a small array sorted by prefix length, longest first, so the first
//! match is the longest-prefix match (a node has a handful of routes: one per other node).
//!
//! The table the data path holds is replaced whole by the control plane (a message, never
//! a lock); per-route counters live in [`RouteStats`] shared with the control plane, which
//! keeps them across table replacements.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::net::netmask;

/// Most routes one docknetd holds (one per other node, plus summaries): the lookup is a
/// linear scan, cheap for tens of entries.
pub const MAX_ROUTES: usize = 256;

/// An IPv4 prefix `net/prefix_len` with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub net: u32,
    pub prefix_len: u8,
}

impl Prefix {
    /// The prefix `addr/prefix_len` (host bits cleared).
    pub fn of(addr: u32, prefix_len: u8) -> Prefix {
        Prefix {
            net: addr & netmask(prefix_len),
            prefix_len,
        }
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: u32) -> bool {
        addr & netmask(self.prefix_len) == self.net
    }

    /// Whether every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.net)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.net), self.prefix_len)
    }
}

/// Parse a route's destination `A.B.C.D/N` (N in 0..=32; 0 is a default route). Host bits
/// must be clear, so a typo such as `10.90.2.5/24` is refused rather than widened.
pub fn parse_prefix(s: &str) -> Result<Prefix, RouteError> {
    let bad = |why: String| RouteError::BadCidr {
        cidr: s.to_string(),
        why,
    };
    let (addr, len) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("expected A.B.C.D/N, e.g. 10.90.2.0/24".into()))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad(format!("{addr:?} is not an IPv4 address")))?;
    let prefix_len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| bad(format!("prefix length {len:?} is not a number in 0..=32")))?;
    let p = Prefix::of(u32::from(addr), prefix_len);
    if p.net != u32::from(addr) {
        return Err(bad(format!(
            "host bits are set (the network is {p}); write the network address"
        )));
    }
    Ok(p)
}

/// Parse docknetd's own link address `A.B.C.D/N` (`--link-ip`; N in 1..=30): not the
/// network or broadcast address of its subnet.
pub fn parse_link_addr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix_len) = crate::net::parse_cidr(s)?;
    let p = Prefix::of(u32::from(ip), prefix_len);
    let a = u32::from(ip);
    if a == p.net || a == p.net | !netmask(prefix_len) {
        return Err(format!(
            "{ip} is the network or broadcast address of {p}: pick a host address"
        ));
    }
    Ok((ip, prefix_len))
}

/// Parse a route's next hop.
pub fn parse_via(s: &str) -> Result<Ipv4Addr, RouteError> {
    s.trim().parse().map_err(|_| RouteError::BadVia {
        via: s.to_string(),
        why: "not an IPv4 address".into(),
    })
}

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The destination is not `A.B.C.D/N` with clear host bits.
    BadCidr { cidr: String, why: String },
    /// The next hop is not a usable address.
    BadVia { via: String, why: String },
    /// docknetd runs with `--nic none`: there is no wire to route over.
    NoNic,
    /// docknetd has no address on its link (`--link-ip`), so it could not ask for or be
    /// found as a next hop.
    NoLinkAddress { nic: String },
    /// The next hop is not on the NIC's link subnet.
    ViaOffLink {
        via: Ipv4Addr,
        link: Prefix,
        nic: String,
    },
    /// The next hop is this docknetd's own link address.
    ViaIsUs { via: Ipv4Addr },
    /// The destination is (inside) a subnet this node serves itself: a pipe subnet or the
    /// link subnet. `what` names it, e.g. `pipe "a"'s subnet 10.90.1.0/24`.
    Local { cidr: Prefix, what: String },
    /// A route to this destination exists already.
    Duplicate { cidr: Prefix, via: Ipv4Addr },
    /// No route to this destination (`route rm`).
    NoSuchRoute { cidr: Prefix },
    /// [`MAX_ROUTES`] reached.
    Full,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadCidr { cidr, why } => {
                write!(f, "invalid route destination {cidr:?}: {why}")
            }
            RouteError::BadVia { via, why } => write!(f, "invalid next hop {via:?}: {why}"),
            RouteError::NoNic => f.write_str(
                "docknetd runs with --nic none: there is no link to route over (start it with --nic af-packet:IFACE --link-ip A.B.C.D/N)",
            ),
            RouteError::NoLinkAddress { nic } => write!(
                f,
                "docknetd has no address on its link {nic}: start it with --link-ip A.B.C.D/N (its address on the wire, which other nodes name as `via`)"
            ),
            RouteError::ViaOffLink { via, link, nic } => write!(
                f,
                "next hop {via} is not on the link of {nic} ({link}, from --link-ip): name the other node's docknetd address on that link"
            ),
            RouteError::ViaIsUs { via } => write!(
                f,
                "next hop {via} is this docknetd's own link address (--link-ip): name the other node's"
            ),
            RouteError::Local { cidr, what } => write!(
                f,
                "route {cidr} overlaps {what}, which this node serves itself: a route must lie outside every local subnet (it may contain one, as a summary or default route does)"
            ),
            RouteError::Duplicate { cidr, via } => write!(
                f,
                "a route to {cidr} exists already (via {via}): remove it first (docknetctl route rm {cidr})"
            ),
            RouteError::NoSuchRoute { cidr } => {
                write!(f, "no route to {cidr} (docknetctl route ls lists them)")
            }
            RouteError::Full => write!(f, "too many routes (at most {MAX_ROUTES})"),
        }
    }
}

impl std::error::Error for RouteError {}

/// A route's counters, written by the data path (plain stores of its private totals) and
/// read by the control plane.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Frames sent (or parked for ARP) toward the next hop.
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames that found the next hop's MAC unknown (parked while ARP asks; those still
    /// unanswered after 1 s are dropped and counted as the NIC's `no_neighbor`).
    pub unresolved: AtomicU64,
}

/// [`RouteStats`] as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounts {
    pub frames: u64,
    pub bytes: u64,
    pub unresolved: u64,
}

impl RouteStats {
    pub fn load(&self) -> RouteCounts {
        RouteCounts {
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            unresolved: self.unresolved.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, c: &RouteCounts) {
        self.frames.store(c.frames, Ordering::Relaxed);
        self.bytes.store(c.bytes, Ordering::Relaxed);
        self.unresolved.store(c.unresolved, Ordering::Relaxed);
    }
}

/// One route in the data path's table.
pub struct RouteEntry {
    pub dest: Prefix,
    pub via: u32,
    pub stats: Arc<RouteStats>,
    /// The data path's private totals (published when `dirty`).
    local: RouteCounts,
    dirty: bool,
}

impl RouteEntry {
    pub fn new(dest: Prefix, via: Ipv4Addr, stats: Arc<RouteStats>) -> Self {
        let local = stats.load();
        RouteEntry {
            dest,
            via: u32::from(via),
            stats,
            local,
            dirty: false,
        }
    }
}

/// The data path's routes, longest prefix first.
#[derive(Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// A table of `entries` (any order).
    pub fn new(mut entries: Vec<RouteEntry>) -> Self {
        entries.sort_by(|a, b| {
            b.dest
                .prefix_len
                .cmp(&a.dest.prefix_len)
                .then(a.dest.net.cmp(&b.dest.net))
        });
        RouteTable { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest-prefix match for `dst`: its index and next hop.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<(usize, u32)> {
        self.entries
            .iter()
            .position(|e| e.dest.contains(dst))
            .map(|i| (i, self.entries[i].via))
    }

    /// Count a frame of `len` bytes sent toward route `i`'s next hop (`resolved`: its MAC
    /// was known).
    #[inline]
    pub fn count(&mut self, i: usize, len: usize, resolved: bool) {
        if let Some(e) = self.entries.get_mut(i) {
            e.local.frames += 1;
            e.local.bytes += len as u64;
            if !resolved {
                e.local.unresolved += 1;
            }
            e.dirty = true;
        }
    }

    /// Publish the counters that changed (once per round).
    pub fn publish(&mut self) {
        for e in self.entries.iter_mut().filter(|e| e.dirty) {
            e.stats.publish(&e.local);
            e.dirty = false;
        }
    }
}

/// A route as `route ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// `A.B.C.D/N`.
    pub cidr: String,
    pub via: String,
    /// Frames sent toward the next hop (and those that found it unresolved).
    pub counters: RouteCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn parses_prefixes_and_refuses_bad_ones_with_the_reason() {
        assert_eq!(p("10.90.2.0/24").to_string(), "10.90.2.0/24");
        assert_eq!(p("0.0.0.0/0").prefix_len, 0);
        assert_eq!(p("10.90.2.7/32").to_string(), "10.90.2.7/32");
        for (bad, why) in [
            ("10.90.2.0", "expected A.B.C.D/N"),
            ("10.90.2/24", "not an IPv4 address"),
            ("10.90.2.0/33", "0..=32"),
            ("10.90.2.0/x", "0..=32"),
            (
                "10.90.2.5/24",
                "host bits are set (the network is 10.90.2.0/24)",
            ),
        ] {
            let e = parse_prefix(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
        assert!(parse_via("192.168.50.x")
            .unwrap_err()
            .to_string()
            .contains("\"192.168.50.x\""));
    }

    #[test]
    fn longest_prefix_wins_and_counters_publish() {
        let st = |_| Arc::new(RouteStats::default());
        let e = |c: &str, v: &str| RouteEntry::new(p(c), v.parse().unwrap(), st(()));
        let mut t = RouteTable::new(vec![
            e("0.0.0.0/0", "192.168.50.9"),
            e("10.90.0.0/16", "192.168.50.3"),
            e("10.90.2.0/24", "192.168.50.2"),
        ]);
        assert_eq!(
            t.lookup(ip("10.90.2.5")).map(|r| r.1),
            Some(ip("192.168.50.2"))
        );
        assert_eq!(
            t.lookup(ip("10.90.3.5")).map(|r| r.1),
            Some(ip("192.168.50.3"))
        );
        assert_eq!(
            t.lookup(ip("8.8.8.8")).map(|r| r.1),
            Some(ip("192.168.50.9"))
        );
        let t2 = RouteTable::new(vec![e("10.90.2.0/24", "192.168.50.2")]);
        assert_eq!(t2.lookup(ip("10.90.1.5")), None);
        let (i, _) = t.lookup(ip("10.90.2.5")).unwrap();
        t.count(i, 100, true);
        t.count(i, 50, false);
        let stats = t.entries[i].stats.clone();
        assert_eq!(
            stats.load(),
            RouteCounts::default(),
            "published only per round"
        );
        t.publish();
        assert_eq!(
            stats.load(),
            RouteCounts {
                frames: 2,
                bytes: 150,
                unresolved: 1
            }
        );
        // A new table made with the same stats goes on counting from there.
        let mut t3 = RouteTable::new(vec![RouteEntry::new(
            p("10.90.2.0/24"),
            "192.168.50.2".parse().unwrap(),
            stats.clone(),
        )]);
        t3.count(0, 10, true);
        t3.publish();
        assert_eq!(stats.load().frames, 3);
    }

    #[test]
    fn covers_is_containment() {
        assert!(p("10.90.0.0/16").covers(&p("10.90.2.0/24")));
        assert!(p("10.90.2.0/24").covers(&p("10.90.2.0/24")));
        assert!(!p("10.90.2.0/24").covers(&p("10.90.0.0/16")));
        assert!(!p("10.90.2.0/24").covers(&p("10.90.3.0/24")));
        assert!(p("0.0.0.0/0").covers(&p("10.90.3.0/24")));
    }
}
