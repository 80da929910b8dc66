//! The backend set behind the VIP and the policies that choose a backend for a new flow:
//! Maglev consistent hashing, smooth weighted round robin, least connections.
//!
//! A backend's index (its slot in the set) is its id: it stays the same while the backend
//! exists, so the connection table can store it; the slot of a removed backend is reused
//! by a later addition (drain its flows from the connection table first).
//!
//! A backend is eligible for new flows when it is healthy and its weight is above 0;
//! weight 0 drains it (existing flows stay, no new ones come).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::maglev::{self, MaglevError, MaglevTable};

/// The most backends a set holds: indices are `u16` below Maglev's "no backend" sentinel.
pub const MAX_BACKENDS: usize = maglev::MAX_BACKENDS;

/// How a backend is chosen for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Maglev consistent hashing of the flow: the same flow goes to the same backend,
    /// also after a NAT restart, and few flows move when the set changes.
    Maglev,
    /// Smooth weighted round robin (as nginx does).
    RoundRobin,
    /// The fewest active flows per unit of weight.
    LeastConn,
}

impl Policy {
    /// The names `FromStr` accepts, as `Display` writes them.
    pub const NAMES: [&'static str; 3] = ["maglev", "rr", "least-conn"];

    fn name(self) -> &'static str {
        match self {
            Policy::Maglev => Self::NAMES[0],
            Policy::RoundRobin => Self::NAMES[1],
            Policy::LeastConn => Self::NAMES[2],
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "maglev" => Ok(Policy::Maglev),
            "rr" => Ok(Policy::RoundRobin),
            "least-conn" => Ok(Policy::LeastConn),
            _ => Err(BackendError::UnknownPolicy(s.to_owned())),
        }
    }
}

/// Errors of the backend set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// A policy name that is not one of [`Policy::NAMES`].
    UnknownPolicy(String),
    /// Adding a backend to a set that holds [`MAX_BACKENDS`] already.
    TooMany,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::UnknownPolicy(s) => write!(
                f,
                "unknown policy {s:?} (valid: {})",
                Policy::NAMES.join(", ")
            ),
            BackendError::TooMany => write!(f, "too many backends (at most {MAX_BACKENDS})"),
        }
    }
}

impl std::error::Error for BackendError {}

/// One backend and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its name; unique in the set, and the key Maglev hashes.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Relative share of new flows; 0 drains it.
    pub weight: u32,
    /// Whether the health checker says it is up.
    pub healthy: bool,
    /// Flows in the connection table now (kept by the NAT; least-conn uses it).
    pub active: u32,
    /// Flows ever sent to it.
    pub total: u64,
    /// Bytes forwarded to or from it.
    pub bytes: u64,
    /// Packets forwarded to or from it.
    pub packets: u64,
}

impl Backend {
    /// Healthy and weight > 0: may get new flows.
    pub fn eligible(&self) -> bool {
        self.healthy && self.weight > 0
    }
}

/// The backends and the state of the choice policy.
#[derive(Debug, Clone)]
pub struct BackendSet {
    slots: Vec<Option<Backend>>,
    /// Name → index, so that control-path operations stay cheap with many backends.
    names: HashMap<String, u16>,
    /// Indices of removed backends, lowest first out.
    free: BinaryHeap<Reverse<u16>>,
    policy: Policy,
    maglev: MaglevTable,
    /// Scratch for building the Maglev table: (key, weight) per slot, reused.
    maglev_input: Vec<(u64, u32)>,
    /// Smooth weighted round robin's current weight per slot (same length as `slots`).
    rr_current: Vec<i64>,
    /// The Maglev table is out of date.
    dirty: bool,
}

impl BackendSet {
    /// An empty set; `table_size` is the Maglev table's (see [`MaglevTable::new`]), built
    /// whatever the policy so that the policy can be switched.
    pub fn new(policy: Policy, table_size: usize) -> Result<Self, MaglevError> {
        Ok(BackendSet {
            slots: Vec::new(),
            names: HashMap::new(),
            free: BinaryHeap::new(),
            policy,
            maglev: MaglevTable::new(table_size)?,
            maglev_input: Vec::new(),
            rr_current: Vec::new(),
            dirty: true,
        })
    }

    /// The policy in use.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Switches the policy; existing flows are not affected (they are in the conn table).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.changed();
    }

    /// Adds a backend or updates the one of that name. An existing backend keeps its
    /// index, health and counters and gets the new address and weight. A new one takes
    /// the lowest free index and starts **unhealthy**, with zero counters: it gets flows
    /// once [`set_healthy`](Self::set_healthy) says so (the health checker, or the NAT
    /// right away when it runs without health checks).
    pub fn upsert(&mut self, name: &str, ip: Ipv4Addr, weight: u32) -> Result<u16, BackendError> {
        if let Some(idx) = self.index_of(name) {
            if let Some(b) = self.slot_mut(idx) {
                b.ip = ip;
            }
            self.set_weight(idx, weight);
            return Ok(idx);
        }
        let backend = Backend {
            name: name.to_owned(),
            ip,
            weight,
            healthy: false,
            active: 0,
            total: 0,
            bytes: 0,
            packets: 0,
        };
        let idx = if let Some(Reverse(i)) = self.free.pop() {
            self.slots[usize::from(i)] = Some(backend);
            i
        } else if self.slots.len() < MAX_BACKENDS {
            self.slots.push(Some(backend));
            self.rr_current.push(0);
            (self.slots.len() - 1) as u16
        } else {
            return Err(BackendError::TooMany);
        };
        self.names.insert(name.to_owned(), idx);
        self.changed();
        Ok(idx)
    }

    /// Removes a backend; returns the index it had (now free for reuse).
    pub fn remove(&mut self, name: &str) -> Option<u16> {
        let idx = self.names.remove(name)?;
        self.slots[usize::from(idx)] = None;
        self.free.push(Reverse(idx));
        self.changed();
        Some(idx)
    }

    /// The backend with index `idx`.
    pub fn get(&self, idx: u16) -> Option<&Backend> {
        self.slots.get(usize::from(idx))?.as_ref()
    }

    /// The backend with index `idx`, to update its counters. Do not rename it (the name
    /// index would not follow); change its weight or health through
    /// [`set_weight`](Self::set_weight) and [`set_healthy`](Self::set_healthy), which
    /// keep the Maglev table in step.
    pub fn get_mut(&mut self, idx: u16) -> Option<&mut Backend> {
        self.slot_mut(idx)
    }

    fn slot_mut(&mut self, idx: u16) -> Option<&mut Backend> {
        self.slots.get_mut(usize::from(idx))?.as_mut()
    }

    /// The backends with their indices, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Backend)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i as u16, b.as_ref()?)))
    }

    /// The index of the backend called `name`.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        self.names.get(name).copied()
    }

    /// Sets a backend's weight (0 drains it); false if there is no such backend.
    pub fn set_weight(&mut self, idx: u16, weight: u32) -> bool {
        let Some(b) = self.slot_mut(idx) else {
            return false;
        };
        if b.weight != weight {
            b.weight = weight;
            self.changed();
        }
        true
    }

    /// Marks a backend up or down; false if there is no such backend.
    pub fn set_healthy(&mut self, idx: u16, healthy: bool) -> bool {
        let Some(b) = self.slot_mut(idx) else {
            return false;
        };
        if b.healthy != healthy {
            b.healthy = healthy;
            self.changed();
        }
        true
    }

    /// The number of backends.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No backends at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of backends that may get new flows (healthy, weight > 0).
    pub fn len_eligible(&self) -> usize {
        self.iter().filter(|(_, b)| b.eligible()).count()
    }

    /// Chooses the backend for a new flow (`flow_hash` from [`maglev::flow_hash`]; only
    /// Maglev uses it) among the eligible ones, or `None` if there is none. Round robin
    /// advances its rotation; least-conn relies on the NAT keeping `active` up to date.
    /// Allocates only when it rebuilds the Maglev table after a change.
    pub fn pick(&mut self, flow_hash: u64) -> Option<u16> {
        match self.policy {
            Policy::Maglev => self.pick_maglev(flow_hash),
            Policy::RoundRobin => self.pick_round_robin(),
            Policy::LeastConn => self.pick_least_conn(),
        }
    }

    fn pick_maglev(&mut self, flow_hash: u64) -> Option<u16> {
        if self.dirty {
            self.rebuild_maglev();
        }
        let idx = self.maglev.lookup(flow_hash)?;
        if self.get(idx).is_some_and(Backend::eligible) {
            return Some(idx);
        }
        // The table is stale: a backend was changed through get_mut. Rebuild and retry.
        self.rebuild_maglev();
        let idx = self.maglev.lookup(flow_hash)?;
        self.get(idx).filter(|b| b.eligible()).map(|_| idx)
    }

    fn rebuild_maglev(&mut self) {
        self.maglev_input.clear();
        for slot in &self.slots {
            // Removed and ineligible backends keep their index with weight 0, so that
            // the others keep their places in the table.
            self.maglev_input.push(match slot {
                Some(b) => (
                    backend_key(&b.name),
                    if b.eligible() { b.weight } else { 0 },
                ),
                None => (0, 0),
            });
        }
        self.maglev.build(&self.maglev_input);
        self.dirty = false;
    }

    /// nginx's smooth weighted round robin: every eligible backend adds its weight to its
    /// current value, the largest current value wins and pays the total weight. With
    /// weights 1:3 that gives b, a, b, b (interleaved, not a run of three b's).
    fn pick_round_robin(&mut self) -> Option<u16> {
        let mut total = 0i64;
        // (index, its current value); ties go to the lowest index.
        let mut best: Option<(usize, i64)> = None;
        let slots = self.slots.iter().zip(self.rr_current.iter_mut());
        for (i, (slot, current)) in slots.enumerate() {
            let Some(b) = slot.as_ref().filter(|b| b.eligible()) else {
                continue;
            };
            // Bounded: |current| stays within the total weight (< 2^48).
            *current += i64::from(b.weight);
            total += i64::from(b.weight);
            if best.is_none_or(|(_, c)| *current > c) {
                best = Some((i, *current));
            }
        }
        let (j, _) = best?;
        self.rr_current[j] -= total;
        Some(j as u16)
    }

    fn pick_least_conn(&self) -> Option<u16> {
        // Compares active/weight as active_a * weight_b < active_b * weight_a (no
        // division, no overflow in u64); ties go to the lowest index.
        let mut best: Option<(u16, u64, u64)> = None;
        for (i, b) in self.iter().filter(|(_, b)| b.eligible()) {
            let (a, w) = (u64::from(b.active), u64::from(b.weight));
            if best.is_none_or(|(_, ba, bw)| a * bw < ba * w) {
                best = Some((i, a, w));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// The set changed: Maglev rebuilds on the next pick, round robin starts afresh (so a
    /// backend that returns does not bring an old credit or debt).
    fn changed(&mut self) {
        self.dirty = true;
        self.rr_current.fill(0);
    }
}

/// The Maglev key of a backend: a hash of its name (FNV-1a, then mixed), so that it keeps
/// its table entries when others come and go, and across restarts.
pub fn backend_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    maglev::mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{flow_hash, DEFAULT_TABLE_SIZE};

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, 1, n)
    }

    /// A set with healthy backends of these weights, named b0, b1, ...
    fn set(policy: Policy, weights: &[u32]) -> BackendSet {
        let mut s = BackendSet::new(policy, 251).unwrap();
        for (i, &w) in weights.iter().enumerate() {
            let idx = s.upsert(&format!("b{i}"), ip(i as u8), w).unwrap();
            assert_eq!(usize::from(idx), i);
            assert!(s.set_healthy(idx, true));
        }
        s
    }

    fn picks(s: &mut BackendSet, n: usize) -> Vec<u16> {
        (0..n).map(|i| s.pick(i as u64).unwrap()).collect()
    }

    #[test]
    fn policy_names() {
        for p in [Policy::Maglev, Policy::RoundRobin, Policy::LeastConn] {
            assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
        }
        assert_eq!("rr".parse::<Policy>(), Ok(Policy::RoundRobin));
        let e = "random".parse::<Policy>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown policy \"random\" (valid: maglev, rr, least-conn)"
        );
    }

    #[test]
    fn round_robin_rotates_exactly() {
        let mut s = set(Policy::RoundRobin, &[1, 1, 1]);
        assert_eq!(picks(&mut s, 7), [0, 1, 2, 0, 1, 2, 0]);
        let mut s = set(Policy::RoundRobin, &[5, 5, 5]);
        assert_eq!(picks(&mut s, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_one_to_three() {
        let mut s = set(Policy::RoundRobin, &[1, 3]);
        let p = picks(&mut s, 400);
        assert_eq!(p.iter().filter(|&&i| i == 0).count(), 100);
        // Smooth: every window of 4 holds exactly one pick of backend 0.
        for w in p.chunks(4) {
            assert_eq!(w.iter().filter(|&&i| i == 0).count(), 1, "{w:?}");
        }
        let mut s = set(Policy::RoundRobin, &[5, 1, 1]);
        assert_eq!(picks(&mut s, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_picks_least_active_per_weight() {
        let mut s = set(Policy::LeastConn, &[1, 1, 1]);
        s.get_mut(0).unwrap().active = 5;
        s.get_mut(1).unwrap().active = 2;
        s.get_mut(2).unwrap().active = 3;
        assert_eq!(s.pick(0), Some(1));
        s.get_mut(1).unwrap().active = 3;
        assert_eq!(s.pick(0), Some(1), "ties go to the lowest index");
        // Weight 4 with 8 active (2 per weight) beats weight 1 with 3 active.
        s.set_weight(0, 4);
        s.get_mut(0).unwrap().active = 8;
        assert_eq!(s.pick(0), Some(0));
        s.get_mut(0).unwrap().active = u32::MAX;
        s.set_weight(0, u32::MAX);
        assert_eq!(s.pick(0), Some(0), "1 per weight, no overflow");
    }

    #[test]
    fn drained_and_unhealthy_are_never_picked() {
        for policy in [Policy::Maglev, Policy::RoundRobin, Policy::LeastConn] {
            let mut s = set(policy, &[1, 1, 1, 1]);
            s.set_weight(1, 0);
            s.set_healthy(2, false);
            let mut seen = [0usize; 4];
            for h in 0..2000u64 {
                let i = s.pick(flow_hash(6, h as u32, h as u16, 80)).unwrap();
                seen[usize::from(i)] += 1;
                if policy == Policy::LeastConn {
                    s.get_mut(i).unwrap().active += 1;
                }
            }
            assert_eq!((seen[1], seen[2]), (0, 0), "{policy}");
            assert!(seen[0] > 0 && seen[3] > 0, "{policy}: {seen:?}");
            assert_eq!(s.len_eligible(), 2);
            assert_eq!(s.len(), 4);
        }
    }

    #[test]
    fn none_eligible_gives_none() {
        for policy in [Policy::Maglev, Policy::RoundRobin, Policy::LeastConn] {
            let mut s = set(policy, &[]);
            assert!(s.is_empty());
            assert_eq!(s.pick(1), None, "{policy}");
            let mut s = set(policy, &[0, 2]);
            s.set_healthy(1, false);
            assert_eq!(s.pick(1), None, "{policy}");
            s.set_healthy(1, true);
            assert_eq!(s.pick(1), Some(1), "{policy}");
        }
    }

    #[test]
    fn new_backends_start_unhealthy() {
        let mut s = BackendSet::new(Policy::RoundRobin, 251).unwrap();
        let i = s.upsert("a", ip(1), 1).unwrap();
        assert!(!s.get(i).unwrap().healthy);
        assert_eq!(s.pick(0), None);
        s.set_healthy(i, true);
        assert_eq!(s.pick(0), Some(i));
        assert!(!s.set_healthy(9, true));
        assert!(!s.set_weight(9, 1));
    }

    #[test]
    fn indices_are_stable_and_reused() {
        let mut s = set(Policy::RoundRobin, &[1, 1, 1]);
        s.get_mut(2).unwrap().total = 17;
        assert_eq!(s.remove("b1"), Some(1));
        assert_eq!(s.remove("b1"), None);
        assert_eq!(s.index_of("b2"), Some(2));
        assert_eq!(s.get(2).unwrap().total, 17);
        assert!(s.get(1).is_none());
        assert_eq!(picks(&mut s, 4), [0, 2, 0, 2]);
        // Updating keeps index, health and counters.
        assert_eq!(s.upsert("b2", ip(99), 3), Ok(2));
        let b = s.get(2).unwrap();
        assert_eq!((b.ip, b.weight, b.healthy, b.total), (ip(99), 3, true, 17));
        // The free slot is reused.
        assert_eq!(s.upsert("new", ip(7), 1), Ok(1));
        assert_eq!(s.get(1).unwrap().total, 0);
        let names: Vec<_> = s.iter().map(|(i, b)| (i, b.name.as_str())).collect();
        assert_eq!(names, [(0, "b0"), (1, "new"), (2, "b2")]);
    }

    #[test]
    fn maglev_keeps_flows_when_another_backend_goes() {
        let mut s = BackendSet::new(Policy::Maglev, DEFAULT_TABLE_SIZE).unwrap();
        for i in 0..5u8 {
            let idx = s.upsert(&format!("web-{i}"), ip(i), 1).unwrap();
            s.set_healthy(idx, true);
        }
        let hashes: Vec<u64> = (0..20_000u32).map(|i| flow_hash(6, i, 40000, 80)).collect();
        let before: Vec<u16> = hashes.iter().map(|&h| s.pick(h).unwrap()).collect();
        s.remove("web-3");
        let mut moved_others = 0;
        for (&h, &was) in hashes.iter().zip(&before) {
            let now = s.pick(h).unwrap();
            assert_ne!(now, 3);
            if was != 3 && now != was {
                moved_others += 1;
            }
        }
        assert!(moved_others * 20 < hashes.len(), "{moved_others}");
        // The same set added in another order (another NAT, or after a restart) agrees:
        // the table depends on the names, not on the indices.
        let mut t = BackendSet::new(Policy::Maglev, DEFAULT_TABLE_SIZE).unwrap();
        for i in [4u8, 2, 0, 1] {
            let idx = t.upsert(&format!("web-{i}"), ip(i), 1).unwrap();
            t.set_healthy(idx, true);
        }
        // Other indices in t; compare by name.
        for &h in &hashes[..2000] {
            let (a, b) = (s.pick(h).unwrap(), t.pick(h).unwrap());
            assert_eq!(s.get(a).unwrap().name, t.get(b).unwrap().name);
        }
    }

    #[test]
    fn maglev_notices_a_change_made_through_get_mut() {
        let mut s = set(Policy::Maglev, &[1, 1]);
        let h = (0..).find(|&h| s.pick(h) == Some(0)).unwrap();
        s.get_mut(0).unwrap().healthy = false;
        assert_eq!(s.pick(h), Some(1));
    }

    #[test]
    fn too_many_backends() {
        let mut s = BackendSet::new(Policy::LeastConn, 3).unwrap();
        for i in 0..MAX_BACKENDS {
            s.upsert(&i.to_string(), ip(0), 1).unwrap();
        }
        assert_eq!(s.upsert("one more", ip(0), 1), Err(BackendError::TooMany));
        assert_eq!(s.upsert("7", ip(1), 2), Ok(7));
        assert_eq!(s.remove("70"), Some(70));
        assert_eq!(s.remove("9"), Some(9));
        assert_eq!(s.upsert("one more", ip(0), 1), Ok(9));
        assert_eq!(s.upsert("two more", ip(0), 1), Ok(70));
        assert_eq!(s.len(), MAX_BACKENDS);
        assert!(BackendError::TooMany.to_string().contains("65535"));
    }
}
