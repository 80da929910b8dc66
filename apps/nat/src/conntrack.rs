//! The connection table: which backend each flow goes to, with a little TCP state to
//! time flows out. All memory is allocated by [`ConnTable::with_capacity`]; nothing
//! allocates afterwards, on any path, so a flood of new flows can fill the table (then
//! [`TableFull`]) but never grow the NAT's memory.
//!
//! Flows live in a fixed array of slots (a slot id names a flow while it exists; free
//! slots are on a stack) and are found through an open-addressing index: a power-of-two
//! array at least twice the capacity (so at most half full and probe sequences stay
//! short), linear probing, and backward-shift deletion (no tombstones to pile up). Keys
//! are hashed with a per-table secret seed, so that an attacker who does not know it
//! cannot aim many flows at one probe sequence (the mixer is not a cryptographic PRF, but
//! the seed is mixed in twice).

use std::fmt;

use crate::maglev::mix64;
use crate::packet::{tcp_flags, Parsed, PROTO_TCP};

/// The largest capacity [`ConnTable::with_capacity`] accepts (about 1 GiB in all).
pub const MAX_CAPACITY: usize = 1 << 24;

/// What names a flow. The NAT has one VIP address, so these four do: a client's packet
/// gives (proto, source ip, source port, destination port), and a backend's reply the
/// same key as (proto, destination ip, destination port, source port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv4 protocol: TCP or UDP.
    pub proto: u8,
    /// The client's address (host order).
    pub client_ip: u32,
    /// The client's port.
    pub client_port: u16,
    /// The VIP port the client connected to (backends listen on the same port).
    pub vip_port: u16,
}

impl FlowKey {
    /// The key of a client's packet to the VIP.
    pub fn of_client_packet(p: &Parsed) -> FlowKey {
        FlowKey {
            proto: p.proto,
            client_ip: p.src,
            client_port: p.sport,
            vip_port: p.dport,
        }
    }

    /// The key of a backend's reply to a client.
    pub fn of_backend_packet(p: &Parsed) -> FlowKey {
        FlowKey {
            proto: p.proto,
            client_ip: p.dst,
            client_port: p.dport,
            vip_port: p.sport,
        }
    }
}

/// Where a flow is in its life; decides its idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// TCP: the client's SYN seen, its ACK of the handshake not yet.
    SynSeen,
    /// TCP: the handshake done.
    Established,
    /// TCP: a FIN or an RST seen.
    Closing,
    /// UDP (no state).
    Udp,
}

/// One flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Its key.
    pub key: FlowKey,
    /// The backend index it goes to.
    pub backend: u16,
    /// Its state.
    pub state: FlowState,
    /// When a packet of it was last seen.
    pub last_seen_ms: u64,
    /// The client sent a FIN.
    pub client_fin: bool,
    /// The backend sent a FIN.
    pub server_fin: bool,
    /// The acknowledgment number of the client's last segment with ACK: the sequence
    /// number an RST to the client must carry to be accepted.
    pub last_client_ack: u32,
    /// Bytes forwarded (kept by the NAT).
    pub bytes: u64,
}

/// Idle timeouts per state, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake not finished.
    pub tcp_syn_ms: u64,
    /// TCP established.
    pub tcp_established_ms: u64,
    /// TCP after a FIN or RST.
    pub tcp_closing_ms: u64,
    /// UDP.
    pub udp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_ms: 5_000,
            tcp_established_ms: 300_000,
            tcp_closing_ms: 10_000,
            udp_ms: 30_000,
        }
    }
}

impl Timeouts {
    /// The idle timeout of a flow in `state`.
    pub fn for_state(&self, state: FlowState) -> u64 {
        match state {
            FlowState::SynSeen => self.tcp_syn_ms,
            FlowState::Established => self.tcp_established_ms,
            FlowState::Closing => self.tcp_closing_ms,
            FlowState::Udp => self.udp_ms,
        }
    }
}

/// Every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table full")
    }
}

impl std::error::Error for TableFull {}

/// Why a table could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnTableError {
    /// More than [`MAX_CAPACITY`] flows asked for.
    CapacityTooLarge(usize),
}

impl fmt::Display for ConnTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnTableError::CapacityTooLarge(n) => write!(
                f,
                "connection table capacity {n} is too large (at most {MAX_CAPACITY})"
            ),
        }
    }
}

impl std::error::Error for ConnTableError {}

/// An empty index entry. Entries are `(hash as u32) << 32 | slot`; slot ids are below
/// `MAX_CAPACITY`, so no entry is all ones.
const EMPTY: u64 = u64::MAX;

/// The fixed-capacity connection table.
#[derive(Debug, Clone)]
pub struct ConnTable {
    slots: Box<[Option<Flow>]>,
    /// Free slot ids, a stack: `free[..free_len]`.
    free: Box<[u32]>,
    free_len: usize,
    /// Open-addressing index, `mask + 1` entries.
    index: Box<[u64]>,
    mask: usize,
    /// The secret hash keys, from the seed.
    k0: u64,
    k1: u64,
    len: usize,
    /// Where the next `expire` sweep starts.
    cursor: usize,
    timeouts: Timeouts,
}

impl ConnTable {
    /// A table for up to `capacity` flows, allocating all its memory now. `seed` keys the
    /// hash of flow keys: give a random one (fixed only in tests).
    pub fn with_capacity(
        capacity: usize,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<ConnTable, ConnTableError> {
        if capacity > MAX_CAPACITY {
            return Err(ConnTableError::CapacityTooLarge(capacity));
        }
        let index_len = (2 * capacity).max(2).next_power_of_two();
        Ok(ConnTable {
            slots: vec![None; capacity].into_boxed_slice(),
            // Popped from the end: slot 0 is used first.
            free: (0..capacity as u32).rev().collect(),
            free_len: capacity,
            index: vec![EMPTY; index_len].into_boxed_slice(),
            mask: index_len - 1,
            k0: mix64(seed ^ 0x243f_6a88_85a3_08d3),
            k1: mix64(seed ^ 0x1319_8a2e_0370_7344),
            len: 0,
            cursor: 0,
            timeouts,
        })
    }

    /// The number of flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No flows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most flows it holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The timeouts it applies.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn hash(&self, k: &FlowKey) -> u64 {
        let a = (u64::from(k.client_ip) << 32)
            | (u64::from(k.client_port) << 16)
            | u64::from(k.vip_port);
        mix64(mix64(a ^ self.k0) ^ u64::from(k.proto) ^ self.k1)
    }

    /// The index position of `key` if present, else `Err` with the empty position where
    /// it would go.
    fn find(&self, key: &FlowKey) -> Result<(usize, u32), usize> {
        let tag = self.hash(key) as u32;
        let mut i = tag as usize & self.mask;
        // Ends: the index is at most half full, so an empty entry comes.
        loop {
            let e = self.index[i];
            if e == EMPTY {
                return Err(i);
            }
            let slot = e as u32;
            if (e >> 32) as u32 == tag
                && self
                    .slots
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|f| f.key == *key)
            {
                return Ok((i, slot));
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of the flow with this key.
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.find(key).ok().map(|(_, slot)| slot)
    }

    /// Adds a flow going to `backend`, in state `SynSeen` for TCP or `Udp` otherwise, and
    /// returns its slot. The key is meant to be absent (look it up first); if it is
    /// present, its slot is returned and the flow left unchanged, so the table never
    /// holds a key twice.
    pub fn insert(&mut self, key: FlowKey, backend: u16, now_ms: u64) -> Result<u32, TableFull> {
        let pos = match self.find(&key) {
            Ok((_, slot)) => return Ok(slot),
            Err(pos) => pos,
        };
        if self.free_len == 0 {
            return Err(TableFull);
        }
        self.free_len -= 1;
        let slot = self.free[self.free_len];
        self.slots[slot as usize] = Some(Flow {
            key,
            backend,
            state: if key.proto == PROTO_TCP {
                FlowState::SynSeen
            } else {
                FlowState::Udp
            },
            last_seen_ms: now_ms,
            client_fin: false,
            server_fin: false,
            last_client_ack: 0,
            bytes: 0,
        });
        self.index[pos] = (u64::from(self.hash(&key) as u32) << 32) | u64::from(slot);
        self.len += 1;
        Ok(slot)
    }

    /// The flow in `slot`.
    pub fn get(&self, slot: u32) -> Option<&Flow> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// The flow in `slot`, to change. Do not change its key: the index would lose it.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Flow> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Removes the flow in `slot` and returns it.
    pub fn remove(&mut self, slot: u32) -> Option<Flow> {
        let flow = self.slots.get_mut(slot as usize)?.take()?;
        // Its index entry is on the probe run from its key's home position.
        let mut i = self.hash(&flow.key) as u32 as usize & self.mask;
        while self.index[i] != EMPTY {
            if self.index[i] as u32 == slot {
                self.delete_at(i);
                break;
            }
            i = (i + 1) & self.mask;
        }
        // The slot was taken, so it is not on the free stack and the stack has room.
        self.free[self.free_len] = slot;
        self.free_len += 1;
        self.len -= 1;
        Some(flow)
    }

    /// Backward-shift deletion: empties index position `hole`, moving later entries of the
    /// probe run back so that every entry stays reachable from its home position.
    fn delete_at(&mut self, mut hole: usize) {
        let mask = self.mask;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.index[j];
            if e == EMPTY {
                break;
            }
            let home = (e >> 32) as usize & mask;
            // The entry at j may fill the hole unless its home lies cyclically in
            // (hole, j]: then it would end up before its home.
            let home_after_hole = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !home_after_hole {
                self.index[hole] = e;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }

    /// Notes a TCP segment of the flow in `slot`: `flags` from its header, `from_client`
    /// its direction, `ack` its acknowledgment number. A client's SYN (re)starts the flow
    /// in `SynSeen` (a new connection on the same ports); the client's first ACK after it
    /// makes it `Established`; a FIN from either side is noted and makes it `Closing`, as
    /// does an RST. The backend's SYN-ACK changes nothing.
    pub fn observe_tcp(&mut self, slot: u32, flags: u8, from_client: bool, ack: u32, now_ms: u64) {
        let Some(f) = self.get_mut(slot) else {
            return;
        };
        f.last_seen_ms = now_ms;
        if f.state == FlowState::Udp {
            return;
        }
        if from_client && flags & tcp_flags::ACK != 0 {
            f.last_client_ack = ack;
        }
        if flags & tcp_flags::RST != 0 {
            f.state = FlowState::Closing;
        } else if flags & tcp_flags::SYN != 0 {
            if from_client && flags & tcp_flags::ACK == 0 {
                f.state = FlowState::SynSeen;
                f.client_fin = false;
                f.server_fin = false;
            }
        } else if flags & tcp_flags::FIN != 0 {
            if from_client {
                f.client_fin = true;
            } else {
                f.server_fin = true;
            }
            f.state = FlowState::Closing;
        } else if f.state == FlowState::SynSeen && from_client && flags & tcp_flags::ACK != 0 {
            f.state = FlowState::Established;
        }
    }

    /// Notes a packet of the (UDP) flow in `slot`.
    pub fn touch(&mut self, slot: u32, now_ms: u64) {
        if let Some(f) = self.get_mut(slot) {
            f.last_seen_ms = now_ms;
        }
    }

    /// Whether `flow` has been idle for its state's timeout at `now_ms`.
    pub fn is_expired(&self, flow: &Flow, now_ms: u64) -> bool {
        now_ms.saturating_sub(flow.last_seen_ms) >= self.timeouts.for_state(flow.state)
    }

    /// An incremental sweep: looks at the next `budget` slots (from where the last sweep
    /// stopped, wrapping around), removes the flows that have timed out and calls
    /// `on_expire` for each (the NAT decrements its backend's active count). Calling it
    /// with a small budget every loop keeps the cost per loop bounded; a flow is removed
    /// at most capacity/budget loops after its timeout. Returns the number removed.
    pub fn expire(
        &mut self,
        now_ms: u64,
        budget: usize,
        mut on_expire: impl FnMut(&Flow),
    ) -> usize {
        let cap = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(cap) {
            let slot = self.cursor;
            self.cursor = if slot + 1 == cap { 0 } else { slot + 1 };
            let expired = self.slots[slot]
                .as_ref()
                .is_some_and(|f| self.is_expired(f, now_ms));
            if expired {
                if let Some(f) = self.remove(slot as u32) {
                    on_expire(&f);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes every flow of `backend` (when it dies or is removed, before its index is
    /// reused) and calls `on_remove` for each (the NAT sends resets to TCP clients).
    /// Scans the whole table. Returns the number removed.
    pub fn drain_backend(&mut self, backend: u16, mut on_remove: impl FnMut(&Flow)) -> usize {
        let mut removed = 0;
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some_and(|f| f.backend == backend) {
                if let Some(f) = self.remove(slot as u32) {
                    on_remove(&f);
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PROTO_UDP;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const T: Timeouts = Timeouts {
        tcp_syn_ms: 5,
        tcp_established_ms: 300,
        tcp_closing_ms: 10,
        udp_ms: 30,
    };

    fn key(proto: u8, ip: u32, port: u16) -> FlowKey {
        FlowKey {
            proto,
            client_ip: ip,
            client_port: port,
            vip_port: 80,
        }
    }

    #[test]
    fn keys_of_both_directions_agree() {
        use crate::packet::{parse, write_tcp_rst};
        let mut frame = [0u8; 64];
        let (client, vip, backend) = ((0x0a00_0001, 40000), (0x0a00_0064, 80), (0x0a00_0099, 80));
        let n = write_tcp_rst(&mut frame, client, vip, 1, None).unwrap();
        let from_client = parse(&frame[..n]).unwrap();
        let n = write_tcp_rst(&mut frame, backend, client, 1, None).unwrap();
        let from_backend = parse(&frame[..n]).unwrap();
        let k = FlowKey::of_client_packet(&from_client);
        assert_eq!(k, key(PROTO_TCP, 0x0a00_0001, 40000));
        assert_eq!(FlowKey::of_backend_packet(&from_backend), k);
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = ConnTable::with_capacity(4, T, 1).unwrap();
        assert!(t.is_empty());
        let a = t.insert(key(6, 1, 1), 3, 100).unwrap();
        let b = t.insert(key(17, 1, 1), 4, 100).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.lookup(&key(6, 1, 1)), Some(a));
        assert_eq!(t.lookup(&key(17, 1, 1)), Some(b));
        assert_eq!(t.lookup(&key(6, 1, 2)), None);
        assert_eq!(t.get(a).unwrap().state, FlowState::SynSeen);
        assert_eq!(t.get(b).unwrap().state, FlowState::Udp);
        assert_eq!(t.get(b).unwrap().backend, 4);
        // Inserting a present key returns its slot and changes nothing.
        assert_eq!(t.insert(key(6, 1, 1), 9, 200), Ok(a));
        assert_eq!(t.get(a).unwrap().backend, 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(a).unwrap().key, key(6, 1, 1));
        assert_eq!(t.remove(a), None);
        assert_eq!(t.lookup(&key(6, 1, 1)), None);
        assert_eq!((t.len(), t.capacity()), (1, 4));
        assert_eq!(t.remove(u32::MAX), None);
        assert!(t.get(99).is_none());
    }

    #[test]
    fn full_table_refuses_and_keeps_flows() {
        let mut t = ConnTable::with_capacity(100, T, 7).unwrap();
        let index_ptr = t.index.as_ptr();
        for i in 0..100 {
            t.insert(key(6, i, 1000), i as u16, 0).unwrap();
        }
        assert_eq!(t.insert(key(6, 500, 1000), 0, 0), Err(TableFull));
        assert_eq!(TableFull.to_string(), "connection table full");
        for i in 0..100 {
            let s = t.lookup(&key(6, i, 1000)).unwrap();
            assert_eq!(t.get(s).unwrap().backend, i as u16);
        }
        // A present key is still "inserted" when full.
        assert!(t.insert(key(6, 5, 1000), 0, 0).is_ok());
        let s = t.lookup(&key(6, 5, 1000)).unwrap();
        t.remove(s);
        assert!(t.insert(key(6, 500, 1000), 0, 0).is_ok());
        assert_eq!(t.index.as_ptr(), index_ptr);
        let mut empty = ConnTable::with_capacity(0, T, 0).unwrap();
        assert_eq!(empty.insert(key(6, 1, 1), 0, 0), Err(TableFull));
        assert!(ConnTable::with_capacity(MAX_CAPACITY + 1, T, 0).is_err());
    }

    #[test]
    fn tcp_states() {
        use tcp_flags::*;
        let mut t = ConnTable::with_capacity(4, T, 1).unwrap();
        let s = t.insert(key(6, 1, 1), 0, 0).unwrap();
        t.observe_tcp(s, SYN, true, 0, 1);
        assert_eq!(t.get(s).unwrap().state, FlowState::SynSeen);
        t.observe_tcp(s, SYN | ACK, false, 101, 2);
        assert_eq!(t.get(s).unwrap().state, FlowState::SynSeen);
        assert_eq!(t.get(s).unwrap().last_client_ack, 0, "not from the client");
        t.observe_tcp(s, ACK, true, 5001, 3);
        let f = t.get(s).unwrap();
        assert_eq!(
            (f.state, f.last_client_ack, f.last_seen_ms),
            (FlowState::Established, 5001, 3)
        );
        t.observe_tcp(s, PSH | ACK, true, 6001, 4);
        assert_eq!(t.get(s).unwrap().last_client_ack, 6001);
        t.observe_tcp(s, FIN | ACK, false, 1, 5);
        let f = t.get(s).unwrap();
        assert_eq!(
            (f.state, f.client_fin, f.server_fin),
            (FlowState::Closing, false, true)
        );
        t.observe_tcp(s, FIN | ACK, true, 7001, 6);
        assert!(t.get(s).unwrap().client_fin);
        // A new connection on the same ports.
        t.observe_tcp(s, SYN, true, 0, 7);
        let f = t.get(s).unwrap();
        assert_eq!(
            (f.state, f.client_fin, f.server_fin),
            (FlowState::SynSeen, false, false)
        );
        t.observe_tcp(s, ACK, true, 1, 8);
        t.observe_tcp(s, RST, false, 0, 9);
        assert_eq!(t.get(s).unwrap().state, FlowState::Closing);
        // UDP flows only get touched.
        let u = t.insert(key(17, 1, 1), 0, 0).unwrap();
        t.observe_tcp(u, SYN, true, 0, 10);
        assert_eq!(t.get(u).unwrap().state, FlowState::Udp);
        t.touch(u, 11);
        assert_eq!(t.get(u).unwrap().last_seen_ms, 11);
        t.observe_tcp(77, SYN, true, 0, 1);
        t.touch(77, 1);
    }

    #[test]
    fn expire_removes_only_timed_out_flows() {
        use tcp_flags::*;
        let mut t = ConnTable::with_capacity(8, T, 3).unwrap();
        let syn = t.insert(key(6, 1, 1), 1, 0).unwrap(); // times out at 5
        let est = t.insert(key(6, 2, 1), 2, 0).unwrap();
        t.observe_tcp(est, ACK, true, 0, 0); // at 300
        let clo = t.insert(key(6, 3, 1), 3, 0).unwrap();
        t.observe_tcp(clo, RST, true, 0, 0); // at 10
        let udp = t.insert(key(PROTO_UDP, 4, 1), 4, 0).unwrap(); // at 30
        let mut gone = Vec::new();
        assert_eq!(t.expire(4, 8, |f| gone.push(f.backend)), 0);
        assert_eq!(t.expire(5, 8, |f| gone.push(f.backend)), 1);
        assert_eq!(gone, [1]);
        assert!(t.get(syn).is_none());
        t.touch(udp, 20); // now at 50
        t.expire(49, 8, |f| gone.push(f.backend));
        assert_eq!(gone, [1, 3]);
        t.expire(299, 8, |f| gone.push(f.backend));
        assert_eq!(gone, [1, 3, 4]);
        assert!(t.get(est).is_some());
        t.expire(300, 8, |f| gone.push(f.backend));
        assert_eq!(gone, [1, 3, 4, 2]);
        assert!(t.is_empty());
    }

    #[test]
    fn expire_sweeps_incrementally() {
        let mut t = ConnTable::with_capacity(10, T, 3).unwrap();
        for i in 0..10 {
            t.insert(key(PROTO_UDP, i, 1), 0, 0).unwrap();
        }
        // Slots 0..3 looked at, then 3..6, then 6..9, then 9, 0, 1 (already gone).
        assert_eq!(t.expire(100, 3, |_| {}), 3);
        assert_eq!(t.len(), 7);
        assert_eq!(t.expire(100, 3, |_| {}), 3);
        assert_eq!(t.expire(100, 3, |_| {}), 3);
        assert_eq!(t.expire(100, 3, |_| {}), 1);
        assert!(t.is_empty());
        assert_eq!(t.expire(100, usize::MAX, |_| {}), 0);
        assert_eq!(
            ConnTable::with_capacity(0, T, 0)
                .unwrap()
                .expire(1, 5, |_| {}),
            0
        );
    }

    #[test]
    fn drain_backend_removes_its_flows() {
        let mut t = ConnTable::with_capacity(64, T, 9).unwrap();
        for i in 0..60 {
            t.insert(key(6, i, 2), (i % 3) as u16, 0).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(t.drain_backend(1, |f| seen.push(f.key.client_ip)), 20);
        assert!(seen.iter().all(|ip| ip % 3 == 1));
        for i in 0..60 {
            assert_eq!(t.lookup(&key(6, i, 2)).is_some(), i % 3 != 1);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Lookup(u8),
        Remove(u8),
        RemoveSlot(u32),
        Touch(u8),
        Advance(u64),
        Expire(usize),
    }

    /// Keys from a small space (two protocols, 64 each), so that inserts of present keys,
    /// removals and refills happen often.
    fn key_of(k: u8) -> FlowKey {
        let proto = if k & 0x80 != 0 { PROTO_UDP } else { PROTO_TCP };
        key(proto, u32::from(k & 0x7) << 24 | 1, u16::from(k >> 3 & 0x7))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u16>()).prop_map(|(k, b)| Op::Insert(k, b)),
            2 => any::<u8>().prop_map(Op::Lookup),
            2 => any::<u8>().prop_map(Op::Remove),
            1 => (0u32..40).prop_map(Op::RemoveSlot),
            1 => any::<u8>().prop_map(Op::Touch),
            1 => (0u64..12).prop_map(Op::Advance),
            1 => (0usize..40).prop_map(Op::Expire),
        ]
    }

    #[derive(Debug, Clone, Copy)]
    struct Model {
        slot: u32,
        backend: u16,
        last_seen: u64,
        timeout: u64,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_a_hashmap(
            cap in 1usize..33,
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut t = ConnTable::with_capacity(cap, T, seed).unwrap();
            let mut m: HashMap<FlowKey, Model> = HashMap::new();
            let mut now = 0u64;
            let mut cursor = 0usize;
            for op in ops {
                match op {
                    Op::Insert(k, b) => {
                        let key = key_of(k);
                        let r = t.insert(key, b, now);
                        if let Some(e) = m.get(&key) {
                            prop_assert_eq!(r, Ok(e.slot));
                        } else if m.len() == cap {
                            prop_assert_eq!(r, Err(TableFull));
                        } else {
                            let slot = r.unwrap();
                            prop_assert!((slot as usize) < cap);
                            prop_assert!(m.values().all(|e| e.slot != slot));
                            let timeout = if key.proto == PROTO_TCP { T.tcp_syn_ms } else { T.udp_ms };
                            m.insert(key, Model { slot, backend: b, last_seen: now, timeout });
                        }
                    }
                    Op::Lookup(k) => {
                        let key = key_of(k);
                        prop_assert_eq!(t.lookup(&key), m.get(&key).map(|e| e.slot));
                    }
                    Op::Remove(k) => {
                        let key = key_of(k);
                        if let Some(e) = m.remove(&key) {
                            let f = t.remove(e.slot).unwrap();
                            prop_assert_eq!((f.key, f.backend), (key, e.backend));
                        }
                        prop_assert_eq!(t.lookup(&key), None);
                    }
                    Op::RemoveSlot(s) => {
                        let key = m.iter().find(|(_, e)| e.slot == s).map(|(k, _)| *k);
                        let f = t.remove(s);
                        prop_assert_eq!(f.map(|f| f.key), key);
                        if let Some(k) = key {
                            m.remove(&k);
                        }
                    }
                    Op::Touch(k) => {
                        if let Some(e) = m.get_mut(&key_of(k)) {
                            t.touch(e.slot, now);
                            e.last_seen = now;
                        }
                    }
                    Op::Advance(d) => now += d,
                    Op::Expire(budget) => {
                        let mut got = Vec::new();
                        let n = t.expire(now, budget, |f| got.push(f.key));
                        let mut want = Vec::new();
                        for _ in 0..budget.min(cap) {
                            let hit = m
                                .iter()
                                .find(|(_, e)| e.slot as usize == cursor && now - e.last_seen >= e.timeout)
                                .map(|(k, _)| *k);
                            if let Some(k) = hit {
                                m.remove(&k);
                                want.push(k);
                            }
                            cursor = (cursor + 1) % cap;
                        }
                        prop_assert_eq!(n, want.len());
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for (k, e) in &m {
                prop_assert_eq!(t.lookup(k), Some(e.slot));
                let f = t.get(e.slot).unwrap();
                prop_assert_eq!((f.key, f.backend, f.last_seen_ms), (*k, e.backend, e.last_seen));
            }
            let occupied = (0..cap as u32).filter(|&s| t.get(s).is_some()).count();
            prop_assert_eq!(occupied, m.len());
        }
    }
}
