//! A smoltcp [`Device`] over a service's pipe and its fast channels.
//!
//! Receive: fast channels first, then the pipe's RX channel. Frames are handed to smoltcp
//! in place (the `RxToken` points into the shared buffer); the buffer goes back to its
//! sender when the next frame is taken or at [`PipeDevice::flush`].
//!
//! Transmit: smoltcp writes a frame in place into a buffer of the channel the previous
//! frame went to (a one-entry route cache: services mostly talk to one peer at a time).
//! Once written, the frame's destination IPv4 decides where it really goes: a fast channel
//! to that address if one is up, else the pipe's TX channel (the master). On a miss the
//! frame is copied once into the right channel; on a hit nothing is copied.
//!
//! smoltcp sees IP packets (`Medium::Ip`): frames on pipes and fast channels are Ethernet,
//! but the master switches by IPv4 address and a fast channel has one peer, so the device
//! strips the 14-byte header on receive (smoltcp reads in place after it) and writes it on
//! transmit (smoltcp writes the packet in place after it). No ARP, no neighbour cache:
//! smoltcp's sends at most one ARP request per second and holds 8 neighbours, which made
//! a server serve the N-th of N new clients after N-1 seconds.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::abi::{pipe_flags, Doorbell, ETH_HEADER_LEN, MASTER_MAC};
use crate::channel::{ChannelReceiver, ChannelSender, RxFrame};
use crate::fault::RxDropper;
use crate::fc::FcEnd;
// `eth`, not `frame`: most functions here have a local `frame`.
use crate::frame as eth;
use crate::pipe::{AttachError, ServicePipeEnd, FC_DIR};

/// Bytes of a received frame's head the device checks (up to the IPv4 source address).
const FRAME_HEAD: usize = eth::IPV4_SRC.end;

/// Bytes of a received frame's head an app's packet filter sees: Ethernet, the longest
/// IPv4 header (60 bytes with options) and the TCP/UDP ports.
pub const FILTER_HEAD: usize = eth::ETH_HEADER_LEN + 60 + 4;

/// Frames held for the app's forwarding path at most (per round).
pub const APP_BATCH: usize = 256;

/// Frames smoltcp may take from the rings per engine round (see [`PipeDevice::rx_burst`]).
pub const RX_BURST: usize = 32;

/// Most connection requests held back for want of a listening socket; more are dropped
/// (the client retransmits). Each holds a buffer of its sender's ring.
pub const SYN_HOLD: usize = 256;

/// True if `head` (a received IPv4 frame's first bytes) is a TCP connection request: SYN
/// set, ACK clear. Too short a head is not one.
fn is_tcp_syn(head: &[u8]) -> bool {
    const IP: usize = eth::ETH_HEADER_LEN;
    if head.len() < IP + 20 || head[IP + 9] != 6 {
        return false;
    }
    let flags = IP + usize::from(head[IP] & 0x0f) * 4 + 13;
    matches!(head.get(flags), Some(&f) if f & 0x12 == 0x02)
}

/// Decides, from the first [`FILTER_HEAD`] bytes of a received IPv4 frame (a private
/// copy, fewer if the frame is shorter), whether the frame goes to the app's forwarding
/// path (`true`) or to the TCP/IP stack.
pub type PacketFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// True if `frame` (whose first bytes are `head`) holds an Ethernet header with EtherType
/// IPv4 and at least one more byte (smoltcp checks the packet itself).
fn is_ipv4(head: &[u8], frame: RxFrame) -> bool {
    frame.len as usize > ETH_HEADER_LEN && eth::ethertype(head) == Some(eth::ETHERTYPE_IPV4)
}

/// Bytes of a frame's head that name a TCP segment's endpoints when its IPv4 header has
/// no options (the frames worth a look ahead).
const TUPLE_HEAD: usize = ETH_HEADER_LEN + 20 + 4;

/// The endpoints, (local, remote), of the TCP segment in a frame whose first bytes are
/// `head`, if it is one with an IPv4 header without options.
fn tcp_tuple(head: &[u8]) -> Option<(IpEndpoint, IpEndpoint)> {
    if eth::ethertype(head) != Some(eth::ETHERTYPE_IPV4) {
        return None;
    }
    let ip = head.get(ETH_HEADER_LEN..TUPLE_HEAD)?;
    // Version 4, header length 5 words; protocol TCP.
    if ip[0] != 0x45 || ip[9] != 6 {
        return None;
    }
    let endpoint = |addr: u32, port: usize| {
        IpEndpoint::new(
            IpAddress::Ipv4(Ipv4Addr::from(addr)),
            u16::from_be_bytes([ip[port], ip[port + 1]]),
        )
    };
    Some((
        endpoint(eth::ipv4_dst(head)?, 22),
        endpoint(eth::ipv4_src(head)?, 20),
    ))
}

/// Where a frame goes (or came from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Pipe,
    Fc(usize),
}

/// Counters kept by the device (engine-local, no atomics needed).
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceStats {
    pub rx_pipe_frames: u64,
    pub rx_fc_frames: u64,
    pub tx_pipe_frames: u64,
    pub tx_fc_frames: u64,
    /// Frames smoltcp produced that found no free buffer or ring slot (dropped; TCP
    /// retransmits).
    pub tx_no_buffer: u64,
    /// Route-cache misses: frames copied from one channel's buffer to another's.
    pub tx_reroutes: u64,
    /// Of those, frames too large for the guessed route's buffers (a fast channel's MTU
    /// exceeds the pipe's), built aside and copied to their channel.
    pub tx_oversize_reroutes: u64,
    /// Frames for a fast-channel peer sent through the master instead, because the
    /// channel had no free buffer of their size (its peer held them all).
    pub tx_fc_detours: u64,
    /// Received frames handed to the app's forwarding path (the packet filter said so).
    pub rx_app_frames: u64,
    /// Frames the app forwarded (one copy each) or built and sent.
    pub tx_app_frames: u64,
    /// Frames the app forwarded or sent that found no buffer or ring slot (dropped).
    pub tx_app_no_buffer: u64,
    /// Connection requests (TCP SYNs) held back a round because no listening socket was
    /// ready for them (they reach smoltcp once the engine has made one).
    pub rx_syn_held: u64,
    /// Connection requests dropped because the hold queue was full too (the client
    /// retransmits its SYN, as when a kernel's SYN queue overflows).
    pub rx_syn_dropped: u64,
    /// Received frames dropped on purpose by the fault injector (`DOCKNET_DROP_RX`).
    pub rx_injected_drops: u64,
    /// Received frames that were not IPv4 (or too short to be), handed straight back.
    pub rx_not_ipv4: u64,
    /// Fast-channel frames dropped because their source MAC was not the peer's, or their
    /// source IPv4 address not the peer's (unless the master lets that peer forward).
    pub rx_fc_spoofed: u64,
}

/// The service's network device: its pipe plus zero or more fast channels.
pub struct PipeDevice {
    pipe: ServicePipeEnd,
    fcs: Vec<FcEnd>,
    /// A received frame smoltcp is (or was) looking at; returned to its sender next time.
    pending_rx: Option<(Route, RxFrame)>,
    /// Fast channels given up on (until the master changes our fast channels).
    broken: Vec<PathBuf>,
    route_hint: Route,
    fc_generation: u32,
    caps: DeviceCapabilities,
    /// Where smoltcp writes a frame when no channel buffer is free; the frame is dropped.
    scratch: Vec<u8>,
    /// Test-only loss on receive (off unless `DOCKNET_DROP_RX` is set).
    rx_drop: RxDropper,
    /// Which frames go to the app's forwarding path (none without a filter).
    filter: Option<PacketFilter>,
    /// Frames the filter claimed, still in their senders' buffers, oldest first; the
    /// app handles them in [`crate::engine::Engine::packets`] (capacity [`APP_BATCH`],
    /// allocated once).
    pub(crate) app_rx: std::collections::VecDeque<(Route, RxFrame)>,
    /// How many more connection requests (TCP SYNs without ACK) smoltcp may see this
    /// round: as many as the engine has sockets listening (`None`: no limit, nothing
    /// listens). smoltcp answers a SYN no socket listens for with a reset; holding it
    /// back until the engine has made another listening socket turns a burst of
    /// connects into an accept queue instead of resets.
    syn_budget: Option<usize>,
    /// SYNs held back for a later round, still in their senders' buffers, oldest first
    /// (capacity [`SYN_HOLD`], allocated once).
    held_syns: std::collections::VecDeque<(Route, RxFrame)>,
    /// Frames smoltcp may still take this round. smoltcp's `poll` reads frames until the
    /// device has none before it sends anything: against a peer that keeps the ring
    /// full that means no ACK and no reply (and no app round) until the peer runs out of
    /// window, which stalled the first megabyte of a bulk echo for milliseconds. A
    /// budget per round (as DPDK's bursts) interleaves receiving with sending.
    rx_burst: usize,
    /// Our subnet (address & mask), for "is this destination on our link".
    net: (u32, u32),
    pub stats: DeviceStats,
}

impl PipeDevice {
    /// Attach to the pipe in `dir` and to the fast channels found under it.
    pub fn attach(dir: &std::path::Path) -> Result<PipeDevice, AttachError> {
        let pipe = ServicePipeEnd::attach(dir)?;
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = pipe.info.mtu as usize;
        caps.max_burst_size = None;
        if pipe.info.flags & pipe_flags::CSUM_OFFLOAD != 0 {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        let scratch = vec![0; pipe.tx.buf_size()];
        let mask = match pipe.info.prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        };
        let net = (u32::from(pipe.info.ipv4) & mask, mask);
        let mut dev = PipeDevice {
            pipe,
            fcs: Vec::new(),
            pending_rx: None,
            broken: Vec::new(),
            route_hint: Route::Pipe,
            fc_generation: 0,
            caps,
            scratch,
            rx_drop: RxDropper::off(),
            filter: None,
            app_rx: std::collections::VecDeque::new(),
            syn_budget: None,
            held_syns: std::collections::VecDeque::with_capacity(SYN_HOLD),
            rx_burst: RX_BURST,
            net,
            stats: DeviceStats::default(),
        };
        dev.fc_generation = dev.pipe.fc_generation();
        dev.rescan_fcs();
        Ok(dev)
    }

    /// Send the frames `filter` claims to the app's forwarding path instead of the
    /// TCP/IP stack.
    pub fn set_packet_filter(&mut self, filter: PacketFilter) {
        self.filter = Some(filter);
        self.app_rx.reserve(APP_BATCH);
    }

    /// Drop received frames as `dropper` decides (fault injection for tests).
    pub fn set_rx_dropper(&mut self, dropper: RxDropper) {
        self.rx_drop = dropper;
    }

    /// With loss injection on: (frames dropped, frames received including the dropped).
    pub fn injected_loss(&self) -> Option<(u64, u64)> {
        self.rx_drop.is_on().then(|| {
            let s = &self.stats;
            (s.rx_injected_drops, s.rx_pipe_frames + s.rx_fc_frames)
        })
    }

    /// The pipe's identity (address, MAC, MTU).
    pub fn info(&self) -> &crate::pipe::PipeInfo {
        &self.pipe.info
    }

    /// Addresses of the peers reachable over an attached fast channel.
    pub fn fc_peers(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.fcs.iter().map(|f| f.peer_ip)
    }

    /// Shared-memory faults seen so far: (pipe, fast channels) summed over all counters.
    pub fn faults(&self) -> u64 {
        use core::sync::atomic::Ordering::Relaxed;
        let sum = |f: &crate::channel::ChannelFaults| {
            f.bad_desc.load(Relaxed) + f.bad_return.load(Relaxed) + f.ring_corrupt.load(Relaxed)
        };
        sum(&self.pipe.faults) + self.fcs.iter().map(|f| sum(&f.faults)).sum::<u64>()
    }

    /// Pick up fast channels the master added or removed. Cheap when nothing changed (one
    /// atomic load per channel), so the engine calls it every round.
    pub fn maintain(&mut self) {
        let gen = self.pipe.fc_generation();
        let closed = self.fcs.iter().any(|f| f.is_closed());
        if gen != self.fc_generation || closed {
            self.fc_generation = gen;
            self.broken.clear();
            self.rescan_fcs();
        }
        // A peer that wrote impossible ring indices has broken the channel: stop using it
        // (traffic falls back to the master) until the master changes our fast channels.
        // So has one whose file was shrunk under us (a SIGBUS caught, the mapping now zeros).
        if let Some(i) = self.fcs.iter().position(|f| {
            f.is_broken()
                || f.faults
                    .ring_corrupt
                    .load(core::sync::atomic::Ordering::Relaxed)
                    > 0
        }) {
            // Frames we hold name channels by index: return them before indices shift.
            self.release_pending();
            self.release_app_frames();
            let f = self.fcs.remove(i);
            let why = if f.is_broken() {
                "its file was truncated"
            } else {
                "impossible ring indices from the peer"
            };
            log::warn!(
                "fast channel to {} is broken ({why}): using the master",
                f.peer_ip
            );
            self.broken.push(f.path().to_path_buf());
            self.route_hint = Route::Pipe;
        }
    }

    /// True if the master changed our fast channels since we last looked (cheap).
    pub fn fc_changed(&self) -> bool {
        self.pipe.fc_generation() != self.fc_generation
    }

    /// True once the master removed our pipe.
    pub fn pipe_closed(&self) -> bool {
        self.pipe.is_closed()
    }

    /// True once our pipe file was shrunk under us (it reaches no one any more).
    pub fn pipe_broken(&self) -> bool {
        self.pipe.is_broken()
    }

    fn rescan_fcs(&mut self) {
        // Return any frame we hold before channels move around.
        self.release_pending();
        self.release_app_frames();
        self.route_hint = Route::Pipe;
        self.fcs.retain(|f| !f.is_closed());
        // Who may forward to us is read from our own pipe header (the master's word),
        // never from the channel file the peer can write.
        let forwarders = self.pipe.fc_forwarders();
        for f in &mut self.fcs {
            f.peer_may_forward = forwarders.contains(&f.peer_ip);
        }
        let dir: PathBuf = self.pipe.dir.join(FC_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("map") {
                continue;
            }
            if self.fcs.iter().any(|f| f.path() == path) || self.broken.contains(&path) {
                continue;
            }
            match FcEnd::attach(&path, self.pipe.info.ipv4) {
                Ok(mut fc) if !fc.is_closed() => {
                    fc.peer_may_forward = forwarders.contains(&fc.peer_ip);
                    log::info!(
                        "fast channel to {} up ({}, IP MTU {})",
                        fc.peer_ip,
                        path.display(),
                        fc.ip_mtu().unwrap_or(self.pipe.info.mtu as usize)
                    );
                    // smoltcp builds a frame here when no channel buffer is free or it is
                    // too large for the guessed route: hold the largest of any channel.
                    let frame = fc.tx.buf_size();
                    if self.scratch.len() < frame {
                        self.scratch.resize(frame, 0);
                    }
                    self.fcs.push(fc);
                }
                Ok(_) => {}
                Err(e) => log::warn!("fast channel {}: {e}", path.display()),
            }
        }
    }

    /// The IP MTU toward each fast-channel peer whose channel carries our frames now (the
    /// peer attached), where it differs from the pipe's: the engine gives these to smoltcp
    /// (`Interface::set_path_mtu`), which sizes its TCP segments to that peer by them.
    pub(crate) fn direct_path_mtus(&self) -> impl Iterator<Item = (Ipv4Addr, usize)> + '_ {
        let pipe_mtu = self.pipe.info.mtu as usize;
        // `peer_attached` is what `route_to` asks of the channel to its peer (the master
        // gives each pair one channel).
        self.fcs.iter().filter_map(move |f| {
            let mtu = f.ip_mtu()?;
            (mtu != pipe_mtu && f.peer_attached()).then_some((f.peer_ip, mtu))
        })
    }

    /// Doorbells to sleep on: the pipe's and every fast channel's.
    pub fn bells(&self) -> impl Iterator<Item = *const Doorbell> + '_ {
        std::iter::once(self.pipe.service_bell()).chain(self.fcs.iter().map(|f| f.my_bell()))
    }

    /// True if any channel has frames waiting.
    pub fn has_rx_work(&mut self) -> bool {
        self.pipe.rx.has_work() || self.fcs.iter_mut().any(|f| f.rx.has_work())
    }

    fn receiver(&mut self, r: Route) -> &mut ChannelReceiver {
        match r {
            Route::Pipe => &mut self.pipe.rx,
            Route::Fc(i) => &mut self.fcs[i].rx,
        }
    }

    fn sender(&mut self, r: Route) -> &mut ChannelSender {
        match r {
            Route::Pipe => &mut self.pipe.tx,
            Route::Fc(i) => &mut self.fcs[i].tx,
        }
    }

    fn release_pending(&mut self) {
        if let Some((route, frame)) = self.pending_rx.take() {
            self.receiver(route).give_back(frame.buf);
        }
    }

    /// Give back every frame held for the app (it did not handle them: dropped).
    fn release_app_frames(&mut self) {
        while let Some((route, frame)) = self.app_rx.pop_front() {
            self.receiver(route).give_back(frame.buf);
        }
        // Held SYNs too (dropped: their clients retransmit).
        while let Some((route, frame)) = self.held_syns.pop_front() {
            self.stats.rx_syn_dropped += 1;
            self.receiver(route).give_back(frame.buf);
        }
    }

    /// Publish sent frames and returned buffers; wake peers that sleep.
    pub fn flush(&mut self) {
        self.release_pending();
        self.pipe.tx.flush();
        self.pipe.rx.flush();
        for f in &mut self.fcs {
            f.tx.flush();
            f.rx.flush();
        }
    }

    /// Let smoltcp see at most `n` connection requests until the next call (`None`: any
    /// number). Held-back requests go first.
    pub(crate) fn set_syn_budget(&mut self, n: Option<usize>) {
        self.syn_budget = n;
    }

    /// Connection requests held back for want of a listening socket.
    pub(crate) fn held_syns(&self) -> usize {
        self.held_syns.len()
    }

    /// Start a round: smoltcp may take up to [`RX_BURST`] more frames.
    pub(crate) fn new_rx_burst(&mut self) {
        self.rx_burst = RX_BURST;
    }

    /// The endpoints of the TCP segments this round's burst will take from the rings, in
    /// the order `next_frame` takes them (as far as is known now), into `out` (cleared
    /// first; at most the burst's size). A look ahead so the engine can prefetch what
    /// their sockets need while the frames before them are processed. The bytes are read
    /// from frames still in the rings: a hint only, never relied on.
    pub(crate) fn upcoming_tcp(&mut self, out: &mut Vec<(IpEndpoint, IpEndpoint)>) {
        out.clear();
        let mut head = [0u8; TUPLE_HEAD];
        let receivers = self
            .fcs
            .iter_mut()
            .map(|fc| &mut fc.rx)
            .chain(core::iter::once(&mut self.pipe.rx));
        // At most a burst of frames in all, whatever they are: a peer that fills its ring
        // with frames that are not TCP does not make each round read all of them.
        let mut budget = self.rx_burst;
        for rx in receivers {
            let mut k = 0;
            while budget > 0 && rx.peek_head(k, &mut head) == TUPLE_HEAD {
                budget -= 1;
                k += 1;
                if let Some(t) = tcp_tuple(&head) {
                    out.push(t);
                }
            }
        }
    }

    /// The next frame from a fast channel or the pipe, after fault injection.
    fn next_frame(&mut self) -> Option<(Route, RxFrame)> {
        if self.rx_burst == 0 {
            return None;
        }
        let next = self.next_frame_unbudgeted();
        if next.is_some() {
            self.rx_burst -= 1;
        }
        next
    }

    fn next_frame_unbudgeted(&mut self) -> Option<(Route, RxFrame)> {
        if !self.held_syns.is_empty() && self.syn_budget != Some(0) {
            if let Some(n) = self.syn_budget.as_mut() {
                *n -= 1;
            }
            return self.held_syns.pop_front();
        }
        loop {
            if self.filter.is_some() && self.app_rx.len() >= APP_BATCH {
                // The app has a full batch to handle first; the rest waits in the rings.
                return None;
            }
            let mut got = None;
            for i in 0..self.fcs.len() {
                if let Some(f) = self.fcs[i].rx.recv() {
                    self.stats.rx_fc_frames += 1;
                    got = Some((Route::Fc(i), f));
                    break;
                }
            }
            if got.is_none() {
                if let Some(f) = self.pipe.rx.recv() {
                    self.stats.rx_pipe_frames += 1;
                    got = Some((Route::Pipe, f));
                }
            }
            let (route, frame) = got?;
            // The header bytes the checks below rest on, copied out once (with a filter,
            // as far as the ports).
            let mut head = [0u8; FILTER_HEAD];
            let want = if self.filter.is_some() || self.syn_budget.is_some() {
                FILTER_HEAD
            } else {
                FRAME_HEAD
            };
            let n = self.receiver(route).copy_out(frame, 0, &mut head[..want]);
            let head = &head[..n];
            if !is_ipv4(head, frame) {
                // The master delivers only IPv4 (it answers ARP itself); anything else has
                // no use without a neighbour cache.
                self.stats.rx_not_ipv4 += 1;
                self.receiver(route).give_back(frame.buf);
                continue;
            }
            if let Route::Fc(i) = route {
                if !self.sent_by_peer(i, head) {
                    self.stats.rx_fc_spoofed += 1;
                    self.receiver(route).give_back(frame.buf);
                    continue;
                }
            }
            if !self.rx_drop.should_drop() {
                if let Some(filter) = self.filter.as_mut() {
                    if filter(head) {
                        self.stats.rx_app_frames += 1;
                        self.app_rx.push_back((route, frame));
                        continue;
                    }
                }
                if self.syn_budget.is_some() && is_tcp_syn(head) {
                    match self.syn_budget.as_mut() {
                        Some(0) if self.held_syns.len() < SYN_HOLD => {
                            self.stats.rx_syn_held += 1;
                            self.held_syns.push_back((route, frame));
                            continue;
                        }
                        Some(0) => {
                            self.stats.rx_syn_dropped += 1;
                            self.receiver(route).give_back(frame.buf);
                            continue;
                        }
                        Some(n) => *n -= 1,
                        None => {}
                    }
                }
                return Some((route, frame));
            }
            // Injected loss: the frame never reaches smoltcp; its buffer goes straight back.
            self.stats.rx_injected_drops += 1;
            self.receiver(route).give_back(frame.buf);
        }
    }

    /// True if a frame from fast channel `i` comes from its peer: source MAC the peer's,
    /// and source IPv4 the peer's unless the master lets the peer forward. (The pipe needs
    /// no such check: the master already dropped spoofed frames.) `head` is the frame's
    /// first bytes, copied out once; a peer rewriting them afterwards only garbles its own
    /// frame.
    fn sent_by_peer(&self, i: usize, head: &[u8]) -> bool {
        let f = &self.fcs[i];
        let (Some(mac), Some(ip)) = (eth::eth_src(head), eth::ipv4_src(head)) else {
            return false;
        };
        mac == f.peer_mac && (f.peer_may_forward || ip == u32::from(f.peer_ip))
    }

    /// The route for a frame by its destination: a live fast channel to the destination
    /// IPv4 address, else the pipe.
    fn route_for(&self, frame: &[u8]) -> Route {
        if self.fcs.is_empty()
            || frame.len() < eth::IPV4_MIN_FRAME_LEN
            || eth::ethertype(frame) != Some(eth::ETHERTYPE_IPV4)
        {
            return Route::Pipe;
        }
        let Some(dst) = eth::ipv4_dst(frame).map(Ipv4Addr::from) else {
            return Route::Pipe;
        };
        self.route_to(dst)
    }

    /// The route toward `dst`: a live fast channel whose peer is `dst`; else, for a
    /// destination off our subnet, a live fast channel whose peer may forward to us (a
    /// NAT in front of this service is its default gateway: replies to its clients must
    /// go back through it); else the pipe (the master).
    pub(crate) fn route_to(&self, dst: Ipv4Addr) -> Route {
        if self.fcs.is_empty() {
            return Route::Pipe;
        }
        if let Some(i) = self.fcs.iter().position(|f| f.peer_ip == dst) {
            return if self.fcs[i].peer_attached() {
                Route::Fc(i)
            } else {
                Route::Pipe
            };
        }
        let (net, mask) = self.net;
        if u32::from(dst) & mask != net {
            if let Some(i) = self
                .fcs
                .iter()
                .position(|f| f.peer_may_forward && f.peer_attached())
            {
                return Route::Fc(i);
            }
        }
        Route::Pipe
    }

    /// The app's forwarding path: copy received frame `from` once into a buffer of the
    /// channel toward `to`, let `rewrite` edit the copy (a private buffer, so what was
    /// decided on a snapshot of the header cannot change under it), write the Ethernet
    /// header for that channel and post it. The received buffer goes back to its sender
    /// either way. False if no buffer or ring slot was free (the frame is dropped).
    pub(crate) fn forward_frame(
        &mut self,
        (from, frame): (Route, RxFrame),
        to: Ipv4Addr,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        let route = self.route_to(to);
        let len = frame.len as usize;
        let sent = self.with_tx_buffer(route, len, |dev, out| {
            let n = dev.copy_frame_out((from, frame), out);
            rewrite(&mut out[..n]);
            n
        });
        self.receiver(from).give_back(frame.buf);
        sent
    }

    /// Build a new frame of `len` bytes toward `to` with `build` (the Ethernet header is
    /// written afterwards) and post it. False if no buffer or slot was free.
    pub(crate) fn send_built(
        &mut self,
        to: Ipv4Addr,
        len: usize,
        build: impl FnOnce(&mut [u8]),
    ) -> bool {
        let route = self.route_to(to);
        self.with_tx_buffer(route, len, |_, out| {
            build(out);
            out.len()
        })
    }

    /// Allocate a buffer on `route`, let `fill` write up to `len` bytes into it (it
    /// returns how many), stamp our Ethernet header for the route and post it.
    fn with_tx_buffer(
        &mut self,
        route: Route,
        len: usize,
        fill: impl FnOnce(&mut PipeDevice, &mut [u8]) -> usize,
    ) -> bool {
        let sender = self.sender(route);
        let buf = if len >= ETH_HEADER_LEN {
            sender.alloc(len)
        } else {
            None
        };
        let Some(buf) = buf else {
            self.stats.tx_app_no_buffer += 1;
            return false;
        };
        let ptr = self.sender(route).buf_ptr(buf);
        // SAFETY: `buf` was just allocated from this channel for `len` bytes: it is ours
        // alone (not lent to the receiver) and holds at least len bytes inside a mapping `self` keeps
        // alive; `fill` cannot change the channels (it gets the device only to copy a
        // received frame out), so the mapping outlives the slice.
        let out = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
        let n = fill(self, out).min(len);
        if n < ETH_HEADER_LEN {
            self.sender(route).cancel(buf);
            return false;
        }
        let dst_mac = match route {
            Route::Pipe => MASTER_MAC,
            Route::Fc(i) => self.fcs[i].peer_mac,
        };
        out[eth::ETH_DST].copy_from_slice(&dst_mac);
        out[eth::ETH_SRC].copy_from_slice(&self.pipe.info.mac);
        if !self.sender(route).post(buf, n) {
            self.stats.tx_app_no_buffer += 1;
            return false;
        }
        self.stats.tx_app_frames += 1;
        match route {
            Route::Pipe => self.stats.tx_pipe_frames += 1,
            Route::Fc(_) => self.stats.tx_fc_frames += 1,
        }
        true
    }

    /// Copy up to `out.len()` bytes of a received frame (a snapshot).
    pub(crate) fn copy_frame_out(&self, (route, frame): (Route, RxFrame), out: &mut [u8]) -> usize {
        match route {
            Route::Pipe => self.pipe.rx.copy_out(frame, 0, out),
            Route::Fc(i) => self.fcs[i].rx.copy_out(frame, 0, out),
        }
    }

    /// Give a received frame back to its sender unsent.
    pub(crate) fn give_back(&mut self, (route, frame): (Route, RxFrame)) {
        self.receiver(route).give_back(frame.buf);
    }
}

/// One buffer in this many of a channel is kept for the replies smoltcp sends while it
/// receives (see [`PipeDevice`]'s `transmit`).
const REPLY_RESERVE_DIV: usize = 16;

/// A frame to receive, in place in a shared buffer.
pub struct PipeRxToken<'a> {
    ptr: *const u8,
    len: usize,
    _dev: core::marker::PhantomData<&'a ()>,
}

/// Permission to send one frame.
pub struct PipeTxToken<'a> {
    dev: &'a mut PipeDevice,
}

impl phy::Device for PipeDevice {
    type RxToken<'a> = PipeRxToken<'a>;
    type TxToken<'a> = PipeTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(PipeRxToken<'_>, PipeTxToken<'_>)> {
        self.release_pending();
        let (route, frame) = self.next_frame()?;
        let ptr = self.receiver(route).frame_ptr(frame);
        self.pending_rx = Some((route, frame));
        Some((
            PipeRxToken {
                // SAFETY: `next_frame` only returns frames longer than the Ethernet header,
                // so the packet starts inside the frame's buffer.
                ptr: unsafe { ptr.add(ETH_HEADER_LEN) },
                len: frame.len as usize - ETH_HEADER_LEN,
                _dev: core::marker::PhantomData,
            },
            PipeTxToken { dev: self },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<PipeTxToken<'_>> {
        // No free buffer on the likely route: tell smoltcp to hold the segment (it retries
        // next round) rather than drop it and wait for a retransmission timeout. A few
        // buffers stay for the replies smoltcp makes while receiving (the ACKs that answer
        // a duplicate or out-of-order segment): it cannot hold those back, and each one
        // lost costs the peer a retransmission timeout. With large buffers too, one of
        // them must be free: the token does not say how long its frame will be, and a
        // large segment that found none would be lost.
        let hint = self.route_hint;
        let sender = self.sender(hint);
        let reserve = sender.nbufs() / REPLY_RESERVE_DIV;
        let largest = sender.buf_size();
        if !sender.has_free(reserve + 1) {
            return None;
        }
        if !sender.has_free_for(largest) {
            // A fast channel whose large buffers its peer holds: a large segment goes
            // through the master instead (`post_copy`) if the pipe has one, and this
            // service's other traffic does not wait for that peer.
            let detour = hint != Route::Pipe && self.pipe.tx.has_free_for(largest);
            if !detour {
                return None;
            }
        }
        Some(PipeTxToken { dev: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

impl phy::RxToken for PipeRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: `ptr`/`len` are the IP packet inside a validated frame (`len <= buf_size`,
        // past its Ethernet header) in a buffer of a mapping the device keeps
        // alive while this token's borrow lasts; the buffer is not returned to its sender
        // before the next `receive`/`flush`, which need the device mutably and so come
        // after this token is gone. Soundness relies on the sender not writing a buffer it
        // lent us until we return it: the master never does; a fast-channel peer is a
        // trusted partner (`docknetctl fc create` is the grant) and its libOS never does.
        // smoltcp bounds-checks every field it parses, so even a misbehaving peer's bytes
        // cannot make it read outside the frame.
        let frame = unsafe { core::slice::from_raw_parts(self.ptr, self.len) };
        f(frame)
    }
}

impl phy::TxToken for PipeTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let dev = self.dev;
        // smoltcp writes the IP packet; the frame adds our Ethernet header in front.
        let total = len + ETH_HEADER_LEN;
        let mut guess = dev.route_hint;
        if let Route::Fc(i) = guess {
            if i >= dev.fcs.len() || total > dev.fcs[i].tx.buf_size() {
                guess = Route::Pipe;
            }
        }
        let buf = dev.sender(guess).alloc(total);
        let Some(buf) = buf else {
            // No buffer on the guessed route, or the packet is larger than its buffers (a
            // fast channel carries larger packets than the pipe, see
            // `Engine::sync_path_mtus`): smoltcp builds it in the scratch buffer (which
            // holds the largest frame of any channel), and it is copied to its route if
            // that is another one with room; otherwise it is dropped.
            let n = total.min(dev.scratch.len());
            let result = f(&mut dev.scratch[ETH_HEADER_LEN..n]);
            let mut scratch = std::mem::take(&mut dev.scratch);
            let frame = &mut scratch[..n];
            frame[eth::ETH_SRC].copy_from_slice(&dev.pipe.info.mac);
            frame[eth::ETH_TYPE].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
            if n < total {
                dev.scratch = scratch;
                dev.stats.tx_no_buffer += 1;
                return result;
            }
            let route = dev.route_for(frame);
            if route != guess {
                dev.stats.tx_reroutes += 1;
                if total > dev.sender(guess).buf_size() {
                    dev.stats.tx_oversize_reroutes += 1;
                }
                dev.route_hint = route;
            }
            dev.post_copy(route, frame);
            dev.scratch = scratch;
            return result;
        };
        let ptr = dev.sender(guess).buf_ptr(buf);
        // SAFETY: `buf` was just allocated from this channel for `total` bytes: it is ours
        // alone (not lent to the receiver) and holds at least that inside the live mapping.
        let frame = unsafe { core::slice::from_raw_parts_mut(ptr, total) };
        let result = f(&mut frame[ETH_HEADER_LEN..]);
        frame[eth::ETH_SRC].copy_from_slice(&dev.pipe.info.mac);
        frame[eth::ETH_TYPE].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
        let route = dev.route_for(frame);
        let dst_mac = match route {
            Route::Pipe => MASTER_MAC,
            Route::Fc(i) => dev.fcs[i].peer_mac,
        };
        frame[0..6].copy_from_slice(&dst_mac);
        if route == guess {
            if dev.sender(guess).post(buf, total) {
                dev.count_sent(route);
            } else {
                dev.stats.tx_no_buffer += 1;
            }
        } else {
            dev.stats.tx_reroutes += 1;
            dev.route_hint = route;
            if guess == Route::Pipe && !dev.sender(route).has_free_for(total) {
                // Built in a pipe buffer for a fast channel that has none free: it goes
                // through the master from where it is.
                frame[eth::ETH_DST].copy_from_slice(&MASTER_MAC);
                if dev.pipe.tx.post(buf, total) {
                    dev.stats.tx_fc_detours += 1;
                    dev.count_sent(Route::Pipe);
                } else {
                    dev.stats.tx_no_buffer += 1;
                }
            } else {
                dev.post_copy(route, frame);
                dev.sender(guess).cancel(buf);
            }
        }
        result
    }
}

impl PipeDevice {
    fn count_sent(&mut self, route: Route) {
        match route {
            Route::Pipe => self.stats.tx_pipe_frames += 1,
            Route::Fc(_) => self.stats.tx_fc_frames += 1,
        }
    }

    /// Copy the built `frame` (our Ethernet source and type written) onto `route`, with
    /// that route's destination MAC. A frame for a fast channel that has no free buffer
    /// of its size goes through the master instead (the pipe, if it has one): its peer
    /// holding all of them costs a detour, not a lost segment and a retransmission
    /// timeout. False if no channel took it (dropped, `tx_no_buffer`).
    fn post_copy(&mut self, route: Route, frame: &mut [u8]) -> bool {
        let dst_mac = match route {
            Route::Pipe => MASTER_MAC,
            Route::Fc(i) => self.fcs[i].peer_mac,
        };
        frame[eth::ETH_DST].copy_from_slice(&dst_mac);
        if self.sender(route).send_copy(frame) {
            self.count_sent(route);
            return true;
        }
        if route != Route::Pipe {
            frame[eth::ETH_DST].copy_from_slice(&MASTER_MAC);
            if self.pipe.tx.send_copy(frame) {
                self.stats.tx_fc_detours += 1;
                self.count_sent(Route::Pipe);
                return true;
            }
        }
        self.stats.tx_no_buffer += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame head: Ethernet, then an IPv4 header of `ihl` words with protocol `proto`,
    /// from 10.0.0.2:40000 to 10.0.0.1:80.
    fn head(ethertype: u16, ihl: u8, proto: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HEADER_LEN + usize::from(ihl) * 4 + 4];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip = &mut f[ETH_HEADER_LEN..];
        ip[0] = 0x40 | ihl;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
        let ports = usize::from(ihl) * 4;
        ip[ports..ports + 2].copy_from_slice(&40000u16.to_be_bytes());
        ip[ports + 2..ports + 4].copy_from_slice(&80u16.to_be_bytes());
        f
    }

    #[test]
    fn tcp_tuple_reads_plain_ipv4_tcp_heads_only() {
        let ep = |a: [u8; 4], port| IpEndpoint::new(IpAddress::Ipv4(Ipv4Addr::from(a)), port);
        assert_eq!(
            tcp_tuple(&head(eth::ETHERTYPE_IPV4, 5, 6)),
            Some((ep([10, 0, 0, 1], 80), ep([10, 0, 0, 2], 40000)))
        );
        // UDP, IP options, another EtherType, a short head: no tuple.
        assert_eq!(tcp_tuple(&head(eth::ETHERTYPE_IPV4, 5, 17)), None);
        assert_eq!(tcp_tuple(&head(eth::ETHERTYPE_IPV4, 6, 6)), None);
        assert_eq!(tcp_tuple(&head(0x86dd, 5, 6)), None);
        let short = head(eth::ETHERTYPE_IPV4, 5, 6);
        for n in 0..TUPLE_HEAD {
            assert_eq!(tcp_tuple(&short[..n]), None, "{n} bytes");
        }
    }
}
