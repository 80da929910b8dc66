//! DockNet patch (PATCHES.md (12)): per-segment TCP lookup in O(1) and egress work
//! proportional to the sockets that have something to do.
//!
//! - **The TCP index.** Exact 4-tuple (local, remote) → the socket holding it, and local
//!   port → the sockets listening on it. A segment goes to the socket holding its
//!   4-tuple if that socket accepts it, else to the listening socket of lowest handle that
//!   accepts it, else the old walk over every socket decides (and what it finds is
//!   indexed). Every lookup is verified with `accepts`, so a stale entry costs a walk,
//!   never a wrong delivery. The index follows every change of a socket's state: sockets
//!   the caller reached mutably (`add`, `get_mut`, `iter_mut`) are re-indexed before the
//!   next lookup, and a socket is re-indexed right after it processed a segment or was
//!   dispatched. So the walk only runs for segments no socket accepts (answered with a
//!   reset), or for a second socket holding a 4-tuple another socket holds.
//! - **The egress schedule.** A TCP socket is dispatched only if it is *ready* (reached
//!   mutably by the caller, added, processed a segment, still had something to send, or
//!   waits for a neighbor) or its timer (`poll_at`) is due. Timer entries sit in a
//!   hashed wheel (deadlines up to 262 ms ahead, in 64 µs slots) or a heap (later ones)
//!   with lazy deletion (`Timers`), and a socket keeps at most one entry that counts
//!   (`Sched::queued_at`, PATCHES.md (22)): a later deadline does not add an entry while
//!   an earlier one is queued; when that entry comes due, the socket is made ready if its
//!   deadline (`Sched::timer_at`) has come, else its entry moves to the deadline. A
//!   connection that re-arms its retransmission timer with every request thus costs an
//!   entry per timeout period, not per request. (With an entry per request in one heap, at
//!   10,000 connections the heap outgrew the cache and each pop missed at every level;
//!   with one per socket it still held 10,000, 14 levels deep; the wheel appends to a
//!   slot and empties slots in order.)
//!   Other sockets (UDP, ICMP, ...) are dispatched every egress, as upstream.
//! - **TCP events.** Sockets that processed a segment, or whose state changed while they
//!   were dispatched, are listed once until `SocketSet::take_tcp_events`: what a
//!   run-to-completion application needs to visit instead of every connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::vec::Vec;

use super::{Item, SocketHandle, SocketSet, SocketStorage};
use crate::iface::Context;
use crate::socket::{PollAt, Socket, tcp};
use crate::time::Instant;
use crate::wire::{IpEndpoint, IpRepr, TcpRepr};

use super::tuple_index::{TupleIndex, TupleKey};

/// Where the index and the schedule hold one socket (kept in its `Meta`).
#[derive(Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Sched {
    /// The 4-tuple this socket claims: held in `SchedSet::tcp_by_tuple`, or listed in
    /// `SchedSet::shadowed` if another socket holds it.
    tuple_key: Option<TupleKey>,
    /// Listed in `SchedSet::shadowed`.
    shadowed: bool,
    /// The port under which `SchedSet::tcp_listening` holds this socket.
    listen_port: Option<u16>,
    /// Listed in `SchedSet::ready`.
    ready: bool,
    /// Listed in `SchedSet::unindexed`.
    unindexed: bool,
    /// When this socket's `poll_at` is due, if at a time.
    timer_at: Option<Instant>,
    /// The time of this socket's entry in `SchedSet::timers` that counts (at most one;
    /// never later than `timer_at`). Other entries of it there are stale.
    queued_at: Option<Instant>,
    /// Listed in `SchedSet::events`.
    event: bool,
    /// Holds a buffer of the hot receive pool and is listed in `RxPool::lent`.
    rx_hot: bool,
}

/// The index and the schedule of a socket set.
#[derive(Debug, Default)]
pub(crate) struct SchedSet {
    tcp_by_tuple: TupleIndex,
    /// Sockets claiming a 4-tuple another socket holds (a connect that reuses one; empty
    /// but for that): every lookup checks them too.
    shadowed: Vec<SocketHandle>,
    /// Unordered; a port has a handful (a listener with a backlog keeps several).
    tcp_listening: HashMap<u16, Vec<SocketHandle>>,
    /// TCP sockets the caller may have changed since the index last looked at them.
    unindexed: Vec<SocketHandle>,
    /// TCP sockets to dispatch, in order: an egress takes them from the front and puts
    /// those still ready at the back; when the device is full the rest simply wait.
    ready: VecDeque<SocketHandle>,
    /// How many more of `ready` the current egress may take (each socket at most once
    /// per egress, as upstream).
    egress_left: usize,
    /// TCP sockets' timer entries (see `Sched::queued_at`).
    timers: Timers,
    /// Timer entries come due, between `Timers::expire` and their processing (kept for
    /// its allocation).
    due: Vec<(Instant, SocketHandle)>,
    /// Sockets other than TCP, in the order they were added.
    others: Vec<SocketHandle>,
    /// TCP sockets to report in `take_tcp_events`.
    events: Vec<SocketHandle>,
    /// Receive storage that follows the data (PATCHES.md (23)).
    rx_pool: RxPool,
    /// Lookups that walked every socket (for tests).
    walks: u64,
    /// Each socket `egress_next` took, with the one it prefetched then (for tests).
    #[cfg(test)]
    prefetched: Vec<(SocketHandle, Option<SocketHandle>)>,
}

/// Most buffers the hot receive pool allocates: twice what a libOS engine round takes
/// from its rings (32 frames), so every socket that receives in a round can have one.
const RX_POOL_BUFFERS: usize = 64;

/// Receive storage that follows the data, not the connection (PATCHES.md (23)).
///
/// At 10,000 keep-alive connections each socket's receive buffer is out of the caches
/// (and its page out of the TLB) by the time its next segment comes, so copying a
/// request or an answer into it missed at every level, on both ends. A segment with data
/// for a socket whose receive buffer is empty now lands in a buffer that another socket
/// emptied moments ago: the socket trades its own (idle, cold) storage for the hot one
/// before it processes the segment, and once the application has read everything (at the
/// next egress) it trades back, for a cold buffer, and the hot one goes back on the stack.
/// Buffers are only ever traded while empty and for one of the same length, so what a
/// socket holds and announces does not change; the trade is a swap of two pointers.
#[derive(Default)]
struct RxPool {
    /// Buffers emptied by their last user, the most recent on top.
    hot: Vec<Vec<u8>>,
    /// The idle storage of sockets that hold a hot buffer (one per socket in `lent`, but
    /// for sockets removed while they held one).
    cold: Vec<Vec<u8>>,
    /// Length of every buffer in the pool: the receive capacity of the first socket that
    /// traded (chosen again once the pool holds none). Sockets with another capacity keep
    /// their own storage.
    size: usize,
    /// Buffers the pool allocated and holds or lends (at most `RX_POOL_BUFFERS`; one less
    /// for each socket removed while it held one: it took that buffer along).
    made: usize,
    /// Sockets holding a hot buffer.
    lent: Vec<SocketHandle>,
}

/// Width of a timer wheel slot, µs.
const TICK_US: i64 = 64;
/// Slots of the timer wheel: deadlines up to `TICK_US × WHEEL_SLOTS` (262 ms) ahead go
/// into the wheel, later ones into a heap.
const WHEEL_SLOTS: usize = 4096;

/// Timer entries by due time. Near ones in a hashed wheel (a slot per `TICK_US`): adding
/// an entry appends to its slot, and the slots that come due are emptied in order, so at
/// 10,000 connections that re-arm a timer per request nothing walks a heap of 10,000
/// entries out of the cache; far ones (long back-offs, TIME-WAIT) in a heap.
#[derive(Debug, Default)]
struct Timers {
    /// `WHEEL_SLOTS` slots once the first entry came (none before: most socket sets
    /// have no TCP timers). Slot `t % WHEEL_SLOTS` holds entries of tick `t` only, for
    /// `tick <= t < tick + WHEEL_SLOTS`.
    slots: Vec<Vec<(Instant, SocketHandle)>>,
    /// Every tick before this one has been swept (the clock seen by the last sweep;
    /// while the wheel holds entries it does not go back).
    tick: i64,
    /// Slots of ticks from `tick` up to this one are empty: where `earliest` and
    /// `prune_head` start looking.
    head: i64,
    /// Entries in `slots`.
    in_wheel: usize,
    /// Entries beyond the wheel's reach.
    far: BinaryHeap<Reverse<(Instant, SocketHandle)>>,
}

impl RxPool {
    /// Give `socket` a hot buffer for the data about to arrive, taking its idle storage.
    /// False (nothing changed) if its receive buffer holds data, its storage is borrowed
    /// or of another length than the pool's, or the pool has none hot left to give.
    fn lend(&mut self, socket: &mut tcp::Socket) -> bool {
        let Some(size) = socket.rx_storage_tradable() else {
            return false;
        };
        if size != self.size {
            if self.made > 0 {
                return false;
            }
            self.size = size;
        }
        let mut buf = match self.hot.pop() {
            Some(buf) => buf,
            None if self.made < RX_POOL_BUFFERS => {
                self.made += 1;
                vec![0; size]
            }
            None => return false,
        };
        let traded = socket.swap_rx_storage(&mut buf);
        debug_assert!(traded, "checked tradable above");
        if traded {
            self.cold.push(buf);
        } else {
            self.hot.push(buf);
        }
        traded
    }
}

/// Counts only: the buffers hold other connections' old bytes.
impl core::fmt::Debug for RxPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RxPool")
            .field("hot", &self.hot.len())
            .field("cold", &self.cold.len())
            .field("size", &self.size)
            .field("made", &self.made)
            .field("lent", &self.lent.len())
            .finish()
    }
}

fn tick_of(at: Instant) -> i64 {
    at.total_micros().div_euclid(TICK_US)
}

/// Move the entries of `slot` due at `now` to `due`; returns how many.
fn take_due(
    slot: &mut Vec<(Instant, SocketHandle)>,
    now: Instant,
    due: &mut Vec<(Instant, SocketHandle)>,
) -> usize {
    let before = slot.len();
    slot.retain(|&(at, h)| {
        let keep = at > now;
        if !keep {
            due.push((at, h));
        }
        keep
    });
    before - slot.len()
}

/// Ask the processor to start loading the cache line holding `p`.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of every x86_64 processor, and a prefetch is a hint: it reads
    // nothing into the program and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many sockets ahead of the one it dispatches an egress prefetches
/// (`SocketSet::egress_next`). DockNet patch (PATCHES.md (26)).
const EGRESS_PREFETCH_AHEAD: usize = 2;

/// Start loading every cache line of the socket at handle `h` (a hint).
fn prefetch_storage(sockets: &[SocketStorage], h: SocketHandle) {
    let Some(storage) = sockets.get(h.0) else {
        return;
    };
    let start = storage as *const SocketStorage as *const u8;
    let len = core::mem::size_of::<SocketStorage>();
    // From the line holding the first byte to the one holding the last.
    let skew = start as usize & 63;
    let line0 = start.wrapping_sub(skew);
    for offset in (0..skew + len).step_by(64) {
        prefetch(line0.wrapping_add(offset));
    }
}

fn slot_of(tick: i64) -> usize {
    tick.rem_euclid(WHEEL_SLOTS as i64) as usize
}

impl Timers {
    fn push(&mut self, at: Instant, h: SocketHandle) {
        if self.slots.is_empty() {
            self.slots = (0..WHEEL_SLOTS).map(|_| Vec::new()).collect();
        }
        // A deadline already past goes into the current slot: due at the next sweep.
        let t = tick_of(at).max(self.tick);
        if t - self.tick < WHEEL_SLOTS as i64 {
            self.slots[slot_of(t)].push((at, h));
            self.in_wheel += 1;
            self.head = self.head.max(self.tick).min(t);
        } else {
            self.far.push(Reverse((at, h)));
        }
    }

    /// Move the entries due at `now` (`at <= now`) to `due`.
    fn expire(&mut self, now: Instant, due: &mut Vec<(Instant, SocketHandle)>) {
        let now_tick = tick_of(now);
        if self.in_wheel == 0 {
            // Empty: follow the clock wherever it is (it may start below zero).
            self.tick = now_tick;
        } else if now_tick < self.tick {
            // The clock went back: only entries put in the current slot because their
            // time had passed can be due.
            self.in_wheel -= take_due(&mut self.slots[slot_of(self.tick)], now, due);
        } else {
            // Every slot at most once, however long since the last sweep.
            let last = now_tick.min(self.tick + WHEEL_SLOTS as i64 - 1);
            for t in self.head.max(self.tick)..=last {
                let slot = &mut self.slots[slot_of(t)];
                if slot.is_empty() {
                    continue;
                }
                self.in_wheel -= if t < now_tick {
                    let n = slot.len();
                    due.append(slot);
                    n
                } else {
                    // The current tick: what is due now; the rest stays for later.
                    take_due(slot, now, due)
                };
                if self.in_wheel == 0 {
                    break;
                }
            }
        }
        self.tick = self.tick.max(now_tick);
        self.head = self.head.max(self.tick);
        while let Some(&Reverse((at, h))) = self.far.peek() {
            if at > now {
                break;
            }
            self.far.pop();
            due.push((at, h));
        }
    }

    /// The earliest entry (possibly stale): the heap's first, or the earliest of the
    /// wheel's first non-empty slot.
    fn earliest(&self) -> Option<Instant> {
        let mut earliest = self.far.peek().map(|&Reverse((at, _))| at);
        if self.in_wheel > 0 {
            for t in self.head.max(self.tick)..self.tick + WHEEL_SLOTS as i64 {
                let slot = &self.slots[slot_of(t)];
                if let Some(at) = slot.iter().map(|&(at, _)| at).min() {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    break;
                }
            }
        }
        earliest
    }

    /// Drop the entries `live` says are stale from the front: from the earliest slot on,
    /// up to the first slot that keeps an entry (and the heap's, up to a live one), so
    /// that `earliest` is a time some socket waits for.
    fn prune_head(&mut self, mut live: impl FnMut(Instant, SocketHandle) -> bool) {
        let mut t = self.head.max(self.tick);
        while self.in_wheel > 0 && t < self.tick + WHEEL_SLOTS as i64 {
            let slot = &mut self.slots[slot_of(t)];
            if !slot.is_empty() {
                let before = slot.len();
                slot.retain(|&(at, h)| live(at, h));
                self.in_wheel -= before - slot.len();
                if !slot.is_empty() {
                    break;
                }
            }
            t += 1;
        }
        self.head = t;
        while let Some(&Reverse((at, h))) = self.far.peek() {
            if live(at, h) {
                break;
            }
            self.far.pop();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_wheel + self.far.len()
    }
}

fn as_tcp<'b, 'a>(socket: &'b Socket<'a>) -> Option<&'b tcp::Socket<'a>> {
    match socket {
        Socket::Tcp(s) => Some(s),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn slot<'b, 'a>(
    sockets: &'b mut [SocketStorage<'a>],
    handle: SocketHandle,
) -> Option<&'b mut Item<'a>> {
    sockets.get_mut(handle.0)?.inner.as_mut()
}

impl SchedSet {
    /// `item` was just added.
    pub(crate) fn added(&mut self, storage: &mut SocketStorage) {
        let item = storage.inner.as_mut().expect("just added");
        if as_tcp(&item.socket).is_some() {
            self.touched(item);
        } else {
            self.others.push(item.meta.handle);
        }
    }

    /// The caller reached `item` mutably: it may have changed (data queued or read,
    /// listen, connect, close, abort, ...).
    pub(crate) fn touched(&mut self, item: &mut Item) {
        if as_tcp(&item.socket).is_none() {
            return;
        }
        let (h, s) = (item.meta.handle, &mut item.meta.sched);
        if !s.ready {
            s.ready = true;
            self.ready.push_back(h);
        }
        if !s.unindexed {
            s.unindexed = true;
            self.unindexed.push(h);
        }
    }

    /// `item` left the set.
    pub(crate) fn removed(&mut self, item: &Item) {
        let h = item.meta.handle;
        if as_tcp(&item.socket).is_none() {
            self.others.retain(|&o| o != h);
            return;
        }
        let s = &item.meta.sched;
        if let Some(key) = s.tuple_key {
            self.drop_claim(key, s.shadowed, h);
        }
        if let Some(port) = s.listen_port {
            self.unhold_listen(port, h);
        }
    }

    fn drop_claim(&mut self, key: TupleKey, shadowed: bool, h: SocketHandle) {
        if shadowed {
            self.shadowed.retain(|&s| s != h);
        } else {
            self.tcp_by_tuple.remove_if_held_by(&key, h);
        }
    }

    fn unhold_listen(&mut self, port: u16, h: SocketHandle) {
        if let Some(list) = self.tcp_listening.get_mut(&port) {
            if let Some(i) = list.iter().position(|&l| l == h) {
                list.swap_remove(i);
            }
        }
    }

    /// During an egress, right after `egress_next` took a socket from `ready`: the socket
    /// this egress will take `EGRESS_PREFETCH_AHEAD` calls later, if it gets that far.
    fn egress_prefetch_target(&self) -> Option<SocketHandle> {
        if self.egress_left < EGRESS_PREFETCH_AHEAD {
            return None;
        }
        self.ready.get(EGRESS_PREFETCH_AHEAD - 1).copied()
    }

    fn mark_ready(&mut self, item: &mut Item) {
        if !item.meta.sched.ready {
            item.meta.sched.ready = true;
            self.ready.push_back(item.meta.handle);
        }
    }

    fn push_event(&mut self, item: &mut Item) {
        if !item.meta.sched.event {
            item.meta.sched.event = true;
            self.events.push(item.meta.handle);
        }
    }
}

impl<'a> SocketSet<'a> {
    /// Bring the index in line with `h`'s state.
    fn reindex(&mut self, h: SocketHandle) {
        let Some(item) = slot(&mut self.sockets, h) else {
            return;
        };
        let Some(socket) = as_tcp(&item.socket) else {
            return;
        };
        let state = socket.state();
        let tuple = match (socket.local_endpoint(), socket.remote_endpoint()) {
            (Some(local), Some(remote)) if state != tcp::State::Closed => Some((local, remote)),
            _ => None,
        };
        let listen_port = (state == tcp::State::Listen).then(|| socket.listen_endpoint().port);
        let m = &mut item.meta.sched;
        let sched = &mut self.sched;

        if m.listen_port != listen_port {
            if let Some(port) = m.listen_port {
                sched.unhold_listen(port, h);
            }
            if let Some(port) = listen_port {
                sched.tcp_listening.entry(port).or_default().push(h);
            }
            m.listen_port = listen_port;
        }

        if m.tuple_key == tuple {
            return;
        }
        if let Some(key) = m.tuple_key {
            sched.drop_claim(key, m.shadowed, h);
        }
        m.tuple_key = tuple;
        m.shadowed = false;
        if let Some(key) = tuple {
            if !sched.tcp_by_tuple.insert_if_vacant(key, h) {
                m.shadowed = true;
                sched.shadowed.push(h);
            }
        }
    }

    /// Re-index the sockets the caller reached mutably since the last lookup.
    fn sync_index(&mut self) {
        while let Some(h) = self.sched.unindexed.pop() {
            let Some(item) = slot(&mut self.sockets, h) else {
                continue;
            };
            if !item.meta.sched.unindexed {
                continue; // listed twice: its slot was freed and reused
            }
            item.meta.sched.unindexed = false;
            self.reindex(h);
        }
    }

    /// The TCP socket a segment is for: the one old smoltcp's walk would find, except that
    /// a socket holding the segment's 4-tuple comes before listening sockets (as Linux
    /// looks up established connections before listeners; the walk took whichever had the
    /// lower handle, so a repeated SYN could start a second handshake on a listener).
    pub(crate) fn tcp_lookup(
        &mut self,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Option<SocketHandle> {
        self.sync_index();
        let accepts = |sockets: &mut [SocketStorage<'a>], cx: &mut Context, h: SocketHandle| {
            slot(sockets, h)
                .and_then(|i| as_tcp(&i.socket))
                .is_some_and(|s| s.accepts(cx, ip_repr, repr))
        };
        let key = (
            IpEndpoint::new(ip_repr.dst_addr(), repr.dst_port),
            IpEndpoint::new(ip_repr.src_addr(), repr.src_port),
        );
        let holder = self.sched.tcp_by_tuple.get(&key);
        let mut best = holder.filter(|&h| accepts(&mut self.sockets, cx, h));
        // Of several sockets on one 4-tuple, the walk found the one of lowest handle.
        for &h in &self.sched.shadowed {
            if best.is_none_or(|b| h < b) && accepts(&mut self.sockets, cx, h) {
                best = Some(h);
            }
        }
        if let Some(h) = best {
            if holder.is_none() {
                self.promote(h, key);
            }
            return Some(h);
        }
        if let Some(listening) = self.sched.tcp_listening.get(&repr.dst_port) {
            let mut best: Option<SocketHandle> = None;
            for &h in listening {
                if best.is_none_or(|b| h < b) && accepts(&mut self.sockets, cx, h) {
                    best = Some(h);
                }
            }
            if best.is_some() {
                return best;
            }
        }
        self.sched.walks += 1;
        let found = self.sockets.iter().filter_map(|s| s.inner.as_ref()).find_map(|i| {
            as_tcp(&i.socket)
                .is_some_and(|s| s.accepts(cx, ip_repr, repr))
                .then_some(i.meta.handle)
        });
        if let Some(h) = found {
            self.reindex(h);
        }
        found
    }

    /// Shadowed socket `h` holds `key`, which no socket holds any more.
    fn promote(&mut self, h: SocketHandle, key: TupleKey) {
        let Some(item) = slot(&mut self.sockets, h) else {
            return;
        };
        if item.meta.sched.shadowed && item.meta.sched.tuple_key == Some(key) {
            item.meta.sched.shadowed = false;
            self.sched.shadowed.retain(|&s| s != h);
            self.sched.tcp_by_tuple.insert(key, h);
        }
    }

    /// Let TCP socket `h` (from `tcp_lookup`) process a segment.
    pub(crate) fn tcp_process(
        &mut self,
        h: SocketHandle,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Option<(IpRepr, TcpRepr<'static>)> {
        let item = slot(&mut self.sockets, h).expect("found by tcp_lookup");
        let Socket::Tcp(socket) = &mut item.socket else {
            unreachable!("tcp_lookup finds TCP sockets")
        };
        if !repr.payload.is_empty() && !item.meta.sched.rx_hot {
            if self.sched.rx_pool.lend(socket) {
                item.meta.sched.rx_hot = true;
                self.sched.rx_pool.lent.push(h);
            }
        }
        let reply = socket.process(cx, ip_repr, repr);
        self.sched.mark_ready(item);
        self.sched.push_event(item);
        self.reindex(h);
        reply
    }

    /// Number of lookups that walked every socket.
    #[cfg(test)]
    pub(crate) fn tcp_lookup_walks(&self) -> u64 {
        self.sched.walks
    }

    /// Sockets other than TCP (dispatched every egress): how many.
    pub(crate) fn others_len(&self) -> usize {
        self.sched.others.len()
    }

    /// The `i`th socket other than TCP.
    pub(crate) fn other_mut(&mut self, i: usize) -> Option<&mut Item<'a>> {
        let h = *self.sched.others.get(i)?;
        slot(&mut self.sockets, h)
    }

    /// Sockets holding a hot receive buffer whose application has read everything trade
    /// it back for idle storage (PATCHES.md (23)); the others keep it until they have.
    fn return_hot_rx(&mut self) {
        let pool = &mut self.sched.rx_pool;
        if pool.lent.is_empty() {
            return;
        }
        let sockets = &mut self.sockets;
        pool.lent.retain(|&h| {
            // A socket removed while it held a hot buffer took it along (a new socket in
            // its slot starts with `rx_hot` false): one idle buffer has no socket to go
            // back to.
            let Some(Item {
                meta,
                socket: Socket::Tcp(socket),
            }) = slot(sockets, h).filter(|i| i.meta.sched.rx_hot)
            else {
                pool.cold.pop();
                pool.made = pool.made.saturating_sub(1);
                return false;
            };
            if socket.rx_storage_tradable() != Some(pool.size) {
                return true; // still holds data the application has not read
            }
            let Some(mut buf) = pool.cold.pop() else {
                // Unreachable: each socket that borrowed left a cold buffer.
                debug_assert!(false, "no cold buffer for a lent socket");
                meta.sched.rx_hot = false;
                return false;
            };
            let traded = socket.swap_rx_storage(&mut buf);
            debug_assert!(traded, "checked tradable above");
            pool.hot.push(buf);
            meta.sched.rx_hot = false;
            false
        });
    }

    /// Start a TCP egress: move the sockets whose timer is due to the ready list; the
    /// egress takes the sockets ready now with `egress_next`.
    pub(crate) fn egress_begin(&mut self, now: Instant) {
        self.return_hot_rx();
        let mut due = core::mem::take(&mut self.sched.due);
        self.sched.timers.expire(now, &mut due);
        for (at, h) in due.drain(..) {
            let Some(item) = slot(&mut self.sockets, h) else {
                continue;
            };
            let m = &mut item.meta.sched;
            if m.queued_at != Some(at) {
                continue; // stale
            }
            m.queued_at = None;
            match m.timer_at {
                Some(t) if t <= now => {
                    m.timer_at = None;
                    self.sched.mark_ready(item);
                }
                // The deadline moved on since this entry was queued: queue it there.
                Some(t) => {
                    m.queued_at = Some(t);
                    self.sched.timers.push(t, h);
                }
                None => {}
            }
        }
        self.sched.due = due;
        self.sched.egress_left = self.sched.ready.len();
    }

    /// The next ready TCP socket of this egress; it stops being ready.
    pub(crate) fn egress_next(&mut self) -> Option<(SocketHandle, &mut Item<'a>)> {
        while self.sched.egress_left > 0 {
            self.sched.egress_left -= 1;
            let h = self.sched.ready.pop_front()?;
            // DockNet patch (PATCHES.md (26)): at 10,000 connections thousands of sockets
            // wait here while the device is full, and each is out of the caches by its
            // turn; ask for the one `EGRESS_PREFETCH_AHEAD` places on while this one sends.
            let ahead = self.sched.egress_prefetch_target();
            #[cfg(test)]
            self.sched.prefetched.push((h, ahead));
            if let Some(ahead) = ahead {
                prefetch_storage(&self.sockets, ahead);
            }
            // Skip a handle listed twice (its slot was freed and reused) or removed.
            let Some(item) = slot(&mut self.sockets, h) else {
                continue;
            };
            if item.meta.sched.ready {
                item.meta.sched.ready = false;
                // Looked up again: the loop cannot return its own borrow.
                return Some((h, slot(&mut self.sockets, h).expect("just found")));
            }
        }
        None
    }

    /// The device had no room while `h` was dispatched: it goes back to the front; the
    /// sockets after it were not taken and stay ready.
    pub(crate) fn egress_exhausted(&mut self, h: SocketHandle) {
        if let Some(item) = slot(&mut self.sockets, h) {
            if !item.meta.sched.ready {
                item.meta.sched.ready = true;
                self.sched.ready.push_front(h);
            }
        }
        self.sched.egress_left = 0;
    }

    /// After TCP socket `h` was dispatched (or skipped, waiting for a neighbor): re-index
    /// it, report a state change, and schedule it by its next `poll_at`.
    pub(crate) fn egress_done(
        &mut self,
        h: SocketHandle,
        state_before: tcp::State,
        poll_at: impl FnOnce(&Item<'a>) -> PollAt,
    ) {
        self.reindex(h);
        let Some(item) = slot(&mut self.sockets, h) else {
            return;
        };
        if as_tcp(&item.socket).is_some_and(|s| s.state() != state_before) {
            self.sched.push_event(item);
        }
        match poll_at(item) {
            // A socket waiting for a neighbor is checked every egress: the neighbor may
            // appear without the socket changing.
            _ if item.meta.waiting_for_neighbor() => self.sched.mark_ready(item),
            PollAt::Now => self.sched.mark_ready(item),
            PollAt::Time(at) => {
                let m = &mut item.meta.sched;
                m.timer_at = Some(at);
                // An entry at or before `at` already counts: it will look again then.
                if m.queued_at.is_none_or(|q| at < q) {
                    m.queued_at = Some(at);
                    self.sched.timers.push(at, h);
                }
            }
            PollAt::Ingress => item.meta.sched.timer_at = None,
        }
    }

    /// End a TCP egress: drop timer entries from the front that are stale or whose
    /// socket no longer waits for a time, so `poll_at` sees one a socket waits for (it may
    /// come before that socket's deadline: then the wake-up only moves the entry).
    pub(crate) fn egress_end(&mut self) {
        self.sched.egress_left = 0;
        let sockets = &mut self.sockets;
        self.sched.timers.prune_head(|at, h| {
            let Some(item) = slot(sockets, h) else {
                return false;
            };
            let m = &mut item.meta.sched;
            if m.queued_at != Some(at) {
                return false; // stale
            }
            if m.timer_at.is_none() {
                m.queued_at = None; // nothing to wait for: a new deadline queues anew
                return false;
            }
            true
        });
    }

    /// The earliest `poll_at` over the sockets: computed for other sockets and ready TCP
    /// sockets (which may have changed), read from the timers for the rest.
    pub(crate) fn earliest_poll_at(
        &self,
        mut poll_at: impl FnMut(&Item<'a>) -> PollAt,
    ) -> Option<Instant> {
        let mut earliest = self.sched.timers.earliest();
        let listed = self.sched.others.iter().chain(self.sched.ready.iter());
        for &h in listed {
            let Some(item) = self.sockets.get(h.0).and_then(|s| s.inner.as_ref()) else {
                continue;
            };
            let at = match poll_at(item) {
                PollAt::Now => Instant::from_millis(0),
                PollAt::Time(at) => at,
                PollAt::Ingress => continue,
            };
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
        earliest
    }

    /// DockNet patch (PATCHES.md (24)): segments for these (local, remote) endpoints come
    /// soon: start loading the index lines that name their sockets into the caches. With
    /// [`SocketSet::prefetch_tcp_socket`] a few segments ahead, processing a segment finds
    /// its socket in the caches rather than waiting for memory (at 10,000 connections
    /// every socket is out of the caches by its next segment), as DPDK's pipelined
    /// lookups do. A hint only: what any segment reaches does not depend on it.
    pub fn prefetch_tcp_index(&self, tuples: &[(IpEndpoint, IpEndpoint)]) {
        for key in tuples {
            if let Some(p) = self.sched.tcp_by_tuple.probe_start(key) {
                prefetch(p);
            }
        }
    }

    /// DockNet patch (PATCHES.md (24)): a segment for `tuple`, (local, remote), comes
    /// soon: start loading its socket into the caches (see
    /// [`SocketSet::prefetch_tcp_index`]).
    pub fn prefetch_tcp_socket(&self, tuple: &(IpEndpoint, IpEndpoint)) {
        if let Some(h) = self.sched.tcp_by_tuple.get(tuple) {
            prefetch_storage(&self.sockets, h);
        }
    }

    /// DockNet patch: TCP sockets that processed a segment, or whose state changed while
    /// they were sending (a retransmission timeout, TIME-WAIT ending), since the last call,
    /// each once, appended to `out`. What may have become readable, writable or closed;
    /// a socket the caller changed itself is not listed for that.
    pub fn take_tcp_events(&mut self, out: &mut Vec<SocketHandle>) {
        for h in self.sched.events.drain(..) {
            let Some(item) = slot(&mut self.sockets, h) else {
                continue;
            };
            if item.meta.sched.event {
                item.meta.sched.event = false;
                out.push(h);
            }
        }
    }
}

#[cfg(all(test, feature = "proto-ipv4", feature = "medium-ip"))]
mod tests {
    use std::vec;

    use super::*;
    use crate::iface::{Config, Interface, SocketSet};
    use crate::phy::{Loopback, Medium};
    use crate::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Repr, TcpControl, TcpSeqNumber};

    const LOCAL: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

    fn iface() -> (Interface, Loopback) {
        let mut device = Loopback::new(Medium::Ip);
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(LOCAL), 8)).unwrap();
        });
        (iface, device)
    }

    fn socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64]),
            tcp::SocketBuffer::new(vec![0; 64]),
        )
    }

    fn remote(i: u8, port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::v4(10, 0, 1, i), port)
    }

    /// A segment from `from` to local port `port`; `syn`: a SYN without ACK, else an ACK.
    fn segment(from: IpEndpoint, port: u16, syn: bool) -> (IpRepr, TcpRepr<'static>) {
        let IpAddress::Ipv4(src_addr) = from.addr else {
            unreachable!("IPv4 peers only")
        };
        let ip = IpRepr::Ipv4(Ipv4Repr {
            src_addr,
            dst_addr: LOCAL,
            next_header: IpProtocol::Tcp,
            payload_len: 20,
            hop_limit: 64,
        });
        let tcp = TcpRepr {
            src_port: from.port,
            dst_port: port,
            control: if syn { TcpControl::Syn } else { TcpControl::None },
            seq_number: TcpSeqNumber(1),
            ack_number: (!syn).then_some(TcpSeqNumber(1)),
            window_len: 64,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        (ip, tcp)
    }

    /// What smoltcp's walk finds, except that a socket holding the 4-tuple comes first.
    fn reference(
        sockets: &SocketSet,
        cx: &mut Context,
        ip: &IpRepr,
        tcp: &TcpRepr,
    ) -> Option<SocketHandle> {
        let key = (
            IpEndpoint::new(ip.dst_addr(), tcp.dst_port),
            IpEndpoint::new(ip.src_addr(), tcp.src_port),
        );
        let accepting: Vec<(SocketHandle, Option<TupleKey>)> = sockets
            .iter()
            .filter_map(|(h, s)| match s {
                Socket::Tcp(t) if t.accepts(cx, ip, tcp) => {
                    Some((h, t.local_endpoint().zip(t.remote_endpoint())))
                }
                _ => None,
            })
            .collect();
        let exact = accepting.iter().find(|(_, k)| *k == Some(key));
        exact.or(accepting.first()).map(|&(h, _)| h)
    }

    fn connect(sockets: &mut SocketSet, cx: &mut Context, h: SocketHandle, to: IpEndpoint, port: u16) {
        let s = sockets.get_mut::<tcp::Socket>(h);
        s.abort();
        s.connect(cx, to, port).unwrap();
    }

    #[test]
    fn exact_match_needs_no_walk() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let handles: Vec<_> = (0..100u16)
            .map(|i| {
                let h = sockets.add(socket());
                connect(&mut sockets, cx, h, remote(1, 1000 + i), 80);
                h
            })
            .collect();
        for (i, &h) in handles.iter().enumerate().rev() {
            let (ip, tcp) = segment(remote(1, 1000 + i as u16), 80, false);
            assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(h));
        }
        assert_eq!(sockets.tcp_lookup_walks(), 0);
        // No socket: the walk finds none, and a reset is the answer.
        let (ip, tcp) = segment(remote(2, 1000), 80, false);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), None);
        assert_eq!(sockets.tcp_lookup_walks(), 1);
    }

    #[test]
    fn connection_before_listener_on_one_port() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let mut listener = socket();
        listener.listen(80).unwrap();
        let l = sockets.add(listener);
        let c = sockets.add(socket());
        connect(&mut sockets, cx, c, remote(1, 1000), 80);
        // A repeated SYN of the connection goes to it, not to the listener (lower handle).
        let (ip, tcp) = segment(remote(1, 1000), 80, true);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(c));
        // Another peer's SYN goes to the listener; an ACK from it to nobody.
        let (ip, tcp) = segment(remote(1, 1001), 80, true);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(l));
        let (ip, tcp) = segment(remote(1, 1001), 80, false);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), None);
        assert_eq!(sockets.tcp_lookup_walks(), 1);
    }

    #[test]
    fn lowest_listener_first_and_relisten() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let ls: Vec<_> = (0..3)
            .map(|_| {
                let mut s = socket();
                s.listen(80).unwrap();
                sockets.add(s)
            })
            .collect();
        let (ip, tcp) = segment(remote(1, 1000), 80, true);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(ls[0]));
        sockets.get_mut::<tcp::Socket>(ls[0]).abort();
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(ls[1]));
        sockets.get_mut::<tcp::Socket>(ls[0]).listen(80).unwrap();
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(ls[0]));
        // A listener that took a SYN holds the 4-tuple from then on.
        let (reply, _) = (sockets.tcp_process(ls[0], cx, &ip, &tcp), ());
        assert!(reply.is_none()); // the SYN-ACK goes out at egress
        assert_eq!(sockets.get::<tcp::Socket>(ls[0]).state(), tcp::State::SynReceived);
        let (ip2, tcp2) = segment(remote(1, 1001), 80, true);
        assert_eq!(sockets.tcp_lookup(cx, &ip2, &tcp2), Some(ls[1]));
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(ls[0]));
        assert_eq!(sockets.tcp_lookup_walks(), 0);
    }

    #[test]
    fn closed_removed_and_reused_sockets() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let a = sockets.add(socket());
        connect(&mut sockets, cx, a, remote(1, 1000), 80);
        let (ip, tcp) = segment(remote(1, 1000), 80, false);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(a));
        // Closed: found by nobody.
        sockets.get_mut::<tcp::Socket>(a).abort();
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), None);
        // Reused for another peer.
        connect(&mut sockets, cx, a, remote(1, 1001), 80);
        let (ip2, tcp2) = segment(remote(1, 1001), 80, false);
        assert_eq!(sockets.tcp_lookup(cx, &ip2, &tcp2), Some(a));
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), None);
        // Removed; its slot reused by a socket with the old 4-tuple.
        sockets.remove(a);
        assert_eq!(sockets.tcp_lookup(cx, &ip2, &tcp2), None);
        let b = sockets.add(socket());
        assert_eq!(a, b);
        connect(&mut sockets, cx, b, remote(1, 1000), 80);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(b));
        assert_eq!(sockets.tcp_lookup(cx, &ip2, &tcp2), None);
    }

    #[test]
    fn two_sockets_on_one_tuple() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let a = sockets.add(socket());
        let b = sockets.add(socket());
        // b first, then a: a is found, as the walk would find it first.
        connect(&mut sockets, cx, b, remote(1, 1000), 80);
        connect(&mut sockets, cx, a, remote(1, 1000), 80);
        let (ip, tcp) = segment(remote(1, 1000), 80, false);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(a));
        sockets.remove(a);
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(b));
        assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), Some(b));
        assert_eq!(sockets.tcp_lookup_walks(), 0);
    }

    /// Random listens, connects, aborts, removes and adds; every lookup must agree with
    /// the walk (connection before listener).
    #[test]
    fn agrees_with_the_walk() {
        let (mut iface, _dev) = iface();
        let cx = iface.context();
        let mut sockets = SocketSet::new(vec![]);
        let mut live: Vec<SocketHandle> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            match next(10) {
                0 | 1 if live.len() < 40 => live.push(sockets.add(socket())),
                2 if !live.is_empty() => {
                    let h = live.swap_remove(next(live.len() as u64) as usize);
                    sockets.remove(h);
                }
                3 | 4 if !live.is_empty() => {
                    let h = live[next(live.len() as u64) as usize];
                    let port = 80 + next(2) as u16;
                    let to = remote(1 + next(2) as u8, 1000 + next(4) as u16);
                    connect(&mut sockets, cx, h, to, port);
                }
                5 if !live.is_empty() => {
                    let h = live[next(live.len() as u64) as usize];
                    let s = sockets.get_mut::<tcp::Socket>(h);
                    s.abort();
                    s.listen(80 + next(2) as u16).unwrap();
                }
                6 if !live.is_empty() => {
                    let h = live[next(live.len() as u64) as usize];
                    sockets.get_mut::<tcp::Socket>(h).abort();
                }
                _ => {
                    let from = remote(1 + next(2) as u8, 1000 + next(4) as u16);
                    let (ip, tcp) = segment(from, 80 + next(2) as u16, next(2) == 0);
                    let want = reference(&sockets, cx, &ip, &tcp);
                    assert_eq!(sockets.tcp_lookup(cx, &ip, &tcp), want, "{from} {tcp}");
                }
            }
        }
    }

    /// Egress over a loopback: a listener and many clients exchange data; at every step
    /// `poll_at` is never later than upstream's walk over every socket, and everything
    /// arrives.
    #[test]
    fn egress_schedule_delivers_and_keeps_timers() {
        let (mut iface, mut dev) = iface();
        let mut sockets = SocketSet::new(vec![]);
        let mut servers = Vec::new();
        for _ in 0..20 {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            s.listen(80).unwrap();
            servers.push(sockets.add(s));
        }
        let mut clients = Vec::new();
        for i in 0..20u16 {
            let h = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            ));
            let cx = iface.context();
            sockets
                .get_mut::<tcp::Socket>(h)
                .connect(cx, IpEndpoint::new(IpAddress::Ipv4(LOCAL), 80), 40000 + i)
                .unwrap();
            clients.push(h);
        }
        let upstream_poll_at = |iface: &mut Interface, sockets: &SocketSet, now: Instant| {
            sockets
                .iter()
                .filter_map(|(_, s)| match s.poll_at(iface.context()) {
                    PollAt::Now => Some(Instant::ZERO),
                    PollAt::Time(t) => Some(t),
                    PollAt::Ingress => None,
                })
                .min()
                .map(|t| t.max(now))
        };
        let mut now = Instant::ZERO;
        let mut received = vec![0usize; servers.len()];
        let mut sent = 0;
        for round in 0..2000 {
            iface.poll(now, &mut dev, &mut sockets);
            for (i, &h) in servers.iter().enumerate() {
                if sockets.get::<tcp::Socket>(h).can_recv() {
                    let s = sockets.get_mut::<tcp::Socket>(h);
                    received[i] += s.recv(|d| (d.len(), d.len())).unwrap();
                }
            }
            if round < 100 {
                for &h in &clients {
                    let s = sockets.get_mut::<tcp::Socket>(h);
                    if s.can_send() {
                        sent += s.send_slice(&[7; 100]).unwrap();
                    }
                }
            }
            let ours = iface.poll_at(now, &sockets).map(|t| t.max(now));
            let upstream = upstream_poll_at(&mut iface, &sockets, now);
            // Never later than a socket's deadline; possibly earlier (a queued entry
            // that only moves when it comes due), even with no deadline at all.
            assert!(
                upstream.is_none_or(|u| ours.is_some_and(|o| o <= u)),
                "round {round}: poll_at {ours:?}, upstream {upstream:?}"
            );
            now = match ours {
                Some(t) if t > now => t,
                _ => now + crate::time::Duration::from_micros(100),
            };
        }
        assert!(sent > 20 * 50 * 100, "sent {sent}");
        assert_eq!(received.iter().sum::<usize>(), sent);
        // Quiet: the early entries come due once each and are gone, no endless wake-ups.
        assert_eq!(upstream_poll_at(&mut iface, &sockets, now), None);
        let mut wakes = 0;
        while let Some(t) = iface.poll_at(now, &sockets) {
            wakes += 1;
            assert!(wakes <= 40, "still waking at {t:?}");
            now = t.max(now + crate::time::Duration::from_micros(1));
            iface.poll(now, &mut dev, &mut sockets);
        }
    }

    /// A loopback that takes at most `left` frames from `transmit` (replies made while
    /// receiving are not counted), as a DockNet ring that fills.
    struct Budget {
        inner: Loopback,
        left: usize,
    }

    impl crate::phy::Device for Budget {
        type RxToken<'a> = <Loopback as crate::phy::Device>::RxToken<'a>;
        type TxToken<'a> = <Loopback as crate::phy::Device>::TxToken<'a>;

        fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
            self.inner.receive(now)
        }

        fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            self.inner.transmit(now)
        }

        fn capabilities(&self) -> crate::phy::DeviceCapabilities {
            self.inner.capabilities()
        }
    }

    #[test]
    fn a_full_device_keeps_the_dispatch_order() {
        // Change (26) prefetches the sockets an egress will dispatch next; what it
        // dispatches, and in which order, must not change. 40 connections send in a
        // scrambled order through a device that takes 3 frames per egress: their
        // segments leave in the order the sockets became ready, each once.
        let (mut iface, loopback) = iface();
        let mut dev = Budget {
            inner: loopback,
            left: usize::MAX,
        };
        let mut sockets = SocketSet::new(vec![]);
        for _ in 0..40 {
            let mut s = socket();
            s.listen(80).unwrap();
            sockets.add(s);
        }
        let mut clients = Vec::new();
        for i in 0..40u16 {
            let h = sockets.add(socket());
            let cx = iface.context();
            sockets
                .get_mut::<tcp::Socket>(h)
                .connect(cx, IpEndpoint::new(IpAddress::Ipv4(LOCAL), 80), 40000 + i)
                .unwrap();
            clients.push(h);
        }
        let mut now = Instant::ZERO;
        for _ in 0..20 {
            iface.poll(now, &mut dev, &mut sockets);
            now += crate::time::Duration::from_millis(1);
        }
        assert!(clients
            .iter()
            .all(|&h| sockets.get::<tcp::Socket>(h).state() == tcp::State::Established));
        assert!(dev.inner.queue.is_empty());
        sockets.sched.prefetched.clear();
        // Ready in this order: 0, 7, 14, ... (mod 40).
        let order: Vec<u16> = (0..40u16).map(|i| (i * 7) % 40).collect();
        for &i in &order {
            sockets
                .get_mut::<tcp::Socket>(clients[usize::from(i)])
                .send_slice(b"hello")
                .unwrap();
        }
        let mut left_in_order = Vec::new();
        for _ in 0..40 {
            dev.left = 3;
            iface.poll_egress(now, &mut dev, &mut sockets);
            while let Some(frame) = dev.inner.queue.pop_front() {
                let ip = crate::wire::Ipv4Packet::new_checked(&frame[..]).unwrap();
                let tcp = crate::wire::TcpPacket::new_checked(ip.payload()).unwrap();
                assert_eq!(tcp.payload(), b"hello");
                left_in_order.push(tcp.src_port() - 40000);
            }
        }
        assert_eq!(left_in_order, order);
        // Each prefetch named the socket dispatched two places later, and none was made
        // for the last two. A socket taken back as the device filled is taken again
        // first by the next egress (listed twice in a row).
        let prefetched = core::mem::take(&mut sockets.sched.prefetched);
        let mut taken: Vec<SocketHandle> = Vec::new();
        for (h, _) in &prefetched {
            if taken.last() != Some(h) {
                taken.push(*h);
            }
        }
        let expected: Vec<SocketHandle> =
            order.iter().map(|&i| clients[usize::from(i)]).collect();
        assert_eq!(taken, expected, "dispatch order as seen by egress_next");
        for (k, (h, ahead)) in prefetched.iter().enumerate() {
            let i = expected.iter().position(|x| x == h).unwrap();
            assert_eq!(
                expected.get(i + EGRESS_PREFETCH_AHEAD),
                ahead.as_ref(),
                "take {k}: {h:?} prefetched {ahead:?}"
            );
        }
        assert!(prefetched.iter().filter(|(_, a)| a.is_some()).count() >= 38);
    }

    #[test]
    fn timer_wheel_matches_a_sorted_list() {
        // Random entries near and far (and in the past), swept at random times, some
        // after long gaps: each sweep yields exactly the entries due, and `earliest` is
        // the earliest left.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut timers = Timers::default();
        let mut model: Vec<(Instant, SocketHandle)> = Vec::new();
        let mut due = Vec::new();
        // Below zero at first (smoltcp's clock may start anywhere).
        let mut now = Instant::from_micros(-1_000_000);
        for round in 0..20_000 {
            for _ in 0..rand(4) {
                let ahead = match rand(10) {
                    0 => -(rand(5_000) as i64),
                    1 => 200_000 + rand(2_000_000) as i64,
                    _ => rand(300_000) as i64,
                };
                let at = Instant::from_micros(now.total_micros() + ahead);
                let e = (at, SocketHandle(rand(50) as usize));
                timers.push(e.0, e.1);
                model.push(e);
            }
            // As `poll_at` reads it right after `egress_done` pushed.
            assert_eq!(timers.earliest(), model.iter().map(|&(at, _)| at).min(), "round {round}");
            now = match rand(50) {
                // Now and then the clock goes back a little.
                0 => Instant::from_micros(now.total_micros() - rand(500) as i64),
                1 => now + crate::time::Duration::from_micros(400_000 + rand(1_000_000)),
                _ => now + crate::time::Duration::from_micros(rand(300)),
            };
            timers.expire(now, &mut due);
            let mut want: Vec<_> = model.iter().copied().filter(|&(at, _)| at <= now).collect();
            model.retain(|&(at, _)| at > now);
            want.sort();
            due.sort();
            assert_eq!(due, want, "round {round}");
            due.clear();
            assert_eq!(timers.len(), model.len());
            assert_eq!(timers.earliest(), model.iter().map(|&(at, _)| at).min(), "round {round}");
        }
    }

    #[test]
    fn a_quiet_connection_leaves_no_timer_to_wake_for() {
        // DockNet's timers: 5 ms minimum RTO, 1 ms ACK delay. After a request and its
        // answer are acknowledged nothing waits, so `poll_at` must say so: the entries
        // superseded on the way (an RTO entry behind an earlier ACK-delay one) must not
        // wake the caller.
        let (mut iface, mut dev) = iface();
        let mut sockets = SocketSet::new(vec![]);
        let ms = crate::time::Duration::from_millis;
        let mut server = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        server.listen(80).unwrap();
        let mut client = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        for s in [&mut server, &mut client] {
            s.set_rto_bounds(ms(5), ms(100));
            s.set_ack_delay(Some(ms(1)));
            s.set_nagle_enabled(false);
        }
        let server = sockets.add(server);
        let client = sockets.add(client);
        let cx = iface.context();
        sockets
            .get_mut::<tcp::Socket>(client)
            .connect(cx, IpEndpoint::new(IpAddress::Ipv4(LOCAL), 80), 40000)
            .unwrap();
        let mut now = Instant::ZERO;
        let (mut asked, mut answered, mut got) = (false, false, false);
        // Until the answer is in, then 2 ms more (the delayed ACKs go out), well before
        // the 5 ms the superseded retransmission entries wait for.
        let mut after = 0;
        while after < 20 {
            assert!(now < Instant::from_millis(500), "no answer");
            after += usize::from(got);
            iface.poll(now, &mut dev, &mut sockets);
            let c = sockets.get_mut::<tcp::Socket>(client);
            if c.may_send() && !asked {
                c.send_slice(b"request").unwrap();
                asked = true;
            }
            if c.can_recv() {
                c.recv(|d| (d.len(), ())).unwrap();
                got = true;
            }
            let s = sockets.get_mut::<tcp::Socket>(server);
            if s.can_recv() {
                s.recv(|d| (d.len(), ())).unwrap();
                s.send_slice(b"answer").unwrap();
                answered = true;
            }
            now += crate::time::Duration::from_micros(100);
        }
        assert!(asked && answered && got);
        iface.poll(now, &mut dev, &mut sockets);
        assert_eq!(iface.poll_at(now, &sockets), None, "a wake-up with nothing to do");
    }

    #[test]
    fn one_timer_entry_per_socket_while_it_rearms() {
        // A connection that sends a little, gets it acknowledged, and sends again re-arms
        // its retransmission timer every time; the heap must not grow with each.
        let (mut iface, mut dev) = iface();
        let mut sockets = SocketSet::new(vec![]);
        let mut server = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        server.listen(80).unwrap();
        server.set_ack_delay(None);
        let server = sockets.add(server);
        let client = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        ));
        let cx = iface.context();
        sockets
            .get_mut::<tcp::Socket>(client)
            .connect(cx, IpEndpoint::new(IpAddress::Ipv4(LOCAL), 80), 40000)
            .unwrap();
        let mut now = Instant::ZERO;
        let step = crate::time::Duration::from_micros(50);
        let mut exchanges = 0;
        for _ in 0..4000 {
            iface.poll(now, &mut dev, &mut sockets);
            let s = sockets.get_mut::<tcp::Socket>(server);
            if s.can_recv() {
                s.recv(|d| (d.len(), d.len())).unwrap();
            }
            let c = sockets.get_mut::<tcp::Socket>(client);
            if c.may_send() && c.send_queue() == 0 {
                c.send_slice(b"request").unwrap();
                exchanges += 1;
            }
            assert!(
                sockets.sched.timers.len() <= 8,
                "{} timer entries after {exchanges} exchanges",
                sockets.sched.timers.len()
            );
            now += step;
        }
        assert!(exchanges > 1000, "{exchanges} exchanges");
    }

    /// Sockets trade their idle receive storage for hot buffers while data passes
    /// (PATCHES.md (23)): every byte arrives, in order, whether the application reads all
    /// or leaves some behind; with more sockets receiving at once than the pool has
    /// buffers, with sockets removed while they hold a pool buffer (their slot reused at
    /// once) and one socket whose buffer has another length. The pool's count stays
    /// exact, and once everything is read every hot buffer is back.
    #[test]
    fn hot_receive_buffers_follow_the_data() {
        const PAIRS: usize = 80;
        let (mut iface, mut dev) = iface();
        let mut sockets = SocketSet::new(vec![]);
        let mut servers = Vec::new();
        for i in 0..PAIRS {
            // One server of another size: it keeps its own storage.
            let size = if i == 5 { 3000 } else { 4096 };
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; size]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            s.listen(80).unwrap();
            servers.push(Some(sockets.add(s)));
        }
        let mut clients = Vec::new();
        for i in 0..PAIRS as u16 {
            let h = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            ));
            let cx = iface.context();
            sockets
                .get_mut::<tcp::Socket>(h)
                .connect(cx, IpEndpoint::new(IpAddress::Ipv4(LOCAL), 80), 40000 + i)
                .unwrap();
            clients.push(h);
        }
        let holds_hot = |sockets: &SocketSet, h: SocketHandle| {
            sockets.sockets[h.0]
                .inner
                .as_ref()
                .is_some_and(|i| i.meta.sched.rx_hot)
        };
        // Client i sends byte (i * 7 + offset) at each offset of its stream.
        let byte = |client: usize, offset: usize| (client * 7 + offset) as u8;
        let mut sent = vec![0usize; clients.len()];
        let mut received = vec![0usize; clients.len()];
        let mut now = Instant::ZERO;
        let (mut most_lent, mut most_made, mut removed) = (0, 0, 0);
        for round in 0..3000 {
            iface.poll(now, &mut dev, &mut sockets);
            // Mid-stream, two servers that hold a hot buffer go away, and a new socket
            // takes each one's slot before the buffers are returned.
            if round >= 300 && removed < 2 {
                if let Some(slot) = servers
                    .iter_mut()
                    .find(|s| s.is_some_and(|h| holds_hot(&sockets, h)))
                {
                    let h = slot.take().unwrap();
                    sockets.remove(h);
                    let mut s = socket();
                    s.listen(81).unwrap();
                    assert_eq!(sockets.add(s), h, "the freed slot is reused");
                    removed += 1;
                }
            }
            for slot in servers.iter() {
                let Some(h) = *slot else { continue };
                let s = sockets.get_mut::<tcp::Socket>(h);
                let Some(remote) = s.remote_endpoint() else {
                    continue;
                };
                let client = (remote.port - 40000) as usize;
                // Every third round a server reads only part of what it has.
                let limit = if (round + client) % 3 == 0 {
                    37
                } else {
                    usize::MAX
                };
                let got = s
                    .recv(|d| {
                        let n = d.len().min(limit);
                        for (k, &b) in d[..n].iter().enumerate() {
                            assert_eq!(b, byte(client, received[client] + k), "round {round}");
                        }
                        (n, n)
                    })
                    .unwrap_or(0);
                received[client] += got;
            }
            if round < 1000 {
                for (i, &h) in clients.iter().enumerate() {
                    let s = sockets.get_mut::<tcp::Socket>(h);
                    if s.can_send() {
                        let chunk: Vec<u8> = (0..100).map(|k| byte(i, sent[i] + k)).collect();
                        sent[i] += s.send_slice(&chunk).unwrap();
                    }
                }
            }
            let pool = &sockets.sched.rx_pool;
            assert!(pool.made <= RX_POOL_BUFFERS);
            assert_eq!(pool.hot.len() + pool.cold.len(), pool.made, "round {round}");
            most_lent = most_lent.max(pool.lent.len());
            most_made = most_made.max(pool.made);
            now += crate::time::Duration::from_micros(100);
        }
        assert_eq!(removed, 2, "no server held a hot buffer mid-stream");
        assert_eq!(
            most_made, RX_POOL_BUFFERS,
            "more receivers than buffers at once"
        );
        assert!(most_lent > 0);
        // The clients whose server is still there.
        let served: Vec<usize> = servers
            .iter()
            .flatten()
            .filter_map(|&s| {
                Some((sockets.get::<tcp::Socket>(s).remote_endpoint()?.port - 40000) as usize)
            })
            .collect();
        assert_eq!(served.len(), PAIRS - 2);
        for i in served {
            assert!(sent[i] > 10_000, "client {i} sent {}", sent[i]);
            assert_eq!(received[i], sent[i], "client {i}");
        }
        let pool = &sockets.sched.rx_pool;
        assert_eq!(pool.size, 4096);
        // All read: every hot buffer is back (the two removed sockets took theirs; the
        // pool made others since).
        iface.poll(now, &mut dev, &mut sockets);
        let pool = &sockets.sched.rx_pool;
        assert!(pool.lent.is_empty());
        assert!(pool.cold.is_empty());
        assert_eq!(pool.hot.len(), pool.made);
    }
}
