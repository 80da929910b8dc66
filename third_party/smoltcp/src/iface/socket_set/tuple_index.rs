//! DockNet patch (PATCHES.md (24)): the TCP index's map from 4-tuple to socket, small
//! enough to stay in the caches at 10,000 connections, and able to prefetch.
//!
//! A `HashMap<(IpEndpoint, IpEndpoint), SocketHandle>` entry takes 48 bytes; at 10,000
//! connections the map's 16,384 buckets span 800 KiB, and each lookup missed the caches.
//! Here a tuple of IPv4 endpoints and its socket take 16 bytes, four to a cache line, in
//! an open-addressing table with linear probing (at most 70% full, so a lookup reads one
//! or two lines): 256 KiB at 10,000 connections. Tuples with an IPv6 address (none in
//! DockNet) stay in a `HashMap`.
//!
//! The hash is a multiply-fold of the tuple with two keys drawn per table from std's
//! random source, so a peer that picks its addresses and ports cannot aim them at one
//! run of the table without knowing the keys.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::vec::Vec;

use super::SocketHandle;
use crate::wire::{IpAddress, IpEndpoint};

/// (local, remote).
pub(super) type TupleKey = (IpEndpoint, IpEndpoint);

/// A slot: a tuple of IPv4 endpoints and the socket holding it, or empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    local_addr: u32,
    remote_addr: u32,
    local_port: u16,
    remote_port: u16,
    /// `EMPTY` if the slot is free.
    handle: u32,
}

const EMPTY: u32 = u32::MAX;

const FREE: Slot = Slot {
    local_addr: 0,
    remote_addr: 0,
    local_port: 0,
    remote_port: 0,
    handle: EMPTY,
};

/// Slots in a table's first allocation.
const MIN_SLOTS: usize = 64;

/// The tuple as a slot (with no handle), if both addresses are IPv4.
fn compact(key: &TupleKey) -> Option<Slot> {
    match (key.0.addr, key.1.addr) {
        (IpAddress::Ipv4(local), IpAddress::Ipv4(remote)) => Some(Slot {
            local_addr: local.to_bits(),
            remote_addr: remote.to_bits(),
            local_port: key.0.port,
            remote_port: key.1.port,
            handle: EMPTY,
        }),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn same_tuple(a: &Slot, b: &Slot) -> bool {
    a.local_addr == b.local_addr
        && a.remote_addr == b.remote_addr
        && a.local_port == b.local_port
        && a.remote_port == b.remote_port
}

/// Map from 4-tuple to the socket holding it.
#[derive(Debug)]
pub(super) struct TupleIndex {
    /// Power-of-two length (or empty before the first insert).
    slots: Vec<Slot>,
    /// Occupied slots.
    used: usize,
    keys: [u64; 2],
    /// Tuples with an IPv6 address.
    other: HashMap<TupleKey, SocketHandle>,
}

impl Default for TupleIndex {
    fn default() -> Self {
        let random = std::hash::RandomState::new();
        TupleIndex {
            slots: Vec::new(),
            used: 0,
            keys: [
                random.hash_one(0x5eed_u64) | 1,
                random.hash_one(0xcafe_u64) | 1,
            ],
            other: HashMap::new(),
        }
    }
}

impl TupleIndex {
    fn home(&self, s: &Slot) -> usize {
        let a = ((s.local_addr as u64) << 32 | s.remote_addr as u64) ^ self.keys[0];
        let b = ((s.local_port as u64) << 16 | s.remote_port as u64) ^ self.keys[1];
        let product = a as u128 * b as u128;
        let h = (product as u64) ^ ((product >> 64) as u64);
        h as usize & (self.slots.len() - 1)
    }

    /// Where `s`'s tuple is, or the free slot that ends its run.
    fn find(&self, s: &Slot) -> (usize, bool) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(s);
        loop {
            let at = &self.slots[i];
            if at.handle == EMPTY {
                return (i, false);
            }
            if same_tuple(at, s) {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// The socket holding `key`.
    pub(super) fn get(&self, key: &TupleKey) -> Option<SocketHandle> {
        let Some(s) = compact(key) else {
            return self.other.get(key).copied();
        };
        if self.used == 0 {
            return None;
        }
        match self.find(&s) {
            (i, true) => Some(SocketHandle(self.slots[i].handle as usize)),
            _ => None,
        }
    }

    /// Record that `h` holds `key`, unless another socket does: then false, and nothing
    /// changed.
    pub(super) fn insert_if_vacant(&mut self, key: TupleKey, h: SocketHandle) -> bool {
        if self.get(&key).is_some() {
            return false;
        }
        self.insert(key, h);
        true
    }

    /// Record that `h` holds `key` (in place of whichever socket did).
    pub(super) fn insert(&mut self, key: TupleKey, h: SocketHandle) {
        let Some(mut s) = compact(&key) else {
            self.other.insert(key, h);
            return;
        };
        // Handles index the socket storage: 2^32 - 1 sockets cannot exist.
        s.handle = u32::try_from(h.0)
            .ok()
            .filter(|&h| h != EMPTY)
            .expect("fewer than 2^32 - 1 sockets");
        if (self.used + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let (i, found) = self.find(&s);
        if !found {
            self.used += 1;
        }
        self.slots[i] = s;
    }

    /// Forget `key`, if `h` holds it.
    pub(super) fn remove_if_held_by(&mut self, key: &TupleKey, h: SocketHandle) {
        let Some(s) = compact(key) else {
            if self.other.get(key) == Some(&h) {
                self.other.remove(key);
            }
            return;
        };
        if self.used == 0 {
            return;
        }
        let (mut hole, found) = self.find(&s);
        if !found || self.slots[hole].handle as usize != h.0 {
            return;
        }
        // Backward-shift deletion: move later members of the run into the hole when their
        // home is not between the hole and them, so every run stays unbroken.
        let mask = self.slots.len() - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let next = self.slots[i];
            if next.handle == EMPTY {
                break;
            }
            let home = self.home(&next);
            // `next` may move to `hole` if its home is not cyclically in (hole, i].
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.slots[hole] = next;
                hole = i;
            }
        }
        self.slots[hole] = FREE;
        self.used -= 1;
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = core::mem::replace(&mut self.slots, std::vec![FREE; len]);
        for s in old.into_iter().filter(|s| s.handle != EMPTY) {
            let (i, _) = self.find(&s);
            self.slots[i] = s;
        }
    }

    /// Where a lookup of `key` starts reading, for a prefetch.
    pub(super) fn probe_start(&self, key: &TupleKey) -> Option<*const u8> {
        let s = compact(key)?;
        if self.used == 0 {
            return None;
        }
        Some(&self.slots[self.home(&s)] as *const Slot as *const u8)
    }

    /// Tuples held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.used + self.other.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Address;

    fn key(n: u32) -> TupleKey {
        (
            IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)), 80),
            IpEndpoint::new(
                IpAddress::Ipv4(Ipv4Address::from_bits(0x0a00_0000 | (n % 7))),
                (n / 7) as u16,
            ),
        )
    }

    /// Random inserts, replacements and removals against a `HashMap`, in a table small
    /// enough that runs wrap around its end and deletions shift long runs.
    #[test]
    fn matches_a_hash_map() {
        let mut index = TupleIndex::default();
        let mut model: HashMap<TupleKey, SocketHandle> = HashMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200_000u32 {
            let r = next();
            // Keys from a range that grows, then shrinks: the table grows and empties.
            let span = 1 + if round < 100_000 {
                round / 50
            } else {
                (200_000 - round) / 50
            };
            let k = key((r >> 8) as u32 % span);
            let h = SocketHandle((r >> 40) as usize % 5000);
            match r % 4 {
                0 | 1 => {
                    let vacant = !model.contains_key(&k);
                    assert_eq!(index.insert_if_vacant(k, h), vacant);
                    model.entry(k).or_insert(h);
                }
                2 => {
                    index.insert(k, h);
                    model.insert(k, h);
                }
                _ => {
                    let holder = model.get(&k).copied();
                    // Half the time by the holder, half by whichever handle `h` is.
                    let by = if r & 0x10 != 0 {
                        holder.unwrap_or(h)
                    } else {
                        h
                    };
                    index.remove_if_held_by(&k, by);
                    if holder == Some(by) {
                        model.remove(&k);
                    }
                }
            }
            assert_eq!(index.get(&k), model.get(&k).copied(), "round {round}");
            assert_eq!(index.len(), model.len(), "round {round}");
            if round % 1000 == 0 {
                for (k, h) in &model {
                    assert_eq!(index.get(k), Some(*h), "round {round}");
                }
            }
        }
    }

    #[cfg(feature = "proto-ipv6")]
    #[test]
    fn ipv6_tuples_are_kept_too() {
        use crate::wire::Ipv6Address;
        let mut index = TupleIndex::default();
        let k = (
            IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::LOCALHOST), 80),
            IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::LOCALHOST), 4000),
        );
        assert!(index.insert_if_vacant(k, SocketHandle(3)));
        assert!(!index.insert_if_vacant(k, SocketHandle(4)));
        assert_eq!(index.get(&k), Some(SocketHandle(3)));
        assert_eq!(index.probe_start(&k), None);
        index.remove_if_held_by(&k, SocketHandle(4));
        assert_eq!(index.get(&k), Some(SocketHandle(3)));
        index.remove_if_held_by(&k, SocketHandle(3));
        assert_eq!(index.get(&k), None);
    }
}
