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
//! Neighbours: before the first frame from a same-subnet peer (and every 20 s after),
//! smoltcp gets the ARP request that peer would have sent on a real segment, so it never
//! has to ARP for its clients itself ([`crate::peers`]); its ARP replies are dropped here.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::abi::{pipe_flags, Doorbell, ETH_HEADER_LEN};
use crate::channel::{ChannelReceiver, ChannelSender, RxFrame};
use crate::fault::RxDropper;
use crate::fc::FcEnd;
use crate::peers::{self, PeerLearner};
use crate::pipe::{AttachError, ServicePipeEnd, FC_DIR};

use crate::peers::ARP_FRAME_LEN;

/// Where a frame goes (or came from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
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
    /// Received frames dropped on purpose by the fault injector (`DOCKNET_DROP_RX`).
    pub rx_injected_drops: u64,
    /// ARP requests synthesised to teach smoltcp a peer's MAC ([`crate::peers`]).
    pub peers_taught: u64,
    /// smoltcp's ARP replies, dropped (the master answers ARP for every pipe).
    pub arp_replies_dropped: u64,
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
    /// An ARP reply for a fast-channel peer, answered locally (the FC file names the
    /// peer's MAC), handed to smoltcp by the next `receive`.
    local_arp: Option<[u8; ARP_FRAME_LEN]>,
    /// Where that reply sits while smoltcp reads it (apart from `scratch`, which a reply
    /// transmitted during the read may use).
    arp_rx: [u8; ARP_FRAME_LEN],
    /// Test-only loss on receive (off unless `DOCKNET_DROP_RX` is set).
    rx_drop: RxDropper,
    /// Which peers smoltcp has been taught.
    peers: PeerLearner,
    /// A received frame held back while smoltcp reads the ARP request teaching its sender.
    deferred: Option<(Route, RxFrame)>,
    pub stats: DeviceStats,
}

impl PipeDevice {
    /// Attach to the pipe in `dir` and to the fast channels found under it.
    pub fn attach(dir: &std::path::Path) -> Result<PipeDevice, AttachError> {
        let pipe = ServicePipeEnd::attach(dir)?;
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = pipe.info.mtu as usize + ETH_HEADER_LEN;
        caps.max_burst_size = None;
        if pipe.info.flags & pipe_flags::CSUM_OFFLOAD != 0 {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        let scratch = vec![0; pipe.tx.buf_size()];
        let info = pipe.info.clone();
        let mut dev = PipeDevice {
            pipe,
            fcs: Vec::new(),
            pending_rx: None,
            broken: Vec::new(),
            route_hint: Route::Pipe,
            fc_generation: 0,
            caps,
            scratch,
            local_arp: None,
            arp_rx: [0; ARP_FRAME_LEN],
            rx_drop: RxDropper::off(),
            peers: PeerLearner::new(info.ipv4.octets(), info.prefix_len, info.mac),
            deferred: None,
            stats: DeviceStats::default(),
        };
        dev.fc_generation = dev.pipe.fc_generation();
        dev.rescan_fcs();
        Ok(dev)
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
        if let Some(i) = self.fcs.iter().position(|f| {
            f.faults
                .ring_corrupt
                .load(core::sync::atomic::Ordering::Relaxed)
                > 0
        }) {
            // Frames we hold name channels by index: return them before indices shift.
            self.release_held();
            let f = self.fcs.remove(i);
            log::warn!("fast channel to {} is broken (impossible ring indices from the peer): using the master", f.peer_ip);
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

    fn rescan_fcs(&mut self) {
        // Return any frame we hold before channels move around.
        self.release_held();
        self.route_hint = Route::Pipe;
        self.fcs.retain(|f| !f.is_closed());
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
                Ok(fc) if !fc.is_closed() => {
                    log::info!("fast channel to {} up ({})", fc.peer_ip, path.display());
                    self.fcs.push(fc);
                }
                Ok(_) => {}
                Err(e) => log::warn!("fast channel {}: {e}", path.display()),
            }
        }
    }

    /// Doorbells to sleep on: the pipe's and every fast channel's.
    pub fn bells(&self) -> impl Iterator<Item = *const Doorbell> + '_ {
        std::iter::once(self.pipe.service_bell()).chain(self.fcs.iter().map(|f| f.my_bell()))
    }

    /// True if any channel has frames waiting.
    pub fn has_rx_work(&mut self) -> bool {
        self.deferred.is_some()
            || self.local_arp.is_some()
            || self.pipe.rx.has_work()
            || self.fcs.iter_mut().any(|f| f.rx.has_work())
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

    /// Return every frame we hold, including one held back behind a synthetic ARP request
    /// (dropped: TCP resends it). Needed before fast channels are added or removed.
    fn release_held(&mut self) {
        self.release_pending();
        if let Some((route, frame)) = self.deferred.take() {
            self.receiver(route).give_back(frame.buf);
        }
    }

    fn release_pending(&mut self) {
        if let Some((route, frame)) = self.pending_rx.take() {
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

    /// If `frame` is an ARP request for the address of a fast-channel peer, the reply.
    fn fc_arp_reply(&self, frame: &[u8; ARP_FRAME_LEN]) -> Option<[u8; ARP_FRAME_LEN]> {
        // Ethernet type ARP; htype 1, ptype IPv4, hlen 6, plen 4, op 1 (request).
        if frame[12..22] != [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1] {
            return None;
        }
        let target = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
        let fc = self.fcs.iter().find(|f| f.peer_ip == target)?;
        let mut r = [0u8; ARP_FRAME_LEN];
        r[0..6].copy_from_slice(&frame[6..12]); // to the requester
        r[6..12].copy_from_slice(&fc.peer_mac);
        r[12..20].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
        r[20..22].copy_from_slice(&[0, 2]); // reply
        r[22..28].copy_from_slice(&fc.peer_mac);
        r[28..32].copy_from_slice(&target.octets());
        r[32..42].copy_from_slice(&frame[22..32]); // requester's MAC and IP
        Some(r)
    }

    /// The next frame from a fast channel or the pipe, after fault injection.
    fn next_frame(&mut self) -> Option<(Route, RxFrame)> {
        loop {
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
            if !self.rx_drop.should_drop() {
                return Some((route, frame));
            }
            // Injected loss: the frame never reaches smoltcp; its buffer goes straight back.
            self.stats.rx_injected_drops += 1;
            self.receiver(route).give_back(frame.buf);
        }
    }

    /// The route for a frame by its destination: a live fast channel to the destination
    /// IPv4 address, else the pipe.
    fn route_for(&self, frame: &[u8]) -> Route {
        if self.fcs.is_empty() || frame.len() < ETH_HEADER_LEN + 20 || frame[12..14] != [0x08, 0x00]
        {
            return Route::Pipe;
        }
        let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        match self.fcs.iter().position(|f| f.peer_ip == dst) {
            Some(i) if self.fcs[i].peer_attached() => Route::Fc(i),
            _ => Route::Pipe,
        }
    }
}

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

    fn receive(&mut self, now: Instant) -> Option<(PipeRxToken<'_>, PipeTxToken<'_>)> {
        self.release_pending();
        if let Some(reply) = self.local_arp.take() {
            self.arp_rx = reply;
            let ptr = self.arp_rx.as_ptr();
            return Some((
                PipeRxToken {
                    ptr,
                    len: ARP_FRAME_LEN,
                    _dev: core::marker::PhantomData,
                },
                PipeTxToken { dev: self },
            ));
        }
        let (route, frame) = match self.deferred.take() {
            Some(held) => held,
            None => {
                let (route, frame) = self.next_frame()?;
                let ptr = self.receiver(route).frame_ptr(frame);
                let mut head = [0u8; 34];
                let n = (frame.len as usize).min(head.len());
                // SAFETY: `ptr` is a validated frame of `frame.len` bytes in a live mapping;
                // at most 34 of them are copied into a private array (the peer may change
                // them meanwhile: we only decide on this copy, and smoltcp re-parses).
                unsafe { core::ptr::copy_nonoverlapping(ptr, head.as_mut_ptr(), n) };
                if let Some(req) = self.peers.check(&head[..n], now.total_millis()) {
                    // smoltcp reads the request first, then (next call) the frame.
                    self.stats.peers_taught += 1;
                    self.deferred = Some((route, frame));
                    self.arp_rx = req;
                    let ptr = self.arp_rx.as_ptr();
                    return Some((
                        PipeRxToken {
                            ptr,
                            len: ARP_FRAME_LEN,
                            _dev: core::marker::PhantomData,
                        },
                        PipeTxToken { dev: self },
                    ));
                }
                (route, frame)
            }
        };
        let ptr = self.receiver(route).frame_ptr(frame);
        self.pending_rx = Some((route, frame));
        Some((
            PipeRxToken {
                ptr,
                len: frame.len as usize,
                _dev: core::marker::PhantomData,
            },
            PipeTxToken { dev: self },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<PipeTxToken<'_>> {
        // No free buffer on the likely route: tell smoltcp to hold the segment (it retries
        // next round) rather than drop it and wait for a retransmission timeout.
        let hint = self.route_hint;
        if !self.sender(hint).can_alloc() {
            return None;
        }
        Some(PipeTxToken { dev: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

impl phy::RxToken for PipeRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: `ptr` points either at the device's own `arp_rx` array (42 bytes) or at a
        // validated frame (`len <= buf_size`) in a buffer of a mapping the device keeps
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
        if len == ARP_FRAME_LEN {
            // An ARP frame (or an empty UDP datagram): built privately, then decided on.
            let mut frame = [0u8; ARP_FRAME_LEN];
            let result = f(&mut frame);
            if peers::is_arp_reply(&frame) {
                // Only ever an answer to a request the device made up (crate::peers): the
                // master answers ARP for every pipe, so nobody is waiting for it.
                dev.stats.arp_replies_dropped += 1;
                return result;
            }
            if let Some(reply) = dev.fc_arp_reply(&frame) {
                // An ARP request for a fast-channel peer: answered here, not by the master.
                dev.local_arp = Some(reply);
                return result;
            }
            let route = dev.route_for(&frame);
            if !dev.sender(route).send_copy(&frame) {
                dev.stats.tx_no_buffer += 1;
            } else {
                match route {
                    Route::Pipe => dev.stats.tx_pipe_frames += 1,
                    Route::Fc(_) => dev.stats.tx_fc_frames += 1,
                }
            }
            return result;
        }
        let mut guess = dev.route_hint;
        if let Route::Fc(i) = guess {
            if i >= dev.fcs.len() || len > dev.fcs[i].tx.buf_size() {
                guess = Route::Pipe;
            }
        }
        let buf = if len <= dev.sender(guess).buf_size() {
            dev.sender(guess).alloc()
        } else {
            None
        };
        let Some(buf) = buf else {
            dev.stats.tx_no_buffer += 1;
            let n = len.min(dev.scratch.len());
            return f(&mut dev.scratch[..n]);
        };
        let ptr = dev.sender(guess).buf_ptr(buf);
        // SAFETY: `buf` was just allocated from this channel: it is ours alone (not lent
        // to the receiver) and holds buf_size >= len bytes inside the live mapping.
        let frame = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
        let result = f(frame);
        let route = dev.route_for(frame);
        if route == guess {
            if !dev.sender(guess).post(buf, len) {
                dev.stats.tx_no_buffer += 1;
            }
        } else {
            dev.stats.tx_reroutes += 1;
            dev.route_hint = route;
            if !dev.sender(route).send_copy(frame) {
                dev.stats.tx_no_buffer += 1;
            }
            dev.sender(guess).cancel(buf);
        }
        match route {
            Route::Pipe => dev.stats.tx_pipe_frames += 1,
            Route::Fc(_) => dev.stats.tx_fc_frames += 1,
        }
        result
    }
}
