//! The data path: one thread that moves every frame between pipes.
//!
//! It owns every [`MasterPipeEnd`] (in a `Vec` indexed by slot) and an IPv4 → slot map,
//! both changed only by [`DpMsg`] messages from the control plane. Per frame there is no
//! allocation, no syscall and no lock: a header copy, a classification, at most one
//! `memcpy` into the destination's buffer.
//!
//! When a whole round finds nothing it spins for [`IdlePolicy::spin`], then sleeps on every
//! pipe's master doorbell plus a private control doorbell (rung by the control plane after
//! each message), so an idle daemon uses ~0% CPU and config changes apply at once.
//!
//! A pipe with a rate limit has a [`TokenBucket`] (see [`crate::rate`]): each round refills
//! it (one clock read per round, only while some pipe is limited) and the pipe's TX ring is
//! drained only while it holds tokens. Frames left behind wait in the service's ring; the
//! sleep ignores such a throttled pipe and wakes when its tokens are due.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docknet_pipe::abi::Doorbell;
use docknet_pipe::channel::{self, ChannelReceiver, ChannelSender, RxFrame};
use docknet_pipe::doorbell::{BellHandle, IdlePolicy, Sleeper, MAX_BELLS};
use docknet_pipe::frame as eth;
use docknet_pipe::pipe::{MasterPipeEnd, PipeControl};

use crate::capture::CaptureTap;
use crate::link::{LinkCounters, LinkStats, NeighborTimers, Neighbors};
use crate::net::{self, Verdict, ARP_FRAME_LEN, ETH_LEN, HDR_COPY, MASTER_MAC};
use crate::nic::{CsumState, Nic, NicWaker, RxMeta, TxMeta};
use crate::rate::{RatePeriods, TokenBucket};
use crate::route::{Prefix, RouteTable};
use crate::stats::{Counters, PipeStats};

mod deliver;
mod egress;
mod share;

use deliver::{deliver, deliver_from_link, Delivery, FrameSource, Hold};
use egress::{egress, link_source_ip, Egress};
#[cfg(test)]
use share::SHARE_MEMORY_ROUNDS;
use share::{ShareGuard, FROM_LINK, RESERVE_DIV};

/// Most frames taken from one pipe per round (keeps one busy pipe from starving others).
pub const BATCH: usize = 64;

/// A configuration change for the data path.
pub enum DpMsg {
    /// Start switching a pipe in `slot` (the control plane picks free slots).
    Add {
        slot: usize,
        end: Box<MasterPipeEnd>,
        stats: Arc<PipeStats>,
        /// The pipe may send with source addresses other than its own (a NAT).
        forwarder: bool,
    },
    /// Stop switching the pipe in `slot` and drop its end; `done` is signalled afterwards.
    Remove {
        slot: usize,
        done: Option<std::sync::mpsc::SyncSender<()>>,
    },
    /// Copy every frame pipe `slot` sends or receives to `tap` (replacing any earlier one).
    CaptureStart { slot: usize, tap: Box<CaptureTap> },
    /// Stop capture session `id` of pipe `slot` (a newer session there is left alone).
    CaptureStop { slot: usize, id: u64 },
    /// Limit what pipe `slot` sends through the master to `bytes_per_sec` (whole frames),
    /// or lift its limit (`None`).
    SetRate {
        slot: usize,
        bytes_per_sec: Option<NonZeroU64>,
    },
    /// Replace the routes to other nodes' subnets (`docknetctl route`).
    SetRoutes { table: Box<RouteTable> },
    /// Leave the loop. `keep_nic`: leave the link for the next docknetd (pipes stay).
    Shutdown { keep_nic: bool },
}

struct Slot {
    end: MasterPipeEnd,
    /// Header handle made once (`MasterPipeEnd::attached_pid` clones an `Arc` per call).
    control: PipeControl,
    stats: Arc<PipeStats>,
    local: Counters,
    dirty: bool,
    ip: u32,
    mac: [u8; 6],
    gateway: u32,
    prefix_len: u8,
    /// Set while `docknetctl capture` watches this pipe.
    capture: Option<Box<CaptureTap>>,
    /// The pipe's rate limit, if it has one.
    bucket: Option<TokenBucket>,
    /// Frames wait in the TX ring for tokens (set when counted in `local.throttled`,
    /// cleared when the next frame is taken).
    throttled: bool,
    /// The pipe file was shrunk under us: quarantined (see [`quarantine_if_broken`]).
    broken: bool,
    /// May send with foreign source addresses (the control plane's record, never the
    /// pipe header's flag, which the service can write).
    forwarder: bool,
    /// Fair share of this pipe's RX channel among the sources sending to it.
    share: ShareGuard,
    /// A frame of this pipe's TX channel whose destination pipe had no free buffer: it
    /// waits (its buffer not yet given back) for at most [`MAX_HOLD`], and the pipe's
    /// later frames wait in its ring behind it (see [`Switch::retry_held`]).
    held: Option<HeldFrame>,
    /// A frame to this pipe waited [`MAX_HOLD`] for room and was dropped: frames to it
    /// are dropped at once again until a quarter of its buffers are free (see
    /// `deliver::Hold`). One flag per buffer pool: [small, large].
    stalled: [bool; 2],
}

/// A frame waiting for room in its destination's RX channel, and since when.
#[derive(Clone, Copy, Debug)]
struct HeldFrame {
    frame: RxFrame,
    since: Instant,
}

/// How long a frame may wait for room in its destination pipe before it is dropped
/// (`rx_full`). Waiting instead of dropping at once: with thousands of connections each
/// with a request in flight, a closed loop has more frames in flight than a pipe's ring
/// holds, and every drop costs a TCP retransmission timeout; held frames leave the
/// sender's buffers lent, so the sender's own stack holds its segments back. Bounded, and
/// once per stall of the receiver (`Slot::stalled`), so a receiver that stops reading
/// delays its senders' other traffic by at most this each time it stalls.
pub const MAX_HOLD: Duration = Duration::from_millis(2);

/// What became of a frame taken from a pipe's TX channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Delivered, sent or dropped: its buffer goes back to the sender.
    Done,
    /// Its destination pipe had no free buffer; not counted anywhere yet.
    Held,
}

/// Which attempt at a frame [`Switch::process`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// Taken from the ring now: counted and captured; may be held.
    First,
    /// Held before: may be held again.
    Retry,
    /// Held for [`MAX_HOLD`]: delivered or dropped now.
    Last,
}

/// The switch state owned by the data-path thread.
pub struct Switch {
    slots: Vec<Option<Slot>>,
    /// [`MAX_HOLD`] (tests shorten or lengthen it).
    max_hold: Duration,
    by_ip: HashMap<u32, usize>,
    /// Gateway address → number of pipes using it.
    gateways: HashMap<u32, u32>,
    /// The pipe subnets of this host and how many pipes are in each: destinations in
    /// them are on the link (never routed).
    local_nets: Vec<(Prefix, u32)>,
    msgs: Receiver<DpMsg>,
    bell: Arc<Doorbell>,
    sleeper: Sleeper,
    /// Scratch for the doorbells of one sleep (kept to reuse its allocation).
    bells: Vec<BellHandle>,
    /// A frame a pipe sends to its own address is copied here first (its TX and RX
    /// buffers cannot be borrowed from one slot at once); sized for the largest frame.
    hairpin: Box<[u8]>,
    idle: IdlePolicy,
    /// The link to the world outside the host, if any (`--nic`).
    nic: Option<NicPort>,
    /// Number of pipes with a rate limit (the clock is read per round only if > 0).
    limited: usize,
    /// The fine and coarse timers of every rate limit.
    rate_periods: RatePeriods,
    /// Rounds run so far (the clock of [`ShareGuard`]).
    rounds: u64,
}

/// What [`Switch::ingress`] updates besides the switch: the link's counters, the ARP
/// frames to send after the burst, the neighbour table; and the round's clock.
struct LinkRx<'a> {
    local: &'a mut LinkCounters,
    arp_out: &'a mut Vec<[u8; ARP_FRAME_LEN]>,
    neighbors: &'a mut Neighbors,
    mac: [u8; 6],
    now: Instant,
    /// docknetd's own link address (`--link-ip`), 0 if none.
    link_ip: u32,
}

/// The NIC and what the switch keeps about its link.
struct NicPort {
    nic: Box<dyn Nic>,
    mac: [u8; 6],
    max_frame: usize,
    /// Largest TCP frame sent as one GSO frame (== max_frame without GSO).
    gso_max_frame: usize,
    /// The NIC fills L4 checksums (`TxMeta::csum_partial`).
    tx_csum: bool,
    neighbors: Neighbors,
    /// The clock read once per round (by `round`), for the neighbour table.
    now: Instant,
    local: LinkCounters,
    stats: Arc<LinkStats>,
    /// ARP frames to send once the current receive burst is over.
    arp_out: Vec<[u8; ARP_FRAME_LEN]>,
    /// Wakes the sleeping data path when the NIC's fd turns readable.
    waker: Option<NicWaker>,
    /// docknetd's own address on the link and the link's subnet (`--link-ip`): answered
    /// in ARP, asked from when resolving a next hop. Without it there are no routes and
    /// every destination that is no pipe of this host is taken to be on the link.
    link_addr: Option<(u32, Prefix)>,
    /// Routes to other nodes' subnets, longest prefix first.
    routes: RouteTable,
}

/// Where a frame from a pipe to an address that is no pipe of this host goes.
enum NextHop {
    /// On the link: resolve the destination itself, asking as `asker`.
    OnLink { asker: u32 },
    /// Through route `index`: resolve its next hop `via`, asking as `asker` (our link
    /// address).
    Route { index: usize, via: u32, asker: u32 },
    /// Outside every local subnet, the link's subnet and every route.
    NoRoute,
}

impl NicPort {
    /// The way to `dst` (no pipe of this host) for a frame from `src_ip`: a local pipe
    /// subnet or the link's subnet is on the link (more specific than any route that
    /// contains it: routes never lie inside one), else the longest matching route.
    #[inline]
    fn next_hop(&self, local_nets: &[(Prefix, u32)], dst: u32, src_ip: u32) -> NextHop {
        let Some((link_ip, link_net)) = self.link_addr else {
            return NextHop::OnLink { asker: src_ip };
        };
        if link_net.contains(dst) {
            return NextHop::OnLink { asker: link_ip };
        }
        if local_nets.iter().any(|(p, _)| p.contains(dst)) {
            return NextHop::OnLink { asker: src_ip };
        }
        match self.routes.lookup(dst) {
            Some((index, via)) => NextHop::Route {
                index,
                via,
                asker: link_ip,
            },
            None => NextHop::NoRoute,
        }
    }
}

/// Quarantine pipe `s` (slot `i`) if a tenant shrank its file under us (the SIGBUS guard
/// replaced its mapping with zeros, [`docknet_pipe::sigbus`]): it is counted (`broken`),
/// nothing more is taken from it or delivered to it, and every other pipe goes on. One
/// atomic load per pipe per round.
fn quarantine_if_broken(i: usize, s: &mut Slot) {
    if !s.broken && s.end.is_broken() {
        s.broken = true;
        // Its memory is no one's business any more: not even a held buffer's return.
        s.held = None;
        s.local.broken = 1;
        s.stats.publish(&s.local);
        log::warn!(
            "data path: pipe slot {i} ({}): its file was truncated under the master; \
             pipe quarantined (remove it with pipe rm)",
            std::net::Ipv4Addr::from(s.ip)
        );
    }
}

/// Drop `s`'s held frame, if any, and give its buffer back (the pipe goes away, or the
/// master stops): a later owner of the pipe must find every buffer returned.
fn release_held(s: &mut Slot) {
    if let Some(h) = s.held.take() {
        if !s.broken {
            s.end.tx.give_back(h.frame.buf);
            s.end.tx.flush();
        }
        s.local.rx_full += 1;
        s.dirty = true;
    }
}

/// Slots `a` and `b` (`a != b`) borrowed at once.
fn two_slots(
    slots: &mut [Option<Slot>],
    a: usize,
    b: usize,
) -> (Option<&mut Slot>, Option<&mut Slot>) {
    debug_assert_ne!(a, b);
    if a < b {
        let (lo, hi) = slots.split_at_mut(b);
        (
            lo.get_mut(a).and_then(Option::as_mut),
            hi.first_mut().and_then(Option::as_mut),
        )
    } else {
        let (lo, hi) = slots.split_at_mut(a);
        (
            hi.first_mut().and_then(Option::as_mut),
            lo.get_mut(b).and_then(Option::as_mut),
        )
    }
}

/// Copy `frame` into a new buffer of `tx` and post it. False if no buffer/slot is free.
fn send_bytes(tx: &mut ChannelSender, frame: &[u8]) -> bool {
    tx.send_copy(frame)
}

impl Switch {
    /// A switch fed by `msgs`; the control plane rings `bell` after each message.
    pub fn new(msgs: Receiver<DpMsg>, bell: Arc<Doorbell>) -> Self {
        Switch {
            slots: Vec::new(),
            max_hold: MAX_HOLD,
            by_ip: HashMap::new(),
            gateways: HashMap::new(),
            local_nets: Vec::new(),
            msgs,
            bell,
            sleeper: Sleeper::default(),
            bells: Vec::new(),
            hairpin: vec![0u8; docknet_pipe::abi::MAX_BUF_SIZE as usize].into_boxed_slice(),
            idle: IdlePolicy::from_env(),
            nic: None,
            limited: 0,
            rate_periods: RatePeriods::default(),
            rounds: 0,
        }
    }

    /// Use `periods` for the rate limits set from now on (`docknetd --rate-fine-us`,
    /// `--rate-coarse-ms`).
    pub fn with_rate_periods(mut self, periods: RatePeriods) -> Self {
        self.rate_periods = periods;
        self
    }

    /// Attach a NIC: frames for addresses that are no pipe of this host go out on it, and
    /// frames from it go to the pipe that owns their destination IPv4 address.
    /// `timers` say how long what is learnt on the link is trusted (see [`NeighborTimers`]).
    pub fn with_nic(
        mut self,
        nic: Box<dyn Nic>,
        stats: Arc<LinkStats>,
        timers: NeighborTimers,
    ) -> Self {
        let waker = nic.rx_fd().map(|fd| NicWaker::start(fd, self.bell.clone()));
        let (mac, max_frame) = (nic.mac(), nic.max_frame());
        let (gso_max_frame, tx_csum) = (nic.gso_max_frame(), nic.tx_csum_offload());
        self.nic = Some(NicPort {
            nic,
            mac,
            max_frame,
            gso_max_frame,
            tx_csum,
            neighbors: Neighbors::new(max_frame, timers),
            now: Instant::now(),
            local: LinkCounters::default(),
            stats,
            arp_out: Vec::with_capacity(BATCH),
            waker,
            link_addr: None,
            routes: RouteTable::default(),
        });
        self
    }

    /// docknetd's own address on the NIC's link, `addr/prefix_len` (`--link-ip`): what
    /// other nodes name as the next hop of their routes to this node's subnets. Only with
    /// a NIC (call after [`Switch::with_nic`]).
    pub fn with_link_addr(mut self, addr: std::net::Ipv4Addr, prefix_len: u8) -> Self {
        if let Some(port) = self.nic.as_mut() {
            let a = u32::from(addr);
            port.link_addr = Some((a, Prefix::of(a, prefix_len)));
        }
        self
    }

    /// Number of pipes being switched.
    pub fn pipes(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Apply one message. Returns false on shutdown.
    fn handle(&mut self, msg: DpMsg) -> bool {
        match msg {
            DpMsg::Add {
                slot,
                end,
                stats,
                forwarder,
            } => {
                self.remove(slot);
                let end = *end;
                let ip = u32::from(end.info.ipv4);
                let gateway = u32::from(end.info.gateway);
                let mac = end.info.mac;
                let prefix_len = end.info.prefix_len;
                if self.slots.len() <= slot {
                    self.slots.resize_with(slot + 1, || None);
                }
                let local = stats.load();
                let control = end.control();
                self.slots[slot] = Some(Slot {
                    end,
                    control,
                    stats,
                    local,
                    dirty: false,
                    ip,
                    mac,
                    gateway,
                    prefix_len,
                    capture: None,
                    bucket: None,
                    throttled: false,
                    broken: false,
                    forwarder,
                    share: ShareGuard::new(),
                    held: None,
                    stalled: [false; 2],
                });
                self.by_ip.insert(ip, slot);
                *self.gateways.entry(gateway).or_insert(0) += 1;
                let net = Prefix::of(ip, prefix_len);
                match self.local_nets.iter_mut().find(|(p, _)| *p == net) {
                    Some((_, n)) => *n += 1,
                    None => self.local_nets.push((net, 1)),
                }
                if let Some(port) = self.nic.as_mut() {
                    let hw = port.nic.steer(std::net::Ipv4Addr::from(ip));
                    if let Some(Some(s)) = self.slots.get_mut(slot) {
                        s.local.steered_hw = hw as u64;
                        s.stats.publish(&s.local);
                    }
                }
                self.count_limited();
                log::debug!(
                    "data path: pipe slot {slot} added ({})",
                    std::net::Ipv4Addr::from(ip)
                );
            }
            DpMsg::Remove { slot, done } => {
                self.remove(slot);
                if let Some(done) = done {
                    let _ = done.try_send(());
                }
            }
            DpMsg::CaptureStart { slot, tap } => {
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    s.capture = Some(tap);
                }
            }
            DpMsg::CaptureStop { slot, id } => {
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    if s.capture.as_ref().is_some_and(|t| t.id == id) {
                        s.capture = None;
                    }
                }
            }
            DpMsg::SetRate {
                slot,
                bytes_per_sec,
            } => {
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    let now = Instant::now();
                    match (bytes_per_sec, s.bucket.as_mut()) {
                        (Some(rate), Some(b)) => b.set_rate(rate, now),
                        (Some(rate), None) => {
                            s.bucket = Some(TokenBucket::new(rate, self.rate_periods, now))
                        }
                        (None, _) => {
                            s.bucket = None;
                            s.throttled = false;
                        }
                    }
                    log::debug!(
                        "data path: pipe slot {slot} rate limit {:?} bytes/s",
                        bytes_per_sec
                    );
                }
                self.count_limited();
            }
            DpMsg::SetRoutes { table } => {
                if let Some(port) = self.nic.as_mut() {
                    // The old table's counters are published before it goes (the control
                    // plane hands the same stats to the new one).
                    port.routes.publish();
                    port.routes = *table;
                    log::debug!("data path: routes replaced");
                }
            }
            DpMsg::Shutdown { keep_nic } => {
                if let Some(port) = self.nic.as_mut() {
                    port.nic.set_persistent(keep_nic);
                }
                return false;
            }
        }
        true
    }

    fn count_limited(&mut self) {
        self.limited = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.bucket.is_some())
            .count();
    }

    fn remove(&mut self, slot: usize) {
        let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        release_held(&mut s);
        if self.by_ip.get(&s.ip) == Some(&slot) {
            self.by_ip.remove(&s.ip);
            if let Some(port) = self.nic.as_mut() {
                port.nic.unsteer(std::net::Ipv4Addr::from(s.ip));
            }
        }
        if let Some(n) = self.gateways.get_mut(&s.gateway) {
            *n -= 1;
            if *n == 0 {
                self.gateways.remove(&s.gateway);
            }
        }
        let net = Prefix::of(s.ip, s.prefix_len);
        if let Some(i) = self.local_nets.iter().position(|(p, _)| *p == net) {
            self.local_nets[i].1 -= 1;
            if self.local_nets[i].1 == 0 {
                self.local_nets.swap_remove(i);
            }
        }
        s.stats.publish(&s.local);
        self.count_limited();
        log::debug!("data path: pipe slot {slot} removed");
    }

    /// Apply every queued message. Returns false on shutdown (or if the control plane is gone).
    pub fn poll_control(&mut self) -> bool {
        loop {
            match self.msgs.try_recv() {
                Ok(msg) => {
                    if !self.handle(msg) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// One pass over every pipe: up to [`BATCH`] frames each (a rate-limited pipe: only
    /// while its bucket holds tokens), then flush. Returns the number of frames taken.
    pub fn round(&mut self) -> usize {
        self.rounds = self.rounds.wrapping_add(1);
        // One clock read per round, and only if the NIC or a rate limit needs it.
        let now = (self.nic.is_some() || self.limited > 0).then(Instant::now);
        let mut total = now.map_or(0, |now| self.link_round(now));
        for i in 0..self.slots.len() {
            if let Some(Some(s)) = self.slots.get_mut(i) {
                quarantine_if_broken(i, s);
                if let (Some(now), Some(b)) = (now, s.bucket.as_mut()) {
                    b.refill(now);
                }
            }
            for _ in 0..BATCH {
                let Some(src) = self.slots[i].as_mut() else {
                    break;
                };
                if src.broken {
                    break;
                }
                if src.held.is_some() {
                    match self.retry_held(i) {
                        Some(true) => total += 1,
                        Some(false) => {}
                        None => break,
                    }
                    continue;
                }
                if let Some(b) = src.bucket.as_mut() {
                    if !b.may_send() {
                        // Out of tokens: the frames stay in the service's ring.
                        if !src.throttled && src.end.tx.has_work() {
                            src.throttled = true;
                            src.local.throttled += 1;
                            src.dirty = true;
                        }
                        break;
                    }
                }
                let Some(frame) = src.end.tx.recv() else {
                    break;
                };
                if let Some(b) = src.bucket.as_mut() {
                    b.take(frame.len as usize);
                    src.throttled = false;
                }
                total += 1;
                if self.process(i, frame, Attempt::First) == Outcome::Held {
                    if let Some(src) = self.slots[i].as_mut() {
                        src.held = Some(HeldFrame {
                            frame,
                            since: Instant::now(),
                        });
                    }
                    break;
                }
                if let Some(src) = self.slots[i].as_mut() {
                    src.end.tx.give_back(frame.buf);
                }
            }
        }
        for s in self.slots.iter_mut().flatten() {
            s.end.tx.flush();
            s.end.rx.flush();
            if s.dirty {
                s.stats.publish(&s.local);
                s.dirty = false;
            }
        }
        if let Some(port) = self.nic.as_mut() {
            port.nic.flush_tx();
            if total > 0 {
                let n = port.nic.stats();
                let l = &mut port.local;
                (l.rx_frames, l.rx_bytes, l.tx_frames, l.tx_bytes) =
                    (n.rx_frames, n.rx_bytes, n.tx_frames, n.tx_bytes);
                (l.tx_dropped, l.rx_dropped) = (n.tx_dropped, n.rx_dropped);
                port.stats.publish(&port.local);
                port.routes.publish();
            }
        }
        total
    }

    /// Take a burst from the NIC and deliver it; send queued ARP and frames whose
    /// destination got resolved. Returns the number of frames received.
    fn link_round(&mut self, now: Instant) -> usize {
        let Some(mut port) = self.nic.take() else {
            return 0;
        };
        port.now = now;
        let link_ip = port.link_addr.map_or(0, |(a, _)| a);
        let n = port.nic.rx_burst_meta(BATCH, &mut |frame, meta| {
            let mut link = LinkRx {
                local: &mut port.local,
                arp_out: &mut port.arp_out,
                neighbors: &mut port.neighbors,
                mac: port.mac,
                now,
                link_ip,
            };
            self.ingress(&mut link, frame, meta)
        });
        if port.neighbors.has_pending() || port.neighbors.has_due() {
            let NicPort {
                nic,
                neighbors,
                local,
                mac,
                arp_out,
                ..
            } = &mut port;
            let dropped = neighbors.release(now, |frame, dst_mac| {
                nic.tx(frame.len(), &mut |buf| {
                    buf.copy_from_slice(frame);
                    buf[0..6].copy_from_slice(&dst_mac);
                });
            });
            local.no_neighbor += dropped;
            let slots = &self.slots;
            neighbors.ask_due(now, |ask| {
                if arp_out.len() < arp_out.capacity() {
                    let sender = link_source_ip(slots, ask.target, ask.sender);
                    arp_out.push(net::arp_request(*mac, sender, ask.target, ask.to));
                    local.arp_requests += 1;
                }
            });
        }
        for f in port.arp_out.drain(..) {
            port.nic.tx(f.len(), &mut |buf| buf.copy_from_slice(&f));
        }
        self.nic = Some(port);
        n
    }

    /// One frame from the NIC: answer ARP, learn neighbours, verify and deliver IPv4.
    /// Frames the link vouches for (`meta.csum` Partial: from the local kernel, L4 checksum
    /// not filled; Valid: verified) get only their IPv4 header checked; GSO super-frames
    /// (always Partial) go to the pipe whole.
    fn ingress(&mut self, link: &mut LinkRx<'_>, frame: &[u8], meta: RxMeta) {
        let LinkRx {
            local,
            arp_out,
            neighbors,
            mac: my_mac,
            now,
            link_ip,
        } = link;
        let (my_mac, now, link_ip) = (*my_mac, *now, *link_ip);
        if frame.len() < ETH_LEN {
            local.bad_frame += 1;
            return;
        }
        let dst_mac = &frame[0..6];
        if dst_mac != my_mac && dst_mac != [0xff; 6] {
            if dst_mac[0] & 1 != 0 {
                local.unsupported += 1; // multicast
            } else {
                local.not_for_us += 1;
            }
            return;
        }
        match u16::from_be_bytes([frame[12], frame[13]]) {
            net::ETHERTYPE_ARP => {
                let Some(arp) = net::parse_arp(frame) else {
                    local.bad_frame += 1;
                    return;
                };
                let ours = self.by_ip.contains_key(&arp.target_ip)
                    || (link_ip != 0 && arp.target_ip == link_ip);
                let for_us = ours || self.gateways.contains_key(&arp.target_ip);
                // Only an answer sent to our MAC proves the neighbour hears us.
                let confirms = arp.op == 2 && dst_mac == my_mac && for_us;
                neighbors.learn(arp.sender_ip, arp.sender_mac, for_us, confirms, now);
                if arp.op == 1 && ours && arp_out.len() < arp_out.capacity() {
                    let mut reply = [0u8; ARP_FRAME_LEN];
                    net::build_arp_reply(
                        &mut reply,
                        arp.sender_mac,
                        my_mac,
                        arp.target_ip,
                        arp.sender_mac,
                        arp.sender_ip.to_be_bytes(),
                    );
                    arp_out.push(reply);
                    local.arp_answered += 1;
                }
            }
            net::ETHERTYPE_IPV4 => {
                if frame.len() < net::IPV4_MIN_FRAME_LEN {
                    local.bad_frame += 1;
                    return;
                }
                let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
                if ETH_LEN + total > frame.len() || total < 20 {
                    local.bad_frame += 1;
                    return;
                }
                let frame = &frame[..ETH_LEN + total];
                let checked = match meta.csum {
                    CsumState::Unknown => crate::csum::verify(&frame[ETH_LEN..]),
                    CsumState::Partial | CsumState::Valid => {
                        crate::csum::verify_header(&frame[ETH_LEN..])
                    }
                };
                match checked {
                    Ok(()) => {}
                    Err(crate::csum::Bad::Malformed) => {
                        if u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff != 0 {
                            local.unsupported += 1; // a fragment
                        } else {
                            local.bad_frame += 1;
                        }
                        return;
                    }
                    Err(_) => {
                        local.bad_csum += 1;
                        return;
                    }
                }
                // Checked above: an IPv4 frame of at least IPV4_MIN_FRAME_LEN bytes.
                let (Some(dst), Some(src)) = (eth::ipv4_dst(frame), eth::ipv4_src(frame)) else {
                    local.bad_frame += 1;
                    return;
                };
                let Some(Some(slot)) = self
                    .by_ip
                    .get(&dst)
                    .map(|&d| self.slots.get_mut(d).and_then(Option::as_mut))
                else {
                    local.unknown_dst += 1;
                    return;
                };
                if self.by_ip.contains_key(&src) {
                    // A frame from the link claiming one of our pipes' addresses.
                    local.spoofed += 1;
                    return;
                }
                neighbors.saw_frame(src, &frame[eth::ETH_SRC]);
                if deliver_from_link(slot, frame, self.rounds) {
                    local.delivered += 1;
                } else {
                    local.pipe_full += 1;
                }
            }
            _ => local.unsupported += 1,
        }
    }

    /// Switch one frame taken from slot `i`'s TX channel (the caller gives its buffer back).
    /// Try again to deliver pipe `i`'s held frame. `None` if it still waits (its
    /// destination is still full; the pipe's later frames wait too) or the pipe is gone.
    /// `Some(retried)` once it is done with (delivered or dropped; `retried`: on a retry
    /// before the hold ran out): the pipe goes on with its ring.
    fn retry_held(&mut self, i: usize) -> Option<bool> {
        let src = self.slots[i].as_mut()?;
        let held = src.held?;
        let attempt = if held.since.elapsed() >= self.max_hold {
            Attempt::Last
        } else {
            Attempt::Retry
        };
        if self.process(i, held.frame, attempt) == Outcome::Held {
            return None;
        }
        let src = self.slots[i].as_mut()?;
        src.held = None;
        src.dirty = true;
        src.end.tx.give_back(held.frame.buf);
        Some(attempt == Attempt::Retry)
    }

    /// Switch one frame from pipe `i`'s TX channel: verify it, answer ARP, deliver it to
    /// another pipe or send it out of the NIC.
    fn process(&mut self, i: usize, frame: RxFrame, attempt: Attempt) -> Outcome {
        let slots = &mut self.slots;
        let Some(src) = slots[i].as_mut() else {
            return Outcome::Done;
        };
        let len = frame.len as usize;
        // The bytes may change under us (the service maps them): decide only on this copy
        // (a held frame is decided on afresh, on a new copy).
        let mut hdr = [0u8; HDR_COPY];
        src.end.tx.copy_out(frame, 0, &mut hdr);
        if attempt == Attempt::First {
            if let Some(cap) = src.capture.as_mut() {
                let tx = &src.end.tx;
                cap.record_with(len, |b| tx.copy_out(frame, 0, b));
            }
            src.local.tx_frames += 1;
            src.local.tx_bytes += len as u64;
            src.dirty = true;
        }
        let hold = match attempt {
            Attempt::First | Attempt::Retry => Hold::Allowed,
            Attempt::Last => Hold::Expired,
        };
        let (src_ip, src_mac) = (src.ip, src.mac);
        let source_check = (!src.forwarder).then_some(src_ip);

        match net::classify(&hdr, len, source_check) {
            Verdict::Drop(why) => {
                let c = &mut src.local;
                match why {
                    net::Drop::BadFrame => c.bad_frame += 1,
                    net::Drop::ArpOp | net::Drop::Unsupported => c.unsupported += 1,
                    net::Drop::Spoofed => c.spoofed += 1,
                }
            }
            Verdict::ArpRequest {
                sender_mac,
                sender_ip,
                target_ip,
            } => {
                let answer_mac = match self.by_ip.get(&target_ip) {
                    Some(&d) => slots.get(d).and_then(Option::as_ref).map(|d| d.mac),
                    None if self.gateways.contains_key(&target_ip) => Some(MASTER_MAC),
                    // With a NIC, every other address is reached through the master.
                    None if self.nic.is_some() && target_ip != src_ip => Some(MASTER_MAC),
                    None => None,
                };
                let Some(src) = slots[i].as_mut() else {
                    return Outcome::Done;
                };
                let Some(answer_mac) = answer_mac else {
                    src.local.arp_unknown += 1;
                    return Outcome::Done;
                };
                let mut reply = [0u8; ARP_FRAME_LEN];
                net::build_arp_reply(
                    &mut reply, src_mac, answer_mac, target_ip, sender_mac, sender_ip,
                );
                if let Some(cap) = src.capture.as_mut() {
                    cap.record(&reply);
                }
                if send_bytes(&mut src.end.rx, &reply) {
                    src.local.arp_replies += 1;
                    src.local.rx_frames += 1;
                    src.local.rx_bytes += ARP_FRAME_LEN as u64;
                } else {
                    src.local.rx_full += 1;
                }
            }
            Verdict::Ipv4 { dst, frame_len } => {
                let Some(&d) = self.by_ip.get(&dst) else {
                    let Some(port) = self.nic.as_mut() else {
                        src.local.no_route += 1;
                        return Outcome::Done;
                    };
                    let (hop, asker, route) = match port.next_hop(&self.local_nets, dst, src_ip) {
                        NextHop::OnLink { asker } => (dst, asker, None),
                        NextHop::Route { index, via, asker } => (via, asker, Some(index)),
                        NextHop::NoRoute => {
                            src.local.no_route += 1;
                            port.local.no_route += 1;
                            return Outcome::Done;
                        }
                    };
                    let from = FrameSource::Shared(&src.end.tx, frame);
                    let r = egress(port, from, &hdr, frame_len, hop, asker);
                    if let (Some(index), Egress::Sent | Egress::Parked) = (route, &r) {
                        port.routes
                            .count(index, frame_len, matches!(r, Egress::Sent));
                        port.local.routed += 1;
                    }
                    match r {
                        Egress::Sent | Egress::Parked => {}
                        Egress::TooBig => src.local.too_big += 1,
                        Egress::Dropped => src.local.no_route += 1,
                    }
                    return Outcome::Done;
                };
                let verdict = if d == i {
                    // To its own address: through private memory (one slot cannot lend
                    // its TX channel and its RX channel at once).
                    let n = src.end.tx.copy_out(frame, 0, &mut self.hairpin);
                    let from = FrameSource::Private(&self.hairpin[..n]);
                    deliver(src, (i, self.rounds, hold), from, &hdr, frame_len, src_mac)
                } else {
                    let (s, dslot) = two_slots(slots, i, d);
                    match (s, dslot) {
                        (Some(s), Some(dslot)) => {
                            let from = FrameSource::Shared(&s.end.tx, frame);
                            deliver(
                                dslot,
                                (i, self.rounds, hold),
                                from,
                                &hdr,
                                frame_len,
                                src_mac,
                            )
                        }
                        (Some(s), None) => {
                            s.local.no_route += 1;
                            return Outcome::Done;
                        }
                        _ => return Outcome::Done,
                    }
                };
                if let Some(src) = slots[i].as_mut() {
                    match verdict {
                        Delivery::Ok | Delivery::RxFull => {}
                        Delivery::Held => return Outcome::Held,
                        Delivery::NotAttached => src.local.not_attached += 1,
                        Delivery::TooBig => src.local.too_big += 1,
                    }
                }
            }
        }
        Outcome::Done
    }

    /// Run until [`DpMsg::Shutdown`] (or until the control plane drops its sender).
    pub fn run(&mut self) {
        let mut last_work = Instant::now();
        let mut spins = 0u32;
        loop {
            if !self.poll_control() {
                break;
            }
            if self.round() > 0 {
                last_work = Instant::now();
                continue;
            }
            if last_work.elapsed() < self.idle.spin {
                // Yield while spinning: with more busy threads than cores, the service
                // that will hand us the next frame may be queued behind us.
                self.idle.spin_once(&mut spins);
                continue;
            }
            if !self.sleep(last_work.elapsed()) {
                break;
            }
        }
        // Publish final counters.
        for s in self.slots.iter_mut().flatten() {
            release_held(s);
            s.stats.publish(&s.local);
        }
        log::debug!("data path: stopped");
    }

    /// Sleep on every doorbell until one rings (or the longest sleep passes). Returns false
    /// if a shutdown message arrived meanwhile.
    fn sleep(&mut self, idle_for: Duration) -> bool {
        self.bells.clear();
        self.bells.push(BellHandle::private(self.bell.clone()));
        for s in self.slots.iter().flatten() {
            self.bells.push(s.end.master_bell_handle());
        }
        let mut timeout = if self.bells.len() > MAX_BELLS {
            Duration::from_millis(1)
        } else {
            self.idle.max_sleep
        };
        if let Some(port) = &self.nic {
            if port.waker.is_none() {
                // A polling NIC (DPDK) cannot wake us: look again soon, the sooner the more
                // recently traffic flowed (50 µs slices just after a burst, 1 ms once idle
                // for 100 ms), trading a little idle CPU for latency.
                let slice =
                    (idle_for / 100).clamp(Duration::from_micros(50), Duration::from_millis(1));
                timeout = timeout.min(slice);
            }
            if port.neighbors.has_pending() {
                timeout = timeout.min(Duration::from_millis(50));
            }
        }
        self.sleeper.prepare_handles(self.bells.drain(..));
        // Armed only now that `sleeping` is set, so its ring cannot be missed.
        if let Some(w) = self.nic.as_ref().and_then(|p| p.waker.as_ref()) {
            w.arm();
        }
        // A pipe out of tokens has no work until they are due, frames or not: its ring
        // waiting must not keep us awake (a busy spin), only cut the sleep short.
        let now = if self.limited > 0 {
            Some(Instant::now())
        } else {
            None
        };
        let mut work = false;
        for s in self.slots.iter_mut().flatten() {
            if s.broken {
                continue;
            }
            if let Some(h) = s.held {
                // Its ring waits behind the held frame: no work until the destination
                // returns buffers (which rings our bell) or the hold runs out.
                timeout = timeout.min(self.max_hold.saturating_sub(h.since.elapsed()));
                continue;
            }
            if let (Some(b), Some(now)) = (s.bucket.as_mut(), now) {
                b.refill(now);
                if !b.may_send() {
                    if s.end.tx.has_work() {
                        timeout = timeout.min(b.wait_time());
                    }
                    continue;
                }
            }
            if s.end.tx.has_work() {
                work = true;
                break;
            }
        }
        if work {
            self.sleeper.cancel();
            return true;
        }
        match self.msgs.try_recv() {
            Ok(msg) => {
                self.sleeper.cancel();
                self.handle(msg)
            }
            Err(TryRecvError::Disconnected) => {
                self.sleeper.cancel();
                false
            }
            Err(TryRecvError::Empty) => {
                self.sleeper.wait(timeout);
                if let Some(w) = self.nic.as_ref().and_then(|p| p.waker.as_ref()) {
                    w.disarm();
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::{arp_request, ipv4_frame};
    use crate::net::{gateway_of, mac_for_ip};
    use docknet_pipe::abi::pipe_flags;
    use docknet_pipe::pipe::{create_pipe_file, PipeConfig, ServicePipeEnd};
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::sync::mpsc;

    #[test]
    fn share_guard_cuts_a_long_run_only_when_others_send_and_the_ring_is_nearly_full() {
        let mut g = ShareGuard::new();
        // A lone sender, ring full or not: never cut.
        for r in 0..1000 {
            assert!(!g.shed(3, r, || true));
        }
        // Someone else sends: the run restarts, and past STREAK_LIMIT a nearly full ring
        // sheds the long run, never the occasional sender.
        let mut shed = 0;
        for r in 1000..1100u64 {
            if r % 20 == 0 {
                assert!(!g.shed(5, r, || true), "the occasional sender was shed");
            }
            if g.shed(3, r, || true) {
                shed += 1;
            }
        }
        assert!(shed > 0, "the flooder was never cut");
        // With room in the ring nothing is shed.
        assert!(!g.shed(5, 1200, || false));
        for r in 1200..1300 {
            assert!(!g.shed(3, r, || false));
        }
        // Long after the other source went quiet, the lone sender runs free again.
        assert!(!g.shed(3, 1300 + SHARE_MEMORY_ROUNDS, || true));
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let base = if std::path::Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let p = base.join(format!("dn-master-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl std::ops::Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Rig {
        _dir: TempDir,
        sw: Switch,
        tx: mpsc::Sender<DpMsg>,
        dirs: Vec<PathBuf>,
        stats: Vec<Arc<PipeStats>>,
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rig(tag: &str, ips: &[(&str, u32)]) -> Rig {
        rig_pools(tag, ips, 0)
    }

    /// [`rig`] with `nlarge` large buffers per direction in pipes above MTU 9000.
    fn rig_pools(tag: &str, ips: &[(&str, u32)], nlarge: u32) -> Rig {
        let dir = TempDir::new(tag);
        let (tx, rx) = mpsc::channel();
        let mut sw = Switch::new(rx, Arc::new(Doorbell::new()));
        let mut dirs = Vec::new();
        let mut stats = Vec::new();
        for (slot, (a, mtu)) in ips.iter().enumerate() {
            let a = ip(a);
            let d = dir.0.join(format!("p{slot}"));
            std::fs::create_dir_all(&d).unwrap();
            let cfg = PipeConfig {
                mac: mac_for_ip(a),
                ipv4: a,
                prefix_len: 16,
                gateway: gateway_of(a, 16),
                mtu: *mtu,
                nbufs: 64,
                nlarge,
                flags: pipe_flags::CSUM_OFFLOAD,
            };
            let end = MasterPipeEnd::new(create_pipe_file(&d, &cfg).unwrap()).unwrap();
            let st = Arc::new(PipeStats::default());
            tx.send(DpMsg::Add {
                slot,
                end: Box::new(end),
                stats: st.clone(),
                forwarder: false,
            })
            .unwrap();
            dirs.push(d);
            stats.push(st);
        }
        assert!(sw.poll_control());
        assert_eq!(sw.pipes(), ips.len());
        Rig {
            _dir: dir,
            sw,
            tx,
            dirs,
            stats,
        }
    }

    fn send(s: &mut ServicePipeEnd, f: &[u8]) {
        assert!(s.tx.send_copy(f));
        s.tx.flush();
    }

    fn recv_all(s: &mut ServicePipeEnd) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = s.rx.recv() {
            let mut b = vec![0u8; f.len as usize];
            assert_eq!(s.rx.copy_out(f, 0, &mut b), b.len());
            out.push(b);
            s.rx.give_back(f.buf);
        }
        s.rx.flush();
        out
    }

    #[test]
    fn arp_replies_for_pipes_and_gateway() {
        let mut r = rig("arp", &[("10.88.0.2", 9000), ("10.88.0.3", 9000)]);
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let me = ip("10.88.0.2");
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.3")));
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.1")));
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.77")));
        assert_eq!(r.sw.round(), 3);
        let got = recv_all(&mut a);
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][22..28], &mac_for_ip(ip("10.88.0.3")));
        assert_eq!(&got[0][28..32], &[10, 88, 0, 3]);
        assert_eq!(&got[0][0..6], &mac_for_ip(me));
        assert_eq!(&got[1][22..28], &MASTER_MAC);
        let s = r.stats[0].load();
        assert_eq!(
            (s.arp_replies, s.arp_unknown, s.tx_frames, s.rx_frames),
            (2, 1, 3, 2)
        );
    }

    /// A destination whose large buffers are all taken stalls for large frames alone:
    /// small frames still get in, and do not lift the large pool's stall (each large
    /// frame would wait out a fresh hold otherwise).
    #[test]
    fn a_full_large_pool_stalls_large_frames_only() {
        let mut r = rig_pools("pools", &[("10.88.0.2", 65000), ("10.88.0.3", 65000)], 4);
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let mut b = ServicePipeEnd::attach(&r.dirs[1]).unwrap();
        let (ia, ib) = (ip("10.88.0.2"), ip("10.88.0.3"));
        let large = ipv4_frame(ia, ib, 20_000);
        r.sw.max_hold = Duration::from_secs(3600);
        for _ in 0..4 {
            send(&mut a, &large);
        }
        while r.sw.round() > 0 {}
        assert_eq!(r.stats[1].load().rx_frames, 4);
        // The fifth waits for a large buffer; its hold runs out: dropped, stalled.
        send(&mut a, &large);
        while r.sw.round() > 0 {}
        assert_eq!(r.stats[1].load().rx_full, 0, "held, not dropped");
        r.sw.max_hold = Duration::ZERO;
        while r.sw.round() > 0 {}
        r.sw.max_hold = Duration::from_secs(3600);
        assert_eq!(r.stats[1].load().rx_full, 1);
        // Small frames still get in, and the large pool stays stalled: the next large
        // frame is dropped at once instead of holding a's ring for another hold.
        send(&mut a, &ipv4_frame(ia, ib, 100));
        send(&mut a, &large);
        while r.sw.round() > 0 {}
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_full), (5, 2), "{sb:?}");
        // b reads: a quarter of its large buffers free again, large frames get in.
        assert_eq!(recv_all(&mut b).len(), 5);
        send(&mut a, &large);
        while r.sw.round() > 0 {}
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_full), (6, 2), "{sb:?}");
        let got = recv_all(&mut b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), large.len());
        r.tx.send(DpMsg::Shutdown { keep_nic: false }).unwrap();
        assert!(!r.sw.poll_control());
    }

    #[test]
    fn ipv4_switching_and_drops() {
        let mut r = rig(
            "ip",
            &[
                ("10.88.0.2", 9000),
                ("10.88.0.3", 1500),
                ("10.88.0.4", 9000),
            ],
        );
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let mut b = ServicePipeEnd::attach(&r.dirs[1]).unwrap();
        let (ia, ib) = (ip("10.88.0.2"), ip("10.88.0.3"));
        let f = ipv4_frame(ia, ib, 1000);
        send(&mut a, &f);
        send(&mut a, &ipv4_frame(ip("10.88.0.9"), ib, 10)); // spoofed
        send(&mut a, &ipv4_frame(ia, ip("10.99.0.1"), 10)); // no route
        send(&mut a, &ipv4_frame(ia, ip("10.88.0.4"), 10)); // not attached
        send(&mut a, &ipv4_frame(ia, ib, 3000)); // too big for b's MTU 1500
        send(&mut a, &f[..20]); // bad frame
        send(&mut a, &f[..10]); // bad frame (< 14)
        let mut v6 = f.clone();
        v6[12] = 0x86;
        v6[13] = 0xdd;
        send(&mut a, &v6);
        assert_eq!(r.sw.round(), 8);
        let got = recv_all(&mut b);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][0..6], &mac_for_ip(ib));
        assert_eq!(&got[0][6..12], &mac_for_ip(ia));
        assert_eq!(&got[0][12..], &f[12..]);
        let sa = r.stats[0].load();
        assert_eq!(sa.tx_frames, 8);
        assert_eq!(
            (
                sa.spoofed,
                sa.no_route,
                sa.not_attached,
                sa.too_big,
                sa.bad_frame,
                sa.unsupported
            ),
            (1, 1, 1, 1, 2, 1)
        );
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_bytes), (1, f.len() as u64));

        // Fill b's RX channel (64 buffers). The next frame waits for room, and a's later
        // frames wait in a's ring behind it; nothing is dropped while b reads.
        let send_n = |a: &mut ServicePipeEnd, n: usize| {
            for _ in 0..n {
                assert!(a.tx.send_copy(&ipv4_frame(ia, ib, 10)));
            }
            a.tx.flush();
        };
        r.sw.max_hold = Duration::from_secs(3600); // no hold runs out by accident
        send_n(&mut a, 64);
        while r.sw.round() > 0 {}
        send_n(&mut a, 10);
        while r.sw.round() > 0 {}
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_full), (1 + 64, 0));
        assert_eq!(recv_all(&mut b).len(), 64);
        while r.sw.round() > 0 {}
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_full), (1 + 74, 0));
        assert_eq!(
            r.stats[0].load().tx_frames,
            8 + 74,
            "a held frame counts once"
        );

        // b stops reading: a frame that waited MAX_HOLD is dropped (rx_full), b is
        // stalled and frames to it are dropped at once, until b takes one again.
        send_n(&mut a, 54 + 5);
        while r.sw.round() > 0 {}
        assert_eq!(r.stats[1].load().rx_full, 0);
        r.sw.max_hold = Duration::ZERO;
        while r.sw.round() > 0 {}
        r.sw.max_hold = Duration::from_secs(3600);
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_full), (1 + 74 + 54, 5));
        assert_eq!(recv_all(&mut b).len(), 64);
        send_n(&mut a, 64);
        while r.sw.round() > 0 {}
        send_n(&mut a, 1);
        while r.sw.round() > 0 {}
        let sb = r.stats[1].load();
        assert_eq!(
            (sb.rx_frames, sb.rx_full),
            (1 + 74 + 54 + 64, 5),
            "waits again"
        );
        assert_eq!(recv_all(&mut b).len(), 64);
        while r.sw.round() > 0 {}
        assert_eq!(r.stats[1].load().rx_frames, 1 + 74 + 54 + 65);
        recv_all(&mut b);

        // Removing b: frames to it are no_route now.
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        r.tx.send(DpMsg::Remove {
            slot: 1,
            done: Some(done_tx),
        })
        .unwrap();
        assert!(r.sw.poll_control());
        done_rx.recv().unwrap();
        send(&mut a, &ipv4_frame(ia, ib, 10));
        r.sw.round();
        assert_eq!(r.stats[0].load().no_route, 2);
        r.tx.send(DpMsg::Shutdown { keep_nic: false }).unwrap();
        assert!(!r.sw.poll_control());
    }

    #[test]
    fn rate_limit_holds_frames_back_and_sleep_waits_for_tokens() {
        let mut r = rig("rate", &[("10.88.0.2", 1500), ("10.88.0.3", 1500)]);
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let mut b = ServicePipeEnd::attach(&r.dirs[1]).unwrap();
        let (ia, ib) = (ip("10.88.0.2"), ip("10.88.0.3"));
        // 1 Mbit/s on the default timers: 1.25 bytes of tokens every 10 µs, the bucket
        // starts empty.
        r.tx.send(DpMsg::SetRate {
            slot: 0,
            bytes_per_sec: NonZeroU64::new(125_000),
        })
        .unwrap();
        assert!(r.sw.poll_control());
        assert_eq!(r.sw.limited, 1);
        let f = ipv4_frame(ia, ib, 1000 - 42);
        assert_eq!(f.len(), 1000);
        for _ in 0..10 {
            assert!(a.tx.send_copy(&f));
        }
        a.tx.flush();
        // The first tick's byte lets one frame through (an overdraft of 999 bytes), then
        // nothing: the debt takes 8 ms to pay back.
        let t = Instant::now();
        let mut first = 0;
        while first == 0 {
            assert!(t.elapsed() < Duration::from_secs(1), "no tokens after 1 s");
            first = r.sw.round();
        }
        let debt_from = Instant::now();
        assert_eq!(first, 1);
        assert_eq!(r.sw.round(), 0);
        assert_eq!(recv_all(&mut b).len(), 1);
        let s = r.stats[0].load();
        // At least one throttle episode (more if this thread was descheduled between
        // rounds on a loaded machine: each round without tokens after one with them
        // starts another).
        assert_eq!(s.tx_frames, 1);
        assert!(s.throttled >= 1, "never throttled: {s:?}");
        // The sleep neither spins (returns at once because frames wait) nor oversleeps to
        // the idle limit (1 s): it lasts until the tick that pays the debt back, 8 ms
        // after the first frame went (measured from there: this thread may have been
        // off its CPU for part of it before the sleep began).
        let t = Instant::now();
        assert!(r.sw.sleep(Duration::from_secs(1)));
        let (slept, since_debt) = (t.elapsed(), debt_from.elapsed());
        assert!(
            since_debt >= Duration::from_millis(4) && slept < Duration::from_millis(500),
            "slept {slept:?}, {since_debt:?} after the debt began"
        );
        while r.sw.round() == 0 {
            assert!(t.elapsed() < Duration::from_secs(2), "tokens never came");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(r.stats[0].load().tx_frames, 2);
        // Lifting the limit lets the rest through at once.
        r.tx.send(DpMsg::SetRate {
            slot: 0,
            bytes_per_sec: None,
        })
        .unwrap();
        assert!(r.sw.poll_control());
        assert_eq!(r.sw.limited, 0);
        assert_eq!(r.sw.round(), 8);
        assert_eq!(recv_all(&mut b).len(), 9);
        // Traffic the other way (pipe b, unlimited) was never held back.
        send(&mut b, &ipv4_frame(ib, ia, 100));
        assert_eq!(r.sw.round(), 1);
        assert_eq!(r.stats[1].load().throttled, 0);
        r.tx.send(DpMsg::Shutdown { keep_nic: false }).unwrap();
        assert!(!r.sw.poll_control());
    }

    /// A NIC in memory: frames queued in `rx` are received, sent frames land in `sent`.
    struct FakeNic {
        rx: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
        sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    }

    const NIC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    impl Nic for FakeNic {
        fn name(&self) -> &str {
            "fake"
        }
        fn mac(&self) -> [u8; 6] {
            NIC_MAC
        }
        fn max_frame(&self) -> usize {
            1514
        }
        fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
            let frames: Vec<Vec<u8>> = {
                let mut q = self.rx.lock().unwrap();
                let n = q.len().min(max);
                q.drain(..n).collect()
            };
            for fr in &frames {
                f(fr);
            }
            frames.len()
        }
        fn tx(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
            let mut b = vec![0u8; len];
            fill(&mut b);
            self.sent.lock().unwrap().push(b);
            true
        }
        fn flush_tx(&mut self) {}
        fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn stats(&self) -> crate::nic::NicStats {
            crate::nic::NicStats::default()
        }
    }

    #[test]
    fn routes_send_to_the_next_hop_and_unrouted_destinations_are_dropped() {
        use crate::route::{RouteEntry, RouteStats};
        let mut r = rig("route", &[("10.90.1.2", 1500)]);
        let (rxq, sent) = (Arc::default(), Arc::default());
        let nic = FakeNic {
            rx: Arc::clone(&rxq),
            sent: Arc::clone(&sent),
        };
        let link_stats = Arc::new(LinkStats::default());
        let (_unused_tx, unused_rx) = mpsc::channel();
        let sw = std::mem::replace(&mut r.sw, Switch::new(unused_rx, Arc::new(Doorbell::new())));
        r.sw = sw
            .with_nic(Box::new(nic), link_stats.clone(), NeighborTimers::default())
            .with_link_addr(ip("192.168.50.1"), 24);
        let route_stats = Arc::new(RouteStats::default());
        let dest = crate::route::parse_prefix("10.91.2.0/24").unwrap();
        r.tx.send(DpMsg::SetRoutes {
            table: Box::new(RouteTable::new(vec![RouteEntry::new(
                dest,
                ip("192.168.50.2"),
                route_stats.clone(),
            )])),
        })
        .unwrap();
        assert!(r.sw.poll_control());
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let me = ip("10.90.1.2");
        let take =
            |sent: &Arc<std::sync::Mutex<Vec<Vec<u8>>>>| std::mem::take(&mut *sent.lock().unwrap());

        // A routed frame: parked, and the next hop is asked for from our link address.
        send(&mut a, &ipv4_frame(me, ip("10.91.2.5"), 100));
        r.sw.round();
        r.sw.round();
        let out = take(&sent);
        let arp: Vec<_> = out.iter().filter(|f| f[12..14] == [0x08, 0x06]).collect();
        assert_eq!(arp.len(), 1, "one ARP request: {out:?}");
        assert_eq!(
            &arp[0][28..32],
            &[192, 168, 50, 1],
            "asked as the link address"
        );
        assert_eq!(&arp[0][38..42], &[192, 168, 50, 2], "for the next hop");
        // The next hop answers: the parked frame leaves for its MAC.
        let mut reply = [0u8; ARP_FRAME_LEN];
        net::build_arp_reply(
            &mut reply,
            NIC_MAC,
            PEER_MAC,
            u32::from(ip("192.168.50.2")),
            NIC_MAC,
            [192, 168, 50, 1],
        );
        rxq.lock().unwrap().push(reply.to_vec());
        r.sw.round();
        r.sw.round();
        let out = take(&sent);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(&out[0][0..6], &PEER_MAC);
        assert_eq!(&out[0][30..34], &[10, 91, 2, 5], "destination unchanged");
        // Resolved now: straight out.
        send(&mut a, &ipv4_frame(me, ip("10.91.2.6"), 100));
        r.sw.round();
        let out = take(&sent);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][0..6], &PEER_MAC);
        let rs = route_stats.load();
        assert_eq!((rs.frames, rs.unresolved), (2, 1), "{rs:?}");

        // Outside every local subnet, the link and every route: dropped, counted.
        send(&mut a, &ipv4_frame(me, ip("10.99.0.1"), 10));
        r.sw.round();
        assert!(take(&sent).is_empty());
        assert_eq!(r.stats[0].load().no_route, 1);
        let l = link_stats.snapshot();
        assert_eq!((l.routed, l.no_route), (2, 1), "{l:?}");

        // The link's subnet is on the link: the destination itself is asked for.
        send(&mut a, &ipv4_frame(me, ip("192.168.50.7"), 10));
        r.sw.round();
        r.sw.round();
        let out = take(&sent);
        assert!(
            out.iter()
                .any(|f| f[12..14] == [0x08, 0x06] && f[38..42] == [192, 168, 50, 7]),
            "{out:?}"
        );

        // An ARP request for our link address is answered with the NIC's MAC.
        rxq.lock().unwrap().push(crate::net::tests::arp_request(
            PEER_MAC,
            ip("192.168.50.2"),
            ip("192.168.50.1"),
        ));
        r.sw.round();
        let out = take(&sent);
        let answer = out
            .iter()
            .find(|f| f[12..14] == [0x08, 0x06] && f[21] == 2)
            .unwrap_or_else(|| panic!("no ARP answer: {out:?}"));
        assert_eq!(&answer[22..28], &NIC_MAC);
        assert_eq!(&answer[28..32], &[192, 168, 50, 1]);
        r.tx.send(DpMsg::Shutdown { keep_nic: false }).unwrap();
        assert!(!r.sw.poll_control());
    }

    #[test]
    fn garbage_rings_are_counted_not_fatal() {
        let mut r = rig("garbage", &[("10.88.0.2", 1500)]);
        let faults = r.sw.slots[0].as_ref().unwrap().end.faults.clone();
        // Scribble over the whole TX ring area of the pipe, as a hostile service could.
        let map = docknet_pipe::shm::SharedMap::open(&r.dirs[0].join("pipe.map")).unwrap();
        let info = docknet_pipe::pipe::read_pipe_info(&map).unwrap();
        // Through the file: the page cache is what both mappings show.
        std::os::unix::fs::FileExt::write_all_at(map.file(), &[0xa5; 4096], info.tx.ring_off)
            .unwrap();
        for _ in 0..10 {
            assert_eq!(r.sw.round(), 0);
        }
        assert_eq!(
            faults
                .ring_corrupt
                .load(std::sync::atomic::Ordering::Relaxed),
            10
        );
        r.tx.send(DpMsg::Shutdown { keep_nic: false }).unwrap();
        r.sw.run();
    }
}
