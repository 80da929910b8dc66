//! The run-to-completion packet engine and the socket API apps program against.
//!
//! One thread runs everything: each round takes frames from the fast channels and the
//! pipe, runs smoltcp, calls the app, lets smoltcp emit what the app wrote, and publishes
//! the frames. When nothing happens for a while ([`IdlePolicy::spin`]) the engine sleeps on
//! its doorbells until a peer posts a frame or smoltcp's next timer is due.
//!
//! TCP connections are named by [`TcpId`], UDP sockets by [`UdpId`] (different types, so
//! one cannot be passed for the other); a [`ListenerId`] is a port with an accept queue
//! (smoltcp has no backlog: each pending connection needs its own socket, so the engine
//! keeps a few listening and makes more each round, up to the queue's depth, while the
//! device holds back connection requests no socket is ready for). An id stays valid until the app closes it: using it afterwards (or an id
//! whose socket was freed and its slot reused) gives `Err(NetError::BadSocket)`, never a
//! panic or another connection's data.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::device::PipeDevice;
use crate::doorbell::{IdlePolicy, Sleeper};
use crate::fault::{BadDropRate, RxDropper};
use crate::pipe::AttachError;
use crate::socket_buffers::SocketBufferPool;

/// Environment variable naming the pipe directory.
pub const PIPE_ENV: &str = "DOCKNET_PIPE";
/// Where the pipe is mounted inside a container.
pub const DEFAULT_PIPE_DIR: &str = "/run/docknet/pipe";

/// Environment variable: the minimum TCP retransmission timeout, in ms.
pub const RTO_MIN_ENV: &str = "DOCKNET_TCP_RTO_MIN_MS";
/// Environment variable: the initial TCP retransmission timeout (before any round trip
/// was measured: a lost SYN), in ms.
pub const RTO_INITIAL_ENV: &str = "DOCKNET_TCP_RTO_INITIAL_MS";
/// Default minimum RTO. RFC 6298 recommends 1 s and allows less; DockNet's links take
/// microseconds per round trip, so a lost segment costs about this much instead of a
/// second (the RTO still adapts upwards with the measured RTT and its variance).
pub const DEFAULT_RTO_MIN: Duration = Duration::from_millis(5);
/// Default initial RTO.
pub const DEFAULT_RTO_INITIAL: Duration = Duration::from_millis(100);
/// Default number of spare TCP socket buffer pairs: as many as a listener keeps
/// listening, so the first connections of a server or a client start warm.
pub const DEFAULT_SPARE_BUFFERS: usize = LISTEN_READY;

/// A bad engine setting in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `DOCKNET_DROP_RX` / `DOCKNET_DROP_SEED`.
    Drop(BadDropRate),
    /// An RTO variable that is not a whole number of milliseconds in 1..=60000.
    Rto { var: &'static str, value: String },
    /// `DOCKNET_TCP_SYN_BACKLOG` that is not a whole number in 1..=65536.
    SynBacklog(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Drop(e) => e.fmt(f),
            ConfigError::Rto { var, value } => write!(
                f,
                "{var}={value:?}: expected a whole number of milliseconds, 1 to 60000"
            ),
            ConfigError::SynBacklog(value) => write!(
                f,
                "{SYN_BACKLOG_ENV}={value:?}: expected a whole number of handshakes, 1 to 65536"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

fn syn_backlog_from_env() -> Result<usize, ConfigError> {
    match std::env::var(SYN_BACKLOG_ENV) {
        Err(_) => Ok(DEFAULT_SYN_BACKLOG),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n @ 1..=65536) => Ok(n),
            _ => Err(ConfigError::SynBacklog(v)),
        },
    }
}

fn rto_from_env(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms @ 1..=60_000) => Ok(Duration::from_millis(ms)),
            _ => Err(ConfigError::Rto { var, value: v }),
        },
    }
}

/// How an engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Pipe directory (holds `pipe.map` and `fc/`).
    pub pipe_dir: PathBuf,
    /// Receive buffer per TCP socket. Large buffers give large windows (window scaling).
    pub tcp_rx_buffer: usize,
    /// Send buffer per TCP socket.
    pub tcp_tx_buffer: usize,
    /// Spin-then-sleep policy.
    pub idle: IdlePolicy,
    /// Loss injected on receive, for tests (`DOCKNET_DROP_RX`; off by default).
    pub rx_drop: RxDropper,
    /// Minimum TCP retransmission timeout (`DOCKNET_TCP_RTO_MIN_MS`).
    pub tcp_rto_min: Duration,
    /// Initial TCP retransmission timeout, before a round trip was measured
    /// (`DOCKNET_TCP_RTO_INITIAL_MS`; at least the minimum).
    pub tcp_rto_initial: Duration,
    /// Spare TCP socket buffer pairs kept ready, their memory mapped (see
    /// [`crate::socket_buffers`]): made at attach, refilled by closed sockets.
    pub tcp_spare_buffers: usize,
    /// Most handshakes in progress per listening port (`DOCKNET_TCP_SYN_BACKLOG`); more
    /// connection requests wait in the device, then are dropped (their clients retry).
    pub tcp_syn_backlog: usize,
}

impl EngineConfig {
    /// Defaults, with the pipe directory from `DOCKNET_PIPE` (or [`DEFAULT_PIPE_DIR`]),
    /// injected loss from `DOCKNET_DROP_RX` and the RTO bounds from
    /// `DOCKNET_TCP_RTO_MIN_MS` / `DOCKNET_TCP_RTO_INITIAL_MS`; a bad value is an error.
    pub fn try_from_env() -> Result<Self, ConfigError> {
        let mut cfg = Self::from_env_with(RxDropper::from_env().map_err(ConfigError::Drop)?);
        cfg.tcp_rto_min = rto_from_env(RTO_MIN_ENV, DEFAULT_RTO_MIN)?;
        cfg.tcp_rto_initial = rto_from_env(RTO_INITIAL_ENV, DEFAULT_RTO_INITIAL)?;
        cfg.tcp_syn_backlog = syn_backlog_from_env()?;
        Ok(cfg)
    }

    /// As [`EngineConfig::try_from_env`], but a bad value is logged and its default used.
    pub fn from_env() -> Self {
        let mut cfg = Self::from_env_with(RxDropper::from_env().unwrap_or_else(|e| {
            log::error!("{e}; injecting no loss");
            RxDropper::off()
        }));
        cfg.tcp_rto_min = rto_from_env(RTO_MIN_ENV, DEFAULT_RTO_MIN).unwrap_or_else(|e| {
            log::error!("{e}; using {DEFAULT_RTO_MIN:?}");
            DEFAULT_RTO_MIN
        });
        cfg.tcp_rto_initial =
            rto_from_env(RTO_INITIAL_ENV, DEFAULT_RTO_INITIAL).unwrap_or_else(|e| {
                log::error!("{e}; using {DEFAULT_RTO_INITIAL:?}");
                DEFAULT_RTO_INITIAL
            });
        cfg.tcp_syn_backlog = syn_backlog_from_env().unwrap_or_else(|e| {
            log::error!("{e}; using {DEFAULT_SYN_BACKLOG}");
            DEFAULT_SYN_BACKLOG
        });
        cfg
    }

    fn from_env_with(rx_drop: RxDropper) -> Self {
        EngineConfig {
            pipe_dir: std::env::var_os(PIPE_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPE_DIR)),
            tcp_rx_buffer: 256 * 1024,
            tcp_tx_buffer: 256 * 1024,
            idle: IdlePolicy::from_env(),
            rx_drop,
            tcp_rto_min: DEFAULT_RTO_MIN,
            tcp_rto_initial: DEFAULT_RTO_INITIAL,
            tcp_spare_buffers: DEFAULT_SPARE_BUFFERS,
            tcp_syn_backlog: DEFAULT_SYN_BACKLOG,
        }
    }
}

/// A TCP connection of this engine (from [`Engine::connect`] or [`Engine::accept`]).
///
/// A UDP id is not one:
///
/// ```compile_fail
/// fn misuse(e: &mut docknet::Engine, u: docknet::UdpId) {
///     let _ = e.read(u, &mut [0u8; 8]); // expected `TcpId`, found `UdpId`
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpId {
    handle: SocketHandle,
    /// Which use of the handle this is: smoltcp reuses a freed socket's slot.
    generation: u64,
}

impl TcpId {
    /// A small number naming this connection among the engine's open sockets; a new
    /// socket may get it once this one is closed. For an app's table of connections: a
    /// vector indexed by it touches one entry per lookup where a hash map hashes and
    /// probes (keep the id in the entry to tell a reused number apart).
    pub fn index(&self) -> usize {
        self.handle.index()
    }

    /// An id of `handle`'s `generation`th use, for tests of tables keyed by ids.
    #[cfg(test)]
    pub(crate) fn for_test(handle: SocketHandle, generation: u64) -> Self {
        TcpId { handle, generation }
    }
}

/// A UDP socket of this engine (from [`Engine::udp_bind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpId {
    handle: SocketHandle,
    generation: u64,
}

/// The name TCP ids had before UDP ones got their own type.
pub type SocketId = TcpId;

/// How long [`Engine::run`] lets connections the app left open finish closing after the
/// app returned [`Control::Exit`]; the rest are reset.
pub const EXIT_GRACE: Duration = Duration::from_millis(200);

/// The generation the app may name each socket by, indexed by the socket's slot (0: the
/// app may not name it). A vector, not a hash map: the lookup sits on every read and
/// write, and slots are small and dense.
#[derive(Default)]
struct Records(Vec<u64>);

impl Records {
    fn insert(&mut self, h: SocketHandle, generation: u64) {
        let i = h.index();
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = generation;
    }

    fn get(&self, h: SocketHandle) -> Option<u64> {
        self.0.get(h.index()).copied().filter(|&g| g != 0)
    }

    fn remove(&mut self, h: SocketHandle) {
        if let Some(g) = self.0.get_mut(h.index()) {
            *g = 0;
        }
    }
}

/// A listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(usize);

/// Socket API errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The port is already listened on / bound.
    PortInUse(u16),
    /// No ephemeral port or no socket could be made.
    Exhausted,
    /// The connection is closed (or reset) and holds no more data.
    Closed,
    /// The operation does not apply to this socket (e.g. connect on an invalid address).
    Invalid(&'static str),
    /// The id names no open socket of this kind: it was closed already, or freed and its
    /// slot reused.
    BadSocket,
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::PortInUse(p) => write!(f, "port {p} is already in use"),
            NetError::Exhausted => write!(f, "no free local port or socket"),
            NetError::Closed => write!(f, "connection closed"),
            NetError::Invalid(why) => write!(f, "invalid socket operation: {why}"),
            NetError::BadSocket => write!(f, "no such open socket (closed already, or stale)"),
        }
    }
}

impl std::error::Error for NetError {}

/// What the app wants after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep running.
    Continue,
    /// Flush what is queued and return from [`Engine::run`].
    Exit,
}

/// Listening sockets kept ready per port when no connection request waits: how many one
/// round can take. Requests beyond that wait (in the device) for the next round, which
/// makes a listening socket for each of them (within the queues' depths).
const LISTEN_READY: usize = 8;

/// How many frames ahead of the one smoltcp processes the engine prefetches the socket
/// (see [`Engine::poll_ingress`]): far enough for the lines to arrive, near enough that
/// the sockets of a burst do not push each other out of the first-level cache.
const PREFETCH_AHEAD: usize = 2;

/// Default most handshakes in progress per listening port, the SYN queue (Linux's
/// `tcp_max_syn_backlog` on a small machine); `DOCKNET_TCP_SYN_BACKLOG` sets another.
pub const DEFAULT_SYN_BACKLOG: usize = 1024;
/// Environment variable: the SYN queue's depth per listening port.
pub const SYN_BACKLOG_ENV: &str = "DOCKNET_TCP_SYN_BACKLOG";

/// A listening port with a SYN queue and an accept queue, as a kernel's. smoltcp's
/// listening socket takes one handshake, so the engine keeps listening sockets ready (one
/// per connection request waiting in the device, at least [`LISTEN_READY`]) while both
/// queues have room.
struct Listener {
    port: u16,
    /// The SYN queue: sockets listening or handshaking.
    pool: Vec<SocketHandle>,
    /// The accept queue: established connections waiting for `accept`, in the order
    /// the rounds saw them established.
    established: std::collections::VecDeque<SocketHandle>,
    /// Most connections waiting for `accept` (the app's backlog).
    depth: usize,
    /// Most handshakes in progress.
    syn_depth: usize,
}

/// The engine: a pipe device, smoltcp, and the sockets of the app.
pub struct Engine {
    dev: PipeDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    listeners: Vec<Option<Listener>>,
    /// Sockets the app closed; freed once smoltcp is done with them.
    closing: Vec<SocketHandle>,
    /// The sockets ids may name, by handle (one lookup per app call; never per frame).
    records: Records,
    next_generation: u64,
    next_port: u16,
    cfg: EngineConfig,
    epoch: std::time::Instant,
    sleeper: Sleeper,
    ip: Ipv4Addr,
    pipe_removed: bool,
    wake_at: Option<std::time::Instant>,
    /// Retransmission counters of TCP sockets already freed.
    retired: tcp::RetransmitStats,
    /// Buffers for new TCP sockets; freed sockets give theirs back.
    buffers: SocketBufferPool,
    /// Reused by [`Engine::take_ready`] for smoltcp's TCP events.
    tcp_events: Vec<SocketHandle>,
    /// Reused by [`Engine::poll_ingress`] for the endpoints of the burst it looks ahead at.
    upcoming: Vec<(IpEndpoint, IpEndpoint)>,
    /// The per-destination IP MTUs given to smoltcp: fast-channel peers whose channel
    /// carries other packet sizes than the pipe ([`Engine::sync_path_mtus`]).
    path_mtus: Vec<(Ipv4Addr, usize)>,
}

/// Add `b`'s counters to `a`.
fn add_stats(a: &mut tcp::RetransmitStats, b: tcp::RetransmitStats) {
    a.timeouts += b.timeouts;
    a.fast_retransmits += b.fast_retransmits;
    a.partial_ack_retransmits += b.partial_ack_retransmits;
    a.lost_retransmits += b.lost_retransmits;
    a.tail_probes += b.tail_probes;
}

impl Engine {
    /// Attach to the pipe named by `cfg` and bring the interface up.
    pub fn attach(cfg: EngineConfig) -> Result<Engine, AttachError> {
        install_signal_handlers();
        let mut dev = PipeDevice::attach(&cfg.pipe_dir)?;
        if cfg.rx_drop.is_on() {
            log::warn!(
                "fault injection on ({}): dropping some received frames on purpose",
                crate::fault::DROP_ENV
            );
        }
        dev.set_rx_dropper(cfg.rx_drop.clone());
        let info = dev.info().clone();
        let epoch = std::time::Instant::now();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed();
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(info.ipv4), info.prefix_len));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(info.gateway);
        let next_port = 49152 + (random_seed() % 8192) as u16;
        let buffers =
            SocketBufferPool::new(cfg.tcp_rx_buffer, cfg.tcp_tx_buffer, cfg.tcp_spare_buffers);
        Ok(Engine {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            listeners: Vec::new(),
            closing: Vec::new(),
            records: Records::default(),
            next_generation: 1,
            next_port,
            cfg,
            epoch,
            sleeper: Sleeper::default(),
            ip: info.ipv4,
            pipe_removed: false,
            wake_at: None,
            retired: tcp::RetransmitStats::default(),
            buffers,
            tcp_events: Vec::new(),
            upcoming: Vec::with_capacity(crate::device::RX_BURST),
            path_mtus: Vec::new(),
        })
    }

    /// Attach using `DOCKNET_PIPE` and default settings.
    pub fn from_env() -> Result<Engine, AttachError> {
        Self::attach(EngineConfig::from_env())
    }

    /// True if [`Engine::run`] returned because docknetd removed the pipe.
    pub fn pipe_removed(&self) -> bool {
        self.pipe_removed
    }

    /// This service's IPv4 address.
    pub fn local_ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The pipe directory this engine is attached to.
    pub fn pipe_dir(&self) -> &Path {
        &self.cfg.pipe_dir
    }

    /// The device (stats, fast channels).
    pub fn device(&self) -> &PipeDevice {
        &self.dev
    }

    /// The IP MTU toward `dst`: a fast channel's while it carries our frames to `dst`,
    /// else the pipe's (see `sync_path_mtus`). TCP segments to `dst` are at most this
    /// less 40 bytes of headers.
    pub fn path_mtu(&self, dst: Ipv4Addr) -> usize {
        self.iface.path_mtu(IpAddress::Ipv4(dst))
    }

    pub(crate) fn device_mut(&mut self) -> &mut PipeDevice {
        &mut self.dev
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn new_tcp_socket(&mut self) -> tcp::Socket<'static> {
        let (rx, tx) = self.buffers.take();
        let mut s = tcp::Socket::new(rx, tx);
        // Latency first: no Nagle; smoltcp still ACKs every second full segment at once.
        s.set_nagle_enabled(false);
        s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(1)));
        let us = |d: Duration| smoltcp::time::Duration::from_micros(d.as_micros() as u64);
        s.set_rto_bounds(us(self.cfg.tcp_rto_min), us(self.cfg.tcp_rto_initial));
        s.set_tail_loss_probe(true);
        s
    }

    // ---- TCP ----------------------------------------------------------------------

    /// Listen on `port`; at most `backlog` connections wait for [`Engine::accept`]
    /// (handshaking ones included). Connection requests beyond that wait in the device
    /// and then are dropped (their clients retry), never reset.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<ListenerId, NetError> {
        if port == 0 {
            return Err(NetError::Invalid("port 0"));
        }
        if self.listeners.iter().flatten().any(|l| l.port == port) {
            return Err(NetError::PortInUse(port));
        }
        let depth = backlog.max(1);
        let syn_depth = self.cfg.tcp_syn_backlog.max(1);
        let mut pool = Vec::with_capacity(syn_depth.min(1024) + LISTEN_READY);
        for _ in 0..LISTEN_READY.min(depth) {
            pool.push(self.listening_socket(port)?);
        }
        self.listeners.push(Some(Listener {
            port,
            pool,
            established: std::collections::VecDeque::with_capacity(depth.min(1024)),
            depth,
            syn_depth,
        }));
        Ok(ListenerId(self.listeners.len() - 1))
    }

    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, NetError> {
        let mut s = self.new_tcp_socket();
        s.listen(port).map_err(|_| NetError::Invalid("listen"))?;
        Ok(self.sockets.add(s))
    }

    /// Before a round: move finished handshakes to the accept queue, listen again on
    /// sockets whose handshake was reset, and keep a listening socket ready for each
    /// connection request the device holds (at least [`LISTEN_READY`]) on each port whose
    /// queues have room. Returns how many listen (the connection requests this round may
    /// take), `None` if nothing listens.
    fn ready_listeners(&mut self) -> Option<usize> {
        let mut ready_total = None;
        let held = self.dev.held_syns();
        let mut listeners = std::mem::take(&mut self.listeners);
        for lst in listeners.iter_mut().flatten() {
            let (mut ready, handshaking) = self.sort_syn_queue(lst);
            let room = lst
                .depth
                .saturating_sub(lst.established.len())
                .min(lst.syn_depth.saturating_sub(handshaking));
            while ready < LISTEN_READY.max(held).min(room) {
                let mut s = self.new_tcp_socket();
                if s.listen(lst.port).is_err() {
                    break;
                }
                lst.pool.push(self.sockets.add(s));
                ready += 1;
            }
            *ready_total.get_or_insert(0) += ready;
        }
        self.listeners = listeners;
        ready_total
    }

    /// Walk `lst`'s SYN queue: established connections move to the accept queue,
    /// sockets whose handshake was reset listen again. Returns how many sockets listen and
    /// how many are handshaking.
    fn sort_syn_queue(&mut self, lst: &mut Listener) -> (usize, usize) {
        let (mut ready, mut handshaking) = (0, 0);
        let mut i = 0;
        while i < lst.pool.len() {
            let h = lst.pool[i];
            // Read-only unless it must listen again: reaching a socket mutably makes
            // smoltcp look at it in the next egress.
            match self.sockets.get::<tcp::Socket>(h).state() {
                tcp::State::Listen => ready += 1,
                tcp::State::SynReceived => handshaking += 1,
                tcp::State::Closed => {
                    let s = self.sockets.get_mut::<tcp::Socket>(h);
                    if s.listen(lst.port).is_ok() {
                        ready += 1;
                    }
                }
                _ => {
                    lst.established.push_back(lst.pool.swap_remove(i));
                    continue;
                }
            }
            i += 1;
        }
        (ready, handshaking)
    }

    /// An established connection on `l` not yet accepted, if any, in the order the
    /// rounds saw their handshakes finish.
    pub fn accept(&mut self, l: ListenerId) -> Option<TcpId> {
        let mut lst = self.listeners.get_mut(l.0)?.take()?;
        if lst.established.is_empty() {
            // Handshakes finished since the round began.
            self.sort_syn_queue(&mut lst);
        }
        // Skip (and free) connections reset while they waited: nothing left to accept.
        let got = std::iter::from_fn(|| lst.established.pop_front()).find(|&h| {
            let reset = self.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed;
            if reset {
                self.free_tcp_socket(h);
            }
            !reset
        });
        self.listeners[l.0] = Some(lst);
        let h = got?;
        Some(TcpId {
            handle: h,
            generation: self.record(h),
        })
    }

    /// Note that the app may now name `h`; returns its generation. Generations are never
    /// reused, so an id names a live socket (of its own kind: ids are typed) only while
    /// its record holds its generation.
    fn record(&mut self, h: SocketHandle) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.records.insert(h, generation);
        generation
    }

    /// `Ok` if (`h`, `generation`) names a socket the app has not closed.
    fn check(&self, h: SocketHandle, generation: u64) -> Result<(), NetError> {
        match self.records.get(h) {
            Some(g) if g == generation => Ok(()),
            _ => Err(NetError::BadSocket),
        }
    }

    /// Stop listening; pending handshakes are aborted.
    pub fn unlisten(&mut self, l: ListenerId) {
        if let Some(slot) = self.listeners.get_mut(l.0) {
            if let Some(lst) = slot.take() {
                for h in lst.pool.into_iter().chain(lst.established) {
                    self.free_tcp_socket(h);
                }
            }
        }
    }

    /// Start connecting to `remote`. The socket is usable (`is_established`) once the
    /// handshake completes during later rounds.
    pub fn connect(&mut self, remote: SocketAddrV4) -> Result<TcpId, NetError> {
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(NetError::Invalid("connect to port 0 or 0.0.0.0"));
        }
        let mut s = self.new_tcp_socket();
        let local = self.ephemeral_port();
        s.connect(
            self.iface.context(),
            IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port()),
            local,
        )
        .map_err(|_| NetError::Invalid("connect"))?;
        let h = self.sockets.add(s);
        Ok(TcpId {
            handle: h,
            generation: self.record(h),
        })
    }

    /// Connections that may have become readable, writable or closed since the last
    /// call (data or an acknowledgement arrived, the peer closed or reset, a timer ended
    /// the connection), each once, appended to `out` — like epoll: an app visits these
    /// instead of every connection each round. Not listed: what the app did itself (a
    /// write that filled the send buffer is listed again once the peer acknowledges), and
    /// connections not yet accepted (an app handles a connection when it accepts it). A
    /// listed connection may have nothing to do.
    pub fn take_ready(&mut self, out: &mut Vec<TcpId>) {
        let mut events = std::mem::take(&mut self.tcp_events);
        self.sockets.take_tcp_events(&mut events);
        out.extend(events.drain(..).filter_map(|handle| {
            let generation = self.records.get(handle)?;
            Some(TcpId { handle, generation })
        }));
        self.tcp_events = events;
    }

    fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == 65535 { 49152 } else { p + 1 };
        p
    }

    fn tcp(&mut self, id: TcpId) -> Result<&mut tcp::Socket<'static>, NetError> {
        self.check(id.handle, id.generation)?;
        Ok(self.sockets.get_mut::<tcp::Socket>(id.handle))
    }

    /// As [`Engine::tcp`], but `Err(Closed)` once the peer closed and nothing is left to
    /// read.
    fn tcp_readable(&mut self, id: TcpId) -> Result<&mut tcp::Socket<'static>, NetError> {
        let s = self.tcp(id)?;
        if !s.may_recv() && s.recv_queue() == 0 {
            return Err(NetError::Closed);
        }
        Ok(s)
    }

    /// For queries: unlike [`Engine::tcp`], this does not make smoltcp look at the socket
    /// in the next egress.
    fn tcp_ref(&self, id: TcpId) -> Result<&tcp::Socket<'static>, NetError> {
        self.check(id.handle, id.generation)?;
        Ok(self.sockets.get::<tcp::Socket>(id.handle))
    }

    /// The TCP state of a connection.
    pub fn tcp_state(&mut self, id: TcpId) -> Result<tcp::State, NetError> {
        Ok(self.tcp_ref(id)?.state())
    }

    /// True once the connection is established (data can flow both ways); false also
    /// for an id that names no open connection.
    pub fn is_established(&mut self, id: TcpId) -> bool {
        self.tcp_ref(id)
            .is_ok_and(|s| s.state() == tcp::State::Established)
    }

    /// True if the connection can still carry data from us (not closed or reset); false
    /// also for an id that names no open connection.
    pub fn may_send(&mut self, id: TcpId) -> bool {
        self.tcp_ref(id).is_ok_and(|s| s.may_send())
    }

    /// True if the connection is open (not Closed/TimeWait): a failed connect ends here.
    /// False also for an id that names no open connection.
    pub fn is_open(&mut self, id: TcpId) -> bool {
        self.tcp_ref(id).is_ok_and(|s| s.is_open())
    }

    /// Bytes waiting to be read.
    pub fn recv_queue(&mut self, id: TcpId) -> Result<usize, NetError> {
        Ok(self.tcp_ref(id)?.recv_queue())
    }

    /// Free space in the send buffer.
    pub fn send_capacity_left(&mut self, id: TcpId) -> Result<usize, NetError> {
        let s = self.tcp_ref(id)?;
        Ok(s.send_capacity() - s.send_queue())
    }

    /// Read into `buf`. `Ok(0)` means nothing right now; `Err(Closed)` means the peer
    /// closed (or reset) and everything was read.
    pub fn read(&mut self, id: TcpId, buf: &mut [u8]) -> Result<usize, NetError> {
        let s = self.tcp(id)?;
        match s.recv_slice(buf) {
            Ok(n) => Ok(n),
            Err(_) if s.recv_queue() == 0 => Err(NetError::Closed),
            Err(_) => Ok(0),
        }
    }

    /// Zero-copy read: `f` sees the contiguous readable bytes in the socket buffer and
    /// returns how many it consumed and a result. `Err(Closed)` once the peer closed and
    /// nothing is left.
    pub fn recv_with<R>(
        &mut self,
        id: TcpId,
        f: impl FnOnce(&[u8]) -> (usize, R),
    ) -> Result<R, NetError> {
        let s = self.tcp_readable(id)?;
        let mut f = Some(f);
        let mut out = None;
        let r = s.recv(|data| {
            let (n, r) = (f.take().expect("called once"))(data);
            out = Some(r);
            (n.min(data.len()), ())
        });
        match (r, out) {
            (Ok(()), Some(r)) => Ok(r),
            _ => Err(NetError::Closed),
        }
    }

    /// Answer from what was received without a buffer of the app's own: `f` sees the
    /// contiguous readable bytes and the contiguous free send space of the connection at
    /// once, and returns how many bytes it consumed, how many it wrote and a result (an
    /// echo copies each byte once, instead of twice through `read` and `write`).
    /// `Err(Closed)` once the peer closed and nothing is left, or our side closed.
    pub fn recv_send_with<R>(
        &mut self,
        id: TcpId,
        f: impl FnOnce(&[u8], &mut [u8]) -> (usize, usize, R),
    ) -> Result<R, NetError> {
        self.tcp_readable(id)?
            .recv_send_with(|rx, tx| f(rx, tx))
            .map_err(|_| NetError::Closed)
    }

    /// Queue bytes to send; returns how many fit (0 when the send buffer is full).
    pub fn write(&mut self, id: TcpId, data: &[u8]) -> Result<usize, NetError> {
        let s = self.tcp(id)?;
        if !s.may_send() {
            return Err(NetError::Closed);
        }
        s.send_slice(data).map_err(|_| NetError::Closed)
    }

    /// Write without copying into the send buffer: the socket keeps a reference to
    /// `data` until the peer acknowledges it, and each segment is copied from it straight
    /// into a frame (one copy per byte instead of two). Returns the bytes queued, as
    /// [`Engine::write`] (static bytes take up the send buffer as copied ones do). A
    /// socket holds at most four static slices at a time; beyond that `data` is copied.
    /// Segments never span a static slice and other bytes, so a response meant to leave
    /// in one segment is best written as one slice (head and body together).
    pub fn write_static(&mut self, id: TcpId, data: &'static [u8]) -> Result<usize, NetError> {
        let s = self.tcp(id)?;
        if !s.may_send() {
            return Err(NetError::Closed);
        }
        match s.send_static(data) {
            Ok(0) if !data.is_empty() => s.send_slice(data),
            r => r,
        }
        .map_err(|_| NetError::Closed)
    }

    /// Zero-copy write: `f` fills the contiguous free space of the send buffer and
    /// returns how many bytes it wrote and a result.
    pub fn send_with<R>(
        &mut self,
        id: TcpId,
        f: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> Result<R, NetError> {
        let s = self.tcp(id)?;
        if !s.may_send() {
            return Err(NetError::Closed);
        }
        let mut f = Some(f);
        let mut out = None;
        let r = s.send(|space| {
            let (n, r) = (f.take().expect("called once"))(space);
            out = Some(r);
            (n.min(space.len()), ())
        });
        match (r, out) {
            (Ok(()), Some(r)) => Ok(r),
            _ => Err(NetError::Closed),
        }
    }

    /// Close our side gracefully (FIN after queued data). The socket is freed by the
    /// engine when the connection is over; the id is spent (using it again is
    /// `Err(BadSocket)`).
    pub fn close(&mut self, id: TcpId) -> Result<(), NetError> {
        self.tcp(id)?.close();
        self.spend(id.handle);
        self.closing.push(id.handle);
        Ok(())
    }

    /// The app gave up id `h` (closed or aborted): it names nothing from now on, though
    /// the socket may linger until its FIN exchange ends.
    fn spend(&mut self, h: SocketHandle) {
        self.records.remove(h);
    }

    /// Sockets closed by the app whose connections are not finished yet (FIN not yet
    /// acknowledged). An app that wants its last bytes delivered runs until this is 0.
    pub fn closing_count(&self) -> usize {
        self.closing.len()
    }

    /// Reset the connection and free the socket now; the id is spent.
    pub fn abort(&mut self, id: TcpId) -> Result<(), NetError> {
        self.tcp(id)?.abort();
        self.spend(id.handle);
        self.closing.push(id.handle);
        Ok(())
    }

    // ---- UDP ----------------------------------------------------------------------

    /// Bind a UDP socket to `port` (0: an ephemeral port).
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpId, NetError> {
        let port = if port == 0 {
            self.ephemeral_port()
        } else {
            port
        };
        let meta = || vec![udp::PacketMetadata::EMPTY; 1024];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; 256 * 1024]),
            udp::PacketBuffer::new(meta(), vec![0; 256 * 1024]),
        );
        s.bind(port).map_err(|_| NetError::PortInUse(port))?;
        let h = self.sockets.add(s);
        Ok(UdpId {
            handle: h,
            generation: self.record(h),
        })
    }

    /// Queue a datagram to `to`. Returns false if the send buffer is full (datagram not queued).
    pub fn udp_send_to(
        &mut self,
        id: UdpId,
        data: &[u8],
        to: SocketAddrV4,
    ) -> Result<bool, NetError> {
        self.check(id.handle, id.generation)?;
        let s = self.sockets.get_mut::<udp::Socket>(id.handle);
        match s.send_slice(data, IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port())) {
            Ok(()) => Ok(true),
            Err(udp::SendError::BufferFull) => Ok(false),
            Err(_) => Err(NetError::Invalid("udp send")),
        }
    }

    /// Take one received datagram, if any: `Ok(Some((length copied into buf, sender)))`.
    pub fn udp_recv_from(
        &mut self,
        id: UdpId,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV4)>, NetError> {
        self.check(id.handle, id.generation)?;
        let s = self.sockets.get_mut::<udp::Socket>(id.handle);
        let Ok((n, meta)) = s.recv_slice(buf) else {
            return Ok(None);
        };
        let IpAddress::Ipv4(ip) = meta.endpoint.addr;
        Ok(Some((n, SocketAddrV4::new(ip, meta.endpoint.port))))
    }

    /// Free a UDP socket; the id is spent.
    pub fn udp_close(&mut self, id: UdpId) -> Result<(), NetError> {
        self.check(id.handle, id.generation)?;
        self.records.remove(id.handle);
        self.sockets.remove(id.handle);
        Ok(())
    }

    // ---- the loop -----------------------------------------------------------------

    /// One round without the app: fast channels and RX → smoltcp → TX, then publish.
    /// Returns true if anything happened (frames moved or sockets changed).
    pub fn poll(&mut self) -> bool {
        let received = self.poll_ingress();
        self.poll_egress() || received
    }

    /// The first half of [`Engine::poll`]: frames in, each to its socket (and what
    /// smoltcp answers at once: resets, duplicate ACKs); queued data is not sent. `run`
    /// lets the app answer before the second half, so an answer carries the ACK of what
    /// it answers, and a socket that received a request is dispatched once, with its
    /// answer, not also before it (with nothing to send but a delayed-ACK timer to arm,
    /// which cost a timer entry per request). True if anything arrived or changed.
    fn poll_ingress(&mut self) -> bool {
        self.dev.maintain();
        self.sync_path_mtus();
        let before = self.dev.stats;
        let now = self.now();
        let ready = self.ready_listeners();
        self.dev.set_syn_budget(ready);
        self.dev.new_rx_burst();
        self.iface.poll_maintenance(now);
        // Look at the burst before taking it: its sockets load into the caches while the
        // first frames are processed.
        self.dev.upcoming_tcp(&mut self.upcoming);
        self.sockets.prefetch_tcp_index(&self.upcoming);
        for tuple in self.upcoming.iter().take(PREFETCH_AHEAD) {
            self.sockets.prefetch_tcp_socket(tuple);
        }
        let mut changed = false;
        for taken in 0.. {
            if let Some(tuple) = self.upcoming.get(taken + PREFETCH_AHEAD) {
                self.sockets.prefetch_tcp_socket(tuple);
            }
            match self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets)
            {
                smoltcp::iface::PollIngressSingleResult::None => break,
                smoltcp::iface::PollIngressSingleResult::PacketProcessed => {}
                smoltcp::iface::PollIngressSingleResult::SocketStateChanged => changed = true,
            }
        }
        let after = self.dev.stats;
        changed
            || after.rx_pipe_frames != before.rx_pipe_frames
            || after.rx_fc_frames != before.rx_fc_frames
            || after.tx_pipe_frames != before.tx_pipe_frames
            || after.tx_fc_frames != before.tx_fc_frames
    }

    /// The second half of [`Engine::poll`]: send what the sockets have queued (and what
    /// their timers call for), publish the frames, free closed sockets. True if anything
    /// was sent or changed.
    fn poll_egress(&mut self) -> bool {
        let before = self.dev.stats;
        let now = self.now();
        let mut changed = false;
        while self
            .iface
            .poll_egress(now, &mut self.dev, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged
        {
            changed = true;
        }
        self.dev.flush();
        self.reap_closed();
        let after = self.dev.stats;
        changed
            || after.tx_pipe_frames != before.tx_pipe_frames
            || after.tx_fc_frames != before.tx_fc_frames
    }

    /// Give smoltcp the IP MTU of each fast channel that carries our frames now, for its
    /// peer: connections to it then use segments as large as the channel's buffers (at
    /// most 65,000 bytes by default, against the pipe's 9,000), which a fast channel can
    /// carry since no link lies between the two services. When the channel goes (its
    /// peer detached, or `fc rm`) the peer's MTU falls back to the pipe's, and smoltcp
    /// sends (and resends) in pipe-sized segments again. Cheap when nothing changed.
    fn sync_path_mtus(&mut self) {
        let have = &self.path_mtus;
        let mut n = 0;
        let same = self.dev.direct_path_mtus().all(|p| {
            n += 1;
            have.contains(&p)
        }) && n == have.len();
        if same {
            return;
        }
        for (ip, _) in self.path_mtus.drain(..) {
            self.iface.set_path_mtu(IpAddress::Ipv4(ip), None);
            log::debug!("path MTU to {ip}: the pipe's again");
        }
        for (ip, mtu) in self.dev.direct_path_mtus() {
            if self.iface.set_path_mtu(IpAddress::Ipv4(ip), Some(mtu)) {
                log::debug!("path MTU to {ip}: {mtu} (fast channel)");
            } else if self.path_mtus.len() == smoltcp::iface::IFACE_MAX_PATH_MTU_COUNT {
                // Said once per change, for the first peer left out.
                log::warn!(
                    "fast channel to {ip}: more than {} peers with their own MTU; using the pipe's",
                    smoltcp::iface::IFACE_MAX_PATH_MTU_COUNT
                );
            }
            // Kept either way, so an unchanged set is not tried (and warned about) again.
            self.path_mtus.push((ip, mtu));
        }
    }

    fn reap_closed(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let mut closing = std::mem::take(&mut self.closing);
        closing.retain(|&h| {
            let s = self.sockets.get::<tcp::Socket>(h);
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                self.free_tcp_socket(h);
            }
            !done
        });
        self.closing = closing;
    }

    /// Remove TCP socket `h`: its counters go to the retired total, its buffers back to
    /// the pool.
    fn free_tcp_socket(&mut self, h: SocketHandle) {
        if let smoltcp::socket::Socket::Tcp(s) = self.sockets.remove(h) {
            add_stats(&mut self.retired, s.retransmit_stats());
            self.buffers.recycle(s);
        }
    }

    /// How often this engine's TCP connections retransmitted, and why, since it started
    /// (sockets freed already included).
    pub fn tcp_retransmit_stats(&self) -> tcp::RetransmitStats {
        let mut total = self.retired;
        for (_, sock) in self.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(t) = sock {
                add_stats(&mut total, t.retransmit_stats());
            }
        }
        total
    }

    /// Run the app until it returns [`Control::Exit`] (then the connections it left open
    /// are closed gracefully, for at most [`EXIT_GRACE`], and the rest reset) or
    /// SIGTERM/SIGINT arrives (the same, for at most a second). Each round: receive, smoltcp,
    /// `app`, transmit; when idle for `idle.spin`, sleep on the doorbells until a frame
    /// arrives or a TCP timer is due.
    pub fn run(&mut self, mut app: impl FnMut(&mut Engine) -> Control) {
        let mut last_busy = std::time::Instant::now();
        let mut last_fc_rx = last_busy;
        let mut spins = 0u32;
        loop {
            let fc_frames = self.dev.stats.rx_fc_frames;
            // Frames in, the app, frames out: what the app answers leaves in this round.
            let mut busy = self.poll_ingress();
            if terminate_requested() {
                self.close_all(Duration::from_secs(1));
                return;
            }
            if self.dev.pipe_broken() {
                log::error!(
                    "{}: the pipe file was truncated under this service; stopping",
                    self.cfg.pipe_dir.display()
                );
                self.pipe_removed = true;
                return;
            }
            if self.dev.pipe_closed() {
                log::error!(
                    "{}: docknetd removed this pipe; stopping",
                    self.cfg.pipe_dir.display()
                );
                self.pipe_removed = true;
                return;
            }
            if app(self) == Control::Exit {
                // As a kernel does when a process exits: close what the app left open.
                // Otherwise peers keep connections to a process that is gone, and a
                // restarted client whose new connections reuse their ports cannot
                // connect (its SYNs meet the stale connections).
                self.close_all(EXIT_GRACE);
                return;
            }
            busy |= self.poll_egress();
            let now = std::time::Instant::now();
            if busy {
                last_busy = now;
                if self.dev.stats.rx_fc_frames != fc_frames {
                    last_fc_rx = now;
                }
                continue;
            }
            if now.duration_since(last_fc_rx) < self.cfg.idle.fc_spin {
                // A fast-channel partner's answer is likely within microseconds (see
                // `IdlePolicy::fc_spin`).
                core::hint::spin_loop();
                continue;
            }
            if now.duration_since(last_busy) < self.cfg.idle.spin {
                // Yield while spinning: with more busy engines than cores (the master and
                // two services on two cores), a pure spin would hold the core for a whole
                // scheduler slice while the thread that has our next frame waits for it.
                self.cfg.idle.spin_once(&mut spins);
                continue;
            }
            self.sleep();
            last_busy = std::time::Instant::now();
        }
    }

    /// Close every TCP connection gracefully (FIN after queued data), give them up to
    /// `grace` to finish, then reset what is left so peers learn at once.
    fn close_all(&mut self, grace: Duration) {
        for (_, sock) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(t) = sock {
                if t.is_listening() {
                    t.abort();
                } else {
                    t.close();
                }
            }
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            self.poll();
            let open = self.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => !matches!(
                    t.state(),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                ),
                _ => false,
            });
            if !open {
                return;
            }
            std::thread::yield_now();
        }
        for (_, sock) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(t) = sock {
                t.abort();
            }
        }
        self.poll();
    }

    /// Make the engine wake up by `at` even if no frame arrives (an app timer). The
    /// earliest pending wake-up wins; it is cleared once passed.
    pub fn wake_at(&mut self, at: std::time::Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Sleep until a doorbell rings or smoltcp's next deadline (at most `idle.max_sleep`).
    fn sleep(&mut self) {
        let now = self.now();
        let delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(self.cfg.idle.max_sleep)
            .min(self.cfg.idle.max_sleep);
        let delay = match self.wake_at {
            Some(at) => {
                let now = std::time::Instant::now();
                if at <= now {
                    self.wake_at = None;
                    return;
                }
                delay.min(at - now)
            }
            None => delay,
        };
        if delay.is_zero() {
            return;
        }
        // SAFETY: the bells point into mappings owned by `self.dev`, which is not changed
        // between prepare and wait/cancel.
        unsafe { self.sleeper.prepare(self.dev.bells()) };
        if self.dev.has_rx_work() || self.dev.fc_changed() || self.dev.pipe_closed() {
            self.sleeper.cancel();
        } else {
            self.sleeper.wait(delay);
        }
    }
}

/// Set by SIGTERM/SIGINT; `Engine::run` returns when it sees it, so the pipe and fast
/// channels are detached cleanly (and can be attached again).
static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_sig: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction with a handler that only stores to an atomic
            // (async-signal-safe); no SA_RESTART, so a futex sleep returns with EINTR and
            // the loop notices the flag at once.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = on_terminate as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, core::ptr::null_mut());
            }
        }
    });
}

/// True once SIGTERM or SIGINT arrived.
pub fn terminate_requested() -> bool {
    TERMINATE.load(Ordering::Relaxed)
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
    // splitmix64 finaliser: spread the bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}
