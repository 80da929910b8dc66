//! [`TcpMap`]: an app's per-connection state, found by [`TcpId`] through the id's small
//! index ([`TcpId::index`]) in a vector. A lookup touches that entry alone, where a hash
//! map hashes and probes; at 10,000 connections the entry is a cache miss either way, the
//! probe another. An index is reused once its socket is freed, so each entry keeps its id
//! and a lookup by an older id finds nothing.

use crate::prefetch::prefetch_value;
use crate::TcpId;

/// Values by TCP connection (see the module doc).
pub struct TcpMap<T> {
    slots: Vec<Option<(TcpId, T)>>,
    len: usize,
}

impl<T> Default for TcpMap<T> {
    fn default() -> Self {
        TcpMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> TcpMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hold `value` for `id`, in place of whatever its index held (the value of `id`, or
    /// of an older connection whose socket is gone).
    pub fn insert(&mut self, id: TcpId, value: T) {
        let i = id.index();
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace((id, value)).is_none() {
            self.len += 1;
        }
    }

    /// Start loading `id`'s entry into the caches (see [`prefetch_value`]): an app that
    /// will visit a list of connections (those
    /// [`Engine::take_ready`](crate::Engine::take_ready) names) calls it a few entries
    /// ahead, so that at 10,000 connections an entry is in the cache when its turn comes
    /// rather than a wait for memory. A hint only: it reads nothing and changes nothing.
    pub fn prefetch(&self, id: TcpId) {
        if let Some(slot) = self.slots.get(id.index()) {
            prefetch_value(slot);
        }
    }

    pub fn get(&self, id: TcpId) -> Option<&T> {
        match self.slots.get(id.index())? {
            Some((held, v)) if *held == id => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: TcpId) -> Option<&mut T> {
        match self.slots.get_mut(id.index())? {
            Some((held, v)) if *held == id => Some(v),
            _ => None,
        }
    }

    /// Forget `id`'s value (not a later connection's that reuses its index).
    pub fn remove(&mut self, id: TcpId) -> Option<T> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.as_ref().is_some_and(|(held, _)| *held == id) {
            self.len -= 1;
            return slot.take().map(|(_, v)| v);
        }
        None
    }

    /// Keep the values for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(TcpId, &mut T) -> bool) {
        for slot in &mut self.slots {
            if slot.as_mut().is_some_and(|(id, v)| !keep(*id, v)) {
                *slot = None;
                self.len -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::SocketSet;
    use smoltcp::socket::tcp;

    #[test]
    fn ids_find_their_own_values_only() {
        // Three handles (indexes 0, 1, 2) from a real socket set.
        let mut set = SocketSet::new(Vec::new());
        let h: Vec<_> = (0..4)
            .map(|_| {
                set.add(tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0u8; 1]),
                    tcp::SocketBuffer::new(vec![0u8; 1]),
                ))
            })
            .collect();
        let (a, b, c) = (
            TcpId::for_test(h[0], 1),
            TcpId::for_test(h[1], 2),
            TcpId::for_test(h[2], 3),
        );
        let mut m = TcpMap::new();
        assert!(m.is_empty());
        m.insert(c, "c");
        m.insert(a, "a");
        m.insert(b, "b");
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m.get(a), m.get(b), m.get(c)),
            (Some(&"a"), Some(&"b"), Some(&"c"))
        );
        // Index 0 reused by a newer connection: the old id finds nothing.
        let a2 = TcpId::for_test(h[0], 4);
        assert_eq!(m.get(a2), None);
        m.insert(a2, "a2");
        assert_eq!(m.len(), 3, "the stale value was replaced");
        assert_eq!((m.get(a), m.get(a2)), (None, Some(&"a2")));
        // Hints only: any id, held, stale or past the end of the table, changes nothing.
        let far = TcpId::for_test(h[3], 9);
        for id in [a, a2, b, c, far] {
            m.prefetch(id);
        }
        assert_eq!((m.len(), m.get(a), m.get(a2)), (3, None, Some(&"a2")));
        assert_eq!(m.remove(a), None, "an old id removes nothing");
        assert_eq!(m.remove(a2), Some("a2"));
        assert_eq!(m.len(), 2);
        *m.get_mut(b).unwrap() = "B";
        m.retain(|id, v| {
            assert!(*v == "B" || *v == "c", "only live values are visited");
            id != c
        });
        assert_eq!((m.len(), m.get(b), m.get(c)), (1, Some(&"B"), None));
    }
}
