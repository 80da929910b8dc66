//! The control plane: the state of pipes and fast channels ([`Control`]), and, in its
//! modules, the protocol on `RUN_DIR/docknetd.sock` ([`protocol`]), the socket server
//! ([`server`]) and client ([`client`]). Changes reach the data path as [`DpMsg`]
//! messages followed by a ring of its private doorbell.

pub mod client;
pub mod clusters;
mod error;
pub mod protocol;
mod routes;
pub mod server;

pub use client::{connect_error, request, ClientError};
pub use error::ControlError;
pub use protocol::*;
pub use server::{answer, lock, serve};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use docknet_pipe::abi::{pipe_flags, ChannelGeometry, Doorbell, MAX_MTU, MIN_MTU, SMALL_POOL_MTU};
use docknet_pipe::channel::ChannelFaults;
use docknet_pipe::fc::{close_fc_file, create_fc_file_with};
use docknet_pipe::pipe::{create_pipe_file, MasterPipeEnd, PipeConfig, PipeControl, FC_DIR};
use docknet_pipe::shm::SharedMap;
use serde_json::{json, Value};

use crate::beneath;
use crate::net::{self, fmt_mac, mac_for_ip};
use crate::rate::bytes_per_sec_from_mbps;
use crate::state::{SavedFc, SavedPipe, SavedState};
use crate::stats::{snapshot, PipeStats, StatsSnapshot};
use crate::switch::DpMsg;
use crate::users::Peer;

/// Name of the control socket inside the run directory.
pub const SOCKET_NAME: &str = "docknetd.sock";
/// Directory (inside the run directory) holding one directory per pipe.
pub const PIPES_DIR: &str = "pipes";
/// Default IP MTU of a pipe on a link (at most; the link's MTU if smaller, or more with
/// GSO: [`pipe_mtu_for`]). Without a NIC pipes default to [`MAX_MTU`]
/// ([`Control::default_pipe_mtu`]).
pub const DEFAULT_MTU: u32 = 9000;
/// Default IP MTU of a fast channel between two pipes of one MTU, neither of which
/// forwards for others: the channel joins two services with no link between them, so its
/// packets can be as large as IP allows, and their TCP connections then cost a fraction
/// of the per-segment work (each service uses it toward its peer only while the channel
/// carries its frames; the pipes' MTU elsewhere). 200 KB ping-pong over a fast channel:
/// +29% goodput against 9000 (docs/benchmarks.md). See [`fc_mtu`] for the other cases.
pub const DEFAULT_FC_MTU: u32 = MAX_MTU;
/// Large buffers per direction of a pipe or fast channel whose MTU exceeds
/// [`SMALL_POOL_MTU`] (9000), beside its small ones ([`channel_pools`]). Files are
/// allocated and mapped whole, so 1,024 buffers of 64 KiB would cost 127 MiB per pipe;
/// most frames (requests, ACKs, replies at 10,000 connections) are small and take a small
/// buffer, and only the large TCP segments between local services take one of these. 32
/// hold a 1 MiB TCP window of 64 KB segments twice over (2 MiB a direction).
pub const LARGE_NBUFS: u32 = 32;

/// Buffers per direction of a pipe or fast channel of IP MTU `mtu`: (small, large). While
/// a buffer for [`SMALL_POOL_MTU`] holds its frames (up to 9010, cache-line rounding),
/// one pool of [`nbufs_for_mtu`] buffers of the MTU; above,
/// [`nbufs_for_mtu`]`(SMALL_POOL_MTU)` (1,024) buffers for frames up to 9000 bytes and
/// [`LARGE_NBUFS`] for the larger ones: 22 MiB per pipe at 65000, against 127 MiB with
/// 1,024 buffers of the MTU (18 MiB at 9000).
pub fn channel_pools(mtu: u32) -> (u32, u32) {
    if ChannelGeometry::has_large_pool(mtu) {
        (nbufs_for_mtu(SMALL_POOL_MTU), LARGE_NBUFS)
    } else {
        (nbufs_for_mtu(mtu), 0)
    }
}

/// The IP MTU of a new fast channel between pipes `a` and `b` (name, MTU, forwarder),
/// `forward` as `fc create --forward`, `asked` as `--mtu`.
///
/// Larger than the pipes' MTU only where falling back to the master stays safe and no
/// third party is behind either end: both pipes have one MTU (when the channel goes,
/// connections between the two go on at that MTU; with two MTUs the larger side would
/// then send frames the smaller pipe cannot take) and neither forwards for others (a
/// NAT's members see their clients as the NAT: their segments must fit the NAT's pipe).
/// Otherwise the smaller pipe's MTU, the only one allowed.
pub fn fc_mtu(
    a: (&str, u32, bool),
    b: (&str, u32, bool),
    forward: bool,
    asked: Option<u32>,
) -> Result<u32, ControlError> {
    let base = a.1.min(b.1);
    let why_not = if a.1 != b.1 {
        Some(format!(
            "pipes {:?} and {:?} have different MTUs ({} and {})",
            a.0, b.0, a.1, b.1
        ))
    } else if let Some(p) = [a, b].into_iter().find(|p| p.2) {
        Some(format!("pipe {:?} forwards for others (--forwarder)", p.0))
    } else if forward {
        Some("the channel forwards (--forward)".to_string())
    } else {
        None
    };
    match (asked, why_not) {
        (None, None) => Ok(DEFAULT_FC_MTU),
        (None, Some(_)) => Ok(base),
        (Some(m), None) if m >= base => Ok(m),
        (Some(m), None) => Err(ControlError::Invalid(format!(
            "fast-channel MTU {m} is below the pipes' MTU {base}: frames their services send at \
             their pipes' MTU would not fit"
        ))),
        (Some(m), Some(_)) if m == base => Ok(m),
        (Some(m), Some(why)) => Err(ControlError::Invalid(format!(
            "fast-channel MTU {m}: {why}, so the channel keeps the smaller pipe's MTU {base}"
        ))),
    }
}

/// The fewest buffers a channel gets (see [`nbufs_for_mtu`]).
pub const MIN_NBUFS: u32 = 1024;
/// Bytes of frame buffering a channel should at least have: more than a TCP window of
/// the default 1 MiB socket buffers, so a service that falls behind for a moment loses no
/// frames (a loss costs smoltcp a retransmission timeout).
const CHANNEL_BYTES: u32 = 4 << 20;

/// Buffers per direction for a pipe or fast channel of IP MTU `mtu`: enough for
/// [`CHANNEL_BYTES`] (4096 at MTU 1500), and never fewer than [`MIN_NBUFS`]: a link peer
/// may fill a large-MTU pipe with 1500-byte frames, each taking a whole buffer, and the
/// channel must still hold a 1 MiB TCP window of them (a drop stalls smoltcp on a
/// retransmission timeout). The file is allocated whole (`fallocate`, so a full tmpfs
/// fails at creation, not with a SIGBUS later): 9 MiB per direction at MTU 9000. Above
/// 9000 a channel has two pools instead ([`channel_pools`]).
pub fn nbufs_for_mtu(mtu: u32) -> u32 {
    (CHANNEL_BYTES / (mtu + 64))
        .clamp(MIN_NBUFS, 4096)
        .next_power_of_two()
        .min(4096)
}
/// Hand pipe `name`'s pipe file (`map`), `fc/` and directory to `owner`, with modes that
/// let no one else in (0600 file, 0700 directories). Through descriptors reached without
/// following links, innermost first: the owner can write the directory only once it is
/// theirs, and nothing they plant in it is ever chmod'ed or chown'ed.
fn give_pipe_to(
    pipes_dir: &Path,
    name: &str,
    map: &SharedMap,
    (uid, gid): (u32, u32),
) -> Result<(), ControlError> {
    let fc = beneath::open_dir(pipes_dir, &Path::new(name).join(FC_DIR));
    let dir = beneath::open_dir(pipes_dir, Path::new(name));
    let what = |p: &str, e: &dyn std::fmt::Display| ControlError::Give {
        path: pipes_dir.join(name).join(p),
        owner: (uid, gid),
        why: e.to_string(),
    };
    let fc = fc.map_err(|e| what(FC_DIR, &e))?;
    let dir = dir.map_err(|e| what("", &e))?;
    for (fd, mode, p) in [
        (map.file().as_fd(), 0o600, docknet_pipe::pipe::PIPE_FILE),
        (fc.as_fd(), 0o700, FC_DIR),
        (dir.as_fd(), 0o700, ""),
    ] {
        beneath::chown_mod(fd, (uid, gid), mode).map_err(|e| what(p, &e))?;
    }
    Ok(())
}

/// The name a fast channel to `peer` has in a pipe's `fc/` directory.
fn fc_file_name(peer: &str) -> PathBuf {
    PathBuf::from(format!("{peer}.map"))
}

struct PipeRec {
    slot: usize,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
    mac: [u8; 6],
    mtu: u32,
    rate_mbps: Option<u64>,
    /// May send with foreign source addresses (`--forwarder`).
    forwarder: bool,
    /// (uid, gid) owning the directory and files.
    owner: (u32, u32),
    dir: PathBuf,
    control: PipeControl,
    stats: Arc<PipeStats>,
    faults: Arc<ChannelFaults>,
}

struct FcRec {
    /// Side a (the first name given at creation) and side b.
    a: String,
    b: String,
    mtu: u32,
    /// `a` may forward to `b`.
    forward: bool,
    map: SharedMap,
}

/// The control plane's state. Lives behind a `Mutex` shared by connection threads; the
/// data path never touches it.
pub struct Control {
    run_dir: PathBuf,
    pipes: BTreeMap<String, PipeRec>,
    /// Keyed by the two names in sorted order.
    fcs: BTreeMap<(String, String), FcRec>,
    free_slots: Vec<usize>,
    next_slot: usize,
    dp: Sender<DpMsg>,
    bell: Arc<Doorbell>,
    closed: bool,
    /// Set by `docknetctl shutdown`: `Some(remove_all)`.
    exit_request: Option<bool>,
    /// What the state file holds now (written by this daemon), to skip rewriting it when a
    /// request changed nothing (a refused one).
    state_written: Option<SavedState>,
    /// The group that may use the control socket besides root (`--group`).
    group: Option<u32>,
    /// Who sent the request being served (`None`: root, in process).
    caller: Option<Peer>,
    link: Option<LinkInfo>,
    /// Gateway addresses already given to the TAP's kernel side.
    tap_addrs: std::collections::BTreeSet<(Ipv4Addr, u8)>,
    /// Clusters this daemon supervises (`docknetctl cluster`).
    clusters: BTreeMap<String, clusters::ClusterRec>,
    /// Routes to other nodes' subnets (`docknetctl route`).
    routes: BTreeMap<crate::route::Prefix, routes::RouteRec>,
}

/// What the control plane knows of the NIC.
pub struct LinkInfo {
    /// e.g. `tap:dn0`.
    pub name: String,
    /// The TAP's interface name, when the NIC is a TAP (its kernel side gets the gateways).
    pub tap: Option<String>,
    /// IP MTU of the link (what one frame on the wire carries).
    pub mtu: u32,
    /// The default MTU of new pipes: [`pipe_mtu_for`] the link.
    pub pipe_mtu: u32,
    /// How long a neighbour's ARP answer is trusted (`docknetd --arp-reachable`).
    pub arp_reachable: std::time::Duration,
    /// docknetd's own address on the link and its prefix (`docknetd --link-ip`): the
    /// next hop other nodes route to. Routes need it.
    pub ip: Option<(Ipv4Addr, u8)>,
    pub stats: Arc<crate::link::LinkStats>,
}

/// The default MTU of new pipes on a link of IP MTU `link_mtu` whose NIC sends and
/// receives GSO frames of up to `gso_max_frame` bytes (Ethernet header included; equal to
/// the MTU's frame size without GSO): the link MTU (at most [`DEFAULT_MTU`]) without GSO;
/// with GSO, the largest frame it takes, up to [`MAX_MTU`] (65000), so services send and
/// receive ~64 KB TCP segments that the link cuts to its MTU.
pub fn pipe_mtu_for(link_mtu: u32, gso_max_frame: usize) -> u32 {
    let gso_mtu = gso_max_frame.saturating_sub(net::ETH_LEN) as u32;
    if gso_mtu > link_mtu {
        gso_mtu.min(MAX_MTU).max(link_mtu.min(DEFAULT_MTU))
    } else {
        link_mtu.min(DEFAULT_MTU)
    }
}

fn fc_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Control {
    /// State for the run directory `run_dir`, talking to the data path through `dp` + `bell`.
    pub fn new(run_dir: &Path, dp: Sender<DpMsg>, bell: Arc<Doorbell>) -> Self {
        Control {
            run_dir: run_dir.to_path_buf(),
            pipes: BTreeMap::new(),
            fcs: BTreeMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            dp,
            bell,
            closed: false,
            exit_request: None,
            state_written: None,
            group: None,
            caller: None,
            link: None,
            tap_addrs: Default::default(),
            clusters: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }

    /// Start capturing pipe `name`: returns its slot and the reader end.
    pub fn capture_start(
        &self,
        name: &str,
    ) -> Result<(usize, u64, crate::capture::CaptureReader), ControlError> {
        let p = self
            .pipes
            .get(name)
            .ok_or_else(|| ControlError::NoPipe(name.to_string()))?;
        static NEXT_CAPTURE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed);
        let (tap, reader) = crate::capture::pair(id);
        self.tell_dp(DpMsg::CaptureStart {
            slot: p.slot,
            tap: Box::new(tap),
        })?;
        Ok((p.slot, id, reader))
    }

    /// Stop capture session `id` on the pipe in `slot`.
    pub fn capture_stop(&self, slot: usize, id: u64) {
        let _ = self.tell_dp(DpMsg::CaptureStop { slot, id });
    }

    /// Tell the control plane about the NIC the data path uses.
    pub fn set_link(&mut self, link: LinkInfo) {
        self.link = Some(link);
    }

    fn pipes_dir(&self) -> PathBuf {
        self.run_dir.join(PIPES_DIR)
    }

    /// Send a message to the data path and wake it.
    fn tell_dp(&self, msg: DpMsg) -> Result<(), ControlError> {
        self.dp.send(msg).map_err(|_| ControlError::DataPathGone)?;
        self.bell.ring();
        Ok(())
    }

    /// Serve one request from root (in-process callers).
    pub fn handle(&mut self, req: Request) -> Result<Value, ControlError> {
        self.handle_from(req, None)
    }

    /// Serve one request from `caller` (`None`: root, in process); after a change, rewrite
    /// the state file.
    pub fn handle_from(
        &mut self,
        req: Request,
        caller: Option<Peer>,
    ) -> Result<Value, ControlError> {
        self.caller = caller;
        let r = self.handle_checked(req);
        self.caller = None;
        r
    }

    /// Whether `p` may use the control socket: root, or a member of `--group`.
    pub fn allows(&self, p: &Peer) -> bool {
        p.is_root() || self.group.is_some_and(|g| p.in_group(g))
    }

    /// The group allowed besides root (`docknetd --group`).
    pub fn set_group(&mut self, gid: Option<u32>) {
        self.group = gid;
    }

    /// The owner of a new pipe: `asked` if the caller may give it, else the caller.
    fn owner_for(&self, asked: Option<&str>) -> Result<(u32, u32), ControlError> {
        let caller = self.caller.filter(|p| !p.is_root());
        match (asked, caller) {
            (None, None) => Ok((0, 0)),
            (None, Some(p)) => Ok((p.uid, p.gid)),
            (Some(s), None) => crate::users::owner(s).map_err(ControlError::Invalid),
            (Some(s), Some(p)) => {
                let o = crate::users::owner(s).map_err(ControlError::Invalid)?;
                if o.0 != p.uid {
                    return Err(ControlError::Denied(format!(
                        "permission denied: only root may make a pipe for another user (you are uid {}, --owner {s} is uid {})",
                        p.uid, o.0
                    )));
                }
                Ok(o)
            }
        }
    }

    fn handle_checked(&mut self, req: Request) -> Result<Value, ControlError> {
        if self.closed {
            return Err(ControlError::Unavailable(
                "docknetd is shutting down".into(),
            ));
        }
        let changes = matches!(
            req,
            Request::PipeCreate { .. }
                | Request::PipeRm { .. }
                | Request::FcCreate { .. }
                | Request::FcRm { .. }
                | Request::RateSet { .. }
                | Request::RateClear { .. }
                | Request::ClusterUp { .. }
                | Request::ClusterScale { .. }
                | Request::ClusterDrain { .. }
                | Request::ClusterWeight { .. }
                | Request::ClusterDown { .. }
                | Request::RouteAdd { .. }
                | Request::RouteRm { .. }
        );
        let r = self.handle_one(req);
        if changes {
            // Also after a failure: a half-done change (a pipe removed whose directory
            // could not be deleted) is still a change.
            self.save_state();
        }
        r
    }

    /// What `docknetctl shutdown` asked for, once it has: `Some(remove_all)`.
    pub fn exit_request(&self) -> Option<bool> {
        self.exit_request
    }

    fn handle_one(&mut self, req: Request) -> Result<Value, ControlError> {
        match req {
            Request::Shutdown { remove_all } => {
                // The connection thread raises SIGTERM once the answer is out.
                self.exit_request = Some(remove_all);
                Ok(json!({ "stopping": true, "remove_all": remove_all }))
            }
            Request::Ping => Ok(json!("pong")),
            Request::PipeCreate {
                name,
                ip,
                mtu,
                rate_mbps,
                forwarder,
                owner,
            } => {
                let owner = self.owner_for(owner.as_deref())?;
                self.pipe_create(&name, &ip, mtu, (rate_mbps, forwarder), owner)
                    .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            }
            Request::PipeRm { name } => {
                if let Some(c) = self.cluster_of_pipe(&name) {
                    return Err(ControlError::Conflict(format!(
                        "pipe {name:?} belongs to cluster {c:?}: use docknetctl cluster scale or cluster down"
                    )));
                }
                self.pipe_rm(&name).map(|()| json!({ "removed": name }))
            }
            Request::PipeLs => Ok(serde_json::to_value(self.pipe_ls()).unwrap_or(Value::Null)),
            Request::FcCreate { a, b, forward, mtu } => self
                .fc_create(&a, &b, forward, mtu)
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null)),
            Request::FcRm { a, b } => self.fc_rm(&a, &b).map(|()| json!({ "removed": [a, b] })),
            Request::FcLs => Ok(serde_json::to_value(self.fc_ls()).unwrap_or(Value::Null)),
            Request::Stats { name } => self
                .stats(name.as_deref())
                .map(|m| serde_json::to_value(m).unwrap_or(Value::Null)),
            Request::RateSet { name, mbps } => self.rate_set(&name, Some(mbps)),
            Request::RateClear { name } => self.rate_set(&name, None),
            Request::Capture { .. } => Err(ControlError::Unavailable(
                "capture needs its own connection (docknetctl capture)".into(),
            )),
            Request::Link => match &self.link {
                Some(l) => Ok(json!({
                    "name": l.name,
                    "mtu": l.mtu,
                    "arp_reachable_ms": l.arp_reachable.as_millis() as u64,
                    "link_ip": l.ip.map(|(a, p)| format!("{a}/{p}")),
                    "counters": l.stats.snapshot()
                })),
                None => Err(ControlError::Unavailable(
                    "docknetd runs with --nic none: there is no NIC".into(),
                )),
            },
            Request::Attach { name, pid } => {
                let dir = self.pipe_mut(&name)?.dir.clone();
                crate::attach::attach(&dir, pid).map_err(|e| ControlError::Attach {
                    name: name.clone(),
                    pid,
                    why: e.to_string(),
                })?;
                log::info!(
                    "pipe {name}: mounted at {} in the mount namespace of pid {pid}",
                    crate::attach::MOUNT_POINT
                );
                Ok(json!({ "name": name, "pid": pid, "mounted_at": crate::attach::MOUNT_POINT }))
            }
            Request::ClusterUp { spec, owner } => self.cluster_up(spec, owner.as_deref()),
            Request::ClusterStatus { name } => self.cluster_status(&name),
            Request::ClusterLs => Ok(self.cluster_ls()),
            Request::ClusterScale { name, replicas } => self.cluster_scale(&name, replicas),
            Request::ClusterDrain { name, member } => self.cluster_weight(&name, &member, 0),
            Request::ClusterWeight {
                name,
                member,
                weight,
            } => self.cluster_weight(&name, &member, weight),
            Request::ClusterDown { name } => self.cluster_down(&name),
            Request::RouteAdd { cidr, via } => self.route_add(&cidr, &via),
            Request::RouteRm { cidr } => self.route_rm(&cidr),
            Request::RouteLs => Ok(self.route_ls()),
        }
    }

    /// Set (`Some`) or lift (`None`) the rate limit of pipe `name`.
    fn rate_set(&mut self, name: &str, mbps: Option<u64>) -> Result<Value, ControlError> {
        let rate = mbps
            .map(bytes_per_sec_from_mbps)
            .transpose()
            .map_err(ControlError::Invalid)?;
        let slot = self.pipe_mut(name)?.slot;
        self.tell_dp(DpMsg::SetRate {
            slot,
            bytes_per_sec: rate,
        })?;
        self.pipe_mut(name)?.rate_mbps = mbps;
        // Fast channels bypass the master: say which ones the limit does not cover.
        let unlimited: Vec<&str> = self
            .fcs
            .values()
            .filter_map(|f| {
                if f.a == name {
                    Some(f.b.as_str())
                } else if f.b == name {
                    Some(f.a.as_str())
                } else {
                    None
                }
            })
            .collect();
        match mbps {
            Some(m) => {
                log::info!("pipe {name}: rate limit {m} Mbit/s on what it sends through the master")
            }
            None => log::info!("pipe {name}: rate limit removed"),
        }
        Ok(json!({
            "name": name,
            "rate_mbps": mbps,
            "enforced": true,
            "note": "the limit covers frames the pipe sends through the master (to pipes and the NIC); fast channels bypass the master and are not limited",
            "unlimited_fast_channels": unlimited,
        }))
    }

    fn pipe_mut(&mut self, name: &str) -> Result<&mut PipeRec, ControlError> {
        self.pipes
            .get_mut(name)
            .ok_or_else(|| ControlError::NoPipe(name.to_string()))
    }

    fn entry(&self, name: &str, p: &PipeRec) -> PipeEntry {
        PipeEntry {
            name: name.to_string(),
            ip: format!("{}/{}", p.ip, p.prefix_len),
            gateway: p.gateway.to_string(),
            mac: fmt_mac(&p.mac),
            mtu: p.mtu,
            rate_mbps: p.rate_mbps,
            attached_pid: p.control.attached_pid(),
            // Asked of the file the master mapped: never reopened by path, which the
            // tenant could have replaced (a symlink, a FIFO).
            attached: p.control.is_claimed().ok(),
            dir: p.dir.display().to_string(),
            broken: p.control.is_broken(),
            forwarder: p.forwarder,
            owner: Some(format!("{}:{}", p.owner.0, p.owner.1)),
        }
    }

    /// Check a new pipe's address against the existing pipes. Returns the gateway.
    fn check_new_addr(&self, ip: Ipv4Addr, prefix: u8) -> Result<Ipv4Addr, ControlError> {
        let gw = net::validate_host_addr(ip, prefix).map_err(ControlError::Invalid)?;
        for (other, p) in &self.pipes {
            if p.ip == ip {
                return Err(ControlError::Conflict(format!(
                    "address {ip} is already used by pipe {other:?}"
                )));
            }
            if p.gateway == ip {
                return Err(ControlError::Conflict(format!(
                    "address {ip} is the gateway (master address) of pipe {other:?}'s subnet"
                )));
            }
            if p.ip == gw {
                return Err(ControlError::Conflict(format!(
                    "the gateway of {ip}/{prefix} ({gw}) is pipe {other:?}'s address"
                )));
            }
        }
        Ok(gw)
    }

    /// Check a pipe's name and address for creation or adoption: `(ip, prefix, gateway)`.
    /// Gives the TAP's kernel side the subnet's gateway if it has not got it yet.
    fn admit_pipe(
        &mut self,
        name: &str,
        cidr: &str,
    ) -> Result<(Ipv4Addr, u8, Ipv4Addr), ControlError> {
        net::validate_name(name).map_err(ControlError::Invalid)?;
        if self.pipes.contains_key(name) {
            return Err(ControlError::Conflict(format!(
                "pipe {name:?} already exists"
            )));
        }
        let (ip, prefix_len) = net::parse_cidr(cidr).map_err(ControlError::Invalid)?;
        let gateway = self.check_new_addr(ip, prefix_len)?;
        self.check_pipe_against_routes(ip, prefix_len)?;
        if let Some(tap) = self.link.as_ref().and_then(|l| l.tap.clone()) {
            if !self.tap_addrs.contains(&(gateway, prefix_len)) {
                crate::nic::tap::add_address(&tap, &format!("{gateway}/{prefix_len}"))
                    .map_err(ControlError::Link)?;
                self.tap_addrs.insert((gateway, prefix_len));
            }
        }
        Ok((ip, prefix_len, gateway))
    }

    /// The MTU of a pipe created without `--mtu`: [`pipe_mtu_for`] the link; without a
    /// NIC, [`MAX_MTU`]. No frame then leaves the host, so, as over a fast channel, TCP
    /// between services moves up to 64 KB per segment (the kernel's GSO size), a fraction
    /// of the per-segment work of 9000-byte frames (200 KB ping-pong through the master:
    /// docs/benchmarks.md). The pipe's small frames go to its small buffers and only
    /// those segments take one of its [`LARGE_NBUFS`] large ones ([`channel_pools`]).
    pub fn default_pipe_mtu(&self) -> u32 {
        self.link.as_ref().map_or(MAX_MTU, |l| l.pipe_mtu)
    }

    fn pipe_create(
        &mut self,
        name: &str,
        cidr: &str,
        mtu: Option<u32>,
        (rate_mbps, forwarder): (Option<u64>, bool),
        owner: (u32, u32),
    ) -> Result<PipeEntry, ControlError> {
        let rate = rate_mbps
            .map(bytes_per_sec_from_mbps)
            .transpose()
            .map_err(ControlError::Invalid)?;
        let mtu = mtu.unwrap_or(self.default_pipe_mtu());
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(ControlError::Invalid(format!(
                "invalid MTU {mtu}: must be in {MIN_MTU}..={MAX_MTU}"
            )));
        }
        let (ip, prefix_len, gateway) = self.admit_pipe(name, cidr)?;
        let dir = self.pipes_dir().join(name);
        if dir.exists() {
            log::warn!("removing stale pipe directory {}", dir.display());
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ControlError::file("cannot remove stale", &dir, e))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ControlError::file("cannot create pipe directory", &dir, e))?;
        let mac = mac_for_ip(ip);
        let (nbufs, nlarge) = channel_pools(mtu);
        let cfg = PipeConfig {
            mac,
            ipv4: ip,
            prefix_len,
            gateway,
            mtu,
            nbufs,
            nlarge,
            flags: pipe_flags::CSUM_OFFLOAD | if forwarder { pipe_flags::FORWARDER } else { 0 },
        };
        let end = create_pipe_file(&dir, &cfg)
            .map_err(|e| ControlError::file("cannot create pipe file in", &dir, e))
            .and_then(|map| {
                give_pipe_to(&self.pipes_dir(), name, &map, owner)?;
                MasterPipeEnd::new(map)
                    .map_err(|e| ControlError::Mismatch(format!("pipe file unusable: {e}")))
            });
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let rec = self.install_pipe(
            end,
            dir.clone(),
            (ip, prefix_len, gateway),
            mtu,
            (rate_mbps, forwarder, owner),
            rate,
        );
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let entry = self.entry(name, &rec);
        self.pipes.insert(name.to_string(), rec);
        let limit = rate_mbps.map_or(String::new(), |m| format!(" rate limit {m} Mbit/s"));
        let by = self
            .caller
            .map_or("root (in process)".to_string(), |p| p.to_string());
        log::info!(
            "pipe {name}: created {ip}/{prefix_len} mac {} mtu {mtu}{limit} owner {}:{} in {} (asked by {by})",
            fmt_mac(&mac),
            owner.0,
            owner.1,
            dir.display()
        );
        Ok(entry)
    }

    /// Hand a pipe end to the data path (with its rate limit) and make its record.
    fn install_pipe(
        &mut self,
        end: MasterPipeEnd,
        dir: PathBuf,
        (ip, prefix_len, gateway): (Ipv4Addr, u8, Ipv4Addr),
        mtu: u32,
        (rate_mbps, forwarder, owner): (Option<u64>, bool, (u32, u32)),
        rate: Option<std::num::NonZeroU64>,
    ) -> Result<PipeRec, ControlError> {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        let stats = Arc::new(PipeStats::default());
        let rec = PipeRec {
            slot,
            ip,
            prefix_len,
            gateway,
            mac: mac_for_ip(ip),
            mtu,
            rate_mbps,
            forwarder,
            owner,
            dir,
            control: end.control(),
            stats: stats.clone(),
            faults: end.faults.clone(),
        };
        let added = self
            .tell_dp(DpMsg::Add {
                slot,
                end: Box::new(end),
                stats,
                forwarder,
            })
            .and_then(|()| match rate {
                // Queued right behind `Add`: applied before the service can attach.
                Some(r) => self.tell_dp(DpMsg::SetRate {
                    slot,
                    bytes_per_sec: Some(r),
                }),
                None => Ok(()),
            });
        if let Err(e) = added {
            self.free_slots.push(slot);
            return Err(e);
        }
        Ok(rec)
    }

    /// Take over pipe `p` from the files an earlier docknetd left (its service may be
    /// running on it): the file is opened without following links, its header must say
    /// what the state file says (a tenant may have rewritten it while no master ran), and
    /// the channels resume where the rings stand.
    fn pipe_adopt(&mut self, p: &SavedPipe) -> Result<(), ControlError> {
        let rate = p
            .rate_mbps
            .map(bytes_per_sec_from_mbps)
            .transpose()
            .map_err(ControlError::Invalid)?;
        let (ip, prefix_len, gateway) = self.admit_pipe(&p.name, &p.ip)?;
        let dir = self.pipes_dir().join(&p.name);
        let file = dir.join(docknet_pipe::pipe::PIPE_FILE);
        let map = beneath::open_dir(&self.pipes_dir(), Path::new(&p.name))
            .and_then(|d| {
                SharedMap::open_at(d.as_fd(), Path::new(docknet_pipe::pipe::PIPE_FILE), &file)
            })
            .map_err(|e| ControlError::file("", &file, e))?;
        let info = docknet_pipe::pipe::read_pipe_info(&map)
            .map_err(|e| ControlError::Mismatch(e.to_string()))?;
        let want = (ip, prefix_len, gateway, mac_for_ip(ip), p.mtu);
        let got = (info.ipv4, info.prefix_len, info.gateway, info.mac, info.mtu);
        if got != want {
            return Err(ControlError::Mismatch(format!(
                "its header says {}/{} gw {} mac {} mtu {}, the state file {}/{} gw {} mac {} mtu {}",
                got.0, got.1, got.2, fmt_mac(&got.3), got.4,
                want.0, want.1, want.2, fmt_mac(&want.3), want.4
            )));
        }
        give_pipe_to(&self.pipes_dir(), &p.name, &map, p.owner)?;
        let end = MasterPipeEnd::adopt(map).map_err(|e| ControlError::Mismatch(e.to_string()))?;
        let rec = self.install_pipe(
            end,
            dir,
            (ip, prefix_len, gateway),
            p.mtu,
            (p.rate_mbps, p.forwarder, p.owner),
            rate,
        )?;
        self.pipes.insert(p.name.clone(), rec);
        Ok(())
    }

    /// Take over fast channel `f` from the files an earlier docknetd left.
    fn fc_adopt(&mut self, f: &SavedFc) -> Result<(), ControlError> {
        use std::os::unix::fs::MetadataExt;
        let (pa, pb) = match (self.pipes.get(&f.a), self.pipes.get(&f.b)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(ControlError::Mismatch("one of its pipes is gone".into())),
        };
        // Files of daemons before `fc create --mtu` had the smaller pipe's MTU.
        let (ips, mtu) = ((pa.ip, pb.ip), f.mtu.unwrap_or(pa.mtu.min(pb.mtu)));
        let (path_a, path_b) = self.fc_paths(&f.a, &f.b);
        let (dir_a, dir_b) = (self.fc_dir(&f.a)?, self.fc_dir(&f.b)?);
        let map = SharedMap::open_at(dir_a.as_fd(), &fc_file_name(&f.b), &path_a)
            .map_err(|e| ControlError::file("", &path_a, e))?;
        if docknet_pipe::fc::fc_file_ends(&map) != Some(ips) {
            return Err(ControlError::Mismatch(format!(
                "{} does not join {} and {}",
                path_a.display(),
                ips.0,
                ips.1
            )));
        }
        let other = SharedMap::open_at(dir_b.as_fd(), &fc_file_name(&f.a), &path_b)
            .map_err(|e| ControlError::file("", &path_b, e))?;
        let ino = |m: &SharedMap| m.file().metadata().map(|md| (md.dev(), md.ino())).ok();
        if ino(&map).is_none() || ino(&map) != ino(&other) {
            return Err(ControlError::Mismatch(format!(
                "{} and {} are not one file",
                path_a.display(),
                path_b.display()
            )));
        }
        drop(other);
        self.fcs.insert(
            fc_key(&f.a, &f.b),
            FcRec {
                a: f.a.clone(),
                b: f.b.clone(),
                mtu,
                forward: f.forward,
                map,
            },
        );
        if f.forward {
            self.publish_fc_forwarders(&f.b);
        }
        Ok(())
    }

    /// Re-adopt what an earlier docknetd on this run directory left (its state file):
    /// pipes and fast channels keep their files, so services and their connections go
    /// on. One that cannot be adopted is made anew (its service then has to restart).
    pub fn readopt(&mut self, saved: SavedState) {
        for p in &saved.pipes {
            match self.pipe_adopt(p) {
                Ok(()) => log::info!("pipe {}: re-adopted ({})", p.name, p.ip),
                Err(e) => {
                    log::warn!("pipe {}: cannot re-adopt: {e}; creating it anew", p.name);
                    if let Err(e) = self.pipe_create(
                        &p.name,
                        &p.ip,
                        Some(p.mtu),
                        (p.rate_mbps, p.forwarder),
                        p.owner,
                    ) {
                        log::error!("pipe {}: cannot create it either: {e}", p.name);
                    }
                }
            }
        }
        for f in &saved.fcs {
            match self.fc_adopt(f) {
                Ok(()) => log::info!("fast channel {}<->{}: re-adopted", f.a, f.b),
                Err(e) => {
                    log::warn!(
                        "fast channel {}<->{}: cannot re-adopt: {e}; creating it anew",
                        f.a,
                        f.b
                    );
                    if let Err(e) = self.fc_create(&f.a, &f.b, f.forward, f.mtu) {
                        log::error!(
                            "fast channel {}<->{}: cannot create it either: {e}",
                            f.a,
                            f.b
                        );
                    }
                }
            }
        }
        self.clusters_readopt(&saved.clusters);
        self.routes_readopt(&saved.routes);
        self.save_state();
    }

    /// What the state file should say now.
    fn saved(&self) -> SavedState {
        SavedState {
            version: crate::state::STATE_VERSION,
            pipes: self
                .pipes
                .iter()
                .map(|(n, p)| SavedPipe {
                    name: n.clone(),
                    ip: format!("{}/{}", p.ip, p.prefix_len),
                    mtu: p.mtu,
                    rate_mbps: p.rate_mbps,
                    forwarder: p.forwarder,
                    owner: p.owner,
                })
                .collect(),
            fcs: self
                .fcs
                .values()
                .map(|f| SavedFc {
                    a: f.a.clone(),
                    b: f.b.clone(),
                    forward: f.forward,
                    mtu: Some(f.mtu),
                })
                .collect(),
            clusters: self.saved_clusters(),
            routes: self.saved_routes(),
        }
    }

    /// Rewrite the state file (a failure is logged: the daemon goes on, but a restart
    /// would not find what changed).
    fn save_state(&mut self) {
        let state = self.saved();
        if self.state_written.as_ref() == Some(&state) {
            return;
        }
        match crate::state::save(&self.run_dir, &state) {
            Ok(()) => self.state_written = Some(state),
            Err(e) => {
                log::warn!("{e}; a restarted docknetd would not re-adopt the latest changes")
            }
        }
    }

    fn pipe_rm(&mut self, name: &str) -> Result<(), ControlError> {
        if !self.pipes.contains_key(name) {
            return Err(ControlError::NoPipe(name.to_string()));
        }
        let peers: Vec<(String, String)> = self
            .fcs
            .keys()
            .filter(|(a, b)| a == name || b == name)
            .cloned()
            .collect();
        for (a, b) in peers {
            if let Err(e) = self.fc_rm(&a, &b) {
                log::warn!("pipe {name}: removing fast channel {a}<->{b}: {e}");
            }
        }
        let Some(rec) = self.pipes.remove(name) else {
            return Err(ControlError::NoPipe(name.to_string()));
        };
        // Tell an attached service its pipe is gone (it stops instead of talking into a
        // deleted file).
        rec.control.close();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        self.tell_dp(DpMsg::Remove {
            slot: rec.slot,
            done: Some(done_tx),
        })?;
        if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            log::warn!("pipe {name}: data path did not confirm removal in 5 s");
        }
        self.free_slots.push(rec.slot);
        let dir = rec.dir.clone();
        drop(rec);
        std::fs::remove_dir_all(&dir).map_err(|e| {
            ControlError::PartlyDone(format!(
                "pipe {name} removed, but deleting {} failed: {e}",
                dir.display()
            ))
        })?;
        log::info!("pipe {name}: removed");
        Ok(())
    }

    /// Every pipe, sorted by name.
    pub fn pipe_ls(&self) -> Vec<PipeEntry> {
        self.pipes.iter().map(|(n, p)| self.entry(n, p)).collect()
    }

    /// Paths of the two names of fast channel a<->b: `a/fc/b.map` and `b/fc/a.map`.
    fn fc_paths(&self, a: &str, b: &str) -> (PathBuf, PathBuf) {
        let d = self.pipes_dir();
        (
            d.join(a).join(FC_DIR).join(fc_file_name(b)),
            d.join(b).join(FC_DIR).join(fc_file_name(a)),
        )
    }

    /// `pipes/NAME/fc`, opened without following symlinks (the service may have replaced
    /// it with one).
    fn fc_dir(&self, name: &str) -> Result<std::os::fd::OwnedFd, ControlError> {
        let rel = Path::new(name).join(FC_DIR);
        beneath::open_dir(&self.pipes_dir(), &rel)
            .map_err(|e| ControlError::file("cannot open", &self.pipes_dir().join(&rel), e))
    }

    /// Tell pipe `b`'s service which fast-channel peers may forward to it (written into
    /// its own pipe header, which those peers cannot write).
    fn publish_fc_forwarders(&self, b: &str) {
        let Some(pb) = self.pipes.get(b) else { return };
        let peers: Vec<Ipv4Addr> = self
            .fcs
            .values()
            .filter(|f| f.forward && f.b == b)
            .filter_map(|f| self.pipes.get(&f.a).map(|p| p.ip))
            .collect();
        if peers.len() > docknet_pipe::abi::MAX_FC_FORWARDERS {
            log::warn!(
                "pipe {b}: more than {} forwarding fast-channel peers; the rest are refused",
                docknet_pipe::abi::MAX_FC_FORWARDERS
            );
        }
        pb.control.set_fc_forwarders(&peers);
    }

    fn fc_create(
        &mut self,
        a: &str,
        b: &str,
        forward: bool,
        mtu: Option<u32>,
    ) -> Result<FcEntry, ControlError> {
        if a == b {
            return Err(ControlError::Conflict(format!(
                "cannot join pipe {a:?} with itself"
            )));
        }
        if let Some(m) = mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&m) {
                return Err(ControlError::Invalid(format!(
                    "invalid fast-channel MTU {m}: must be in {MIN_MTU}..={MAX_MTU}"
                )));
            }
        }
        let pa = self
            .pipes
            .get(a)
            .ok_or_else(|| ControlError::NoPipe(a.to_string()))?;
        let pb = self
            .pipes
            .get(b)
            .ok_or_else(|| ControlError::NoPipe(b.to_string()))?;
        let mtu = fc_mtu(
            (a, pa.mtu, pa.forwarder),
            (b, pb.mtu, pb.forwarder),
            forward,
            mtu,
        )?;
        if self.fcs.contains_key(&fc_key(a, b)) {
            return Err(ControlError::Conflict(format!(
                "a fast channel between {a:?} and {b:?} already exists"
            )));
        }
        let (path_a, path_b) = self.fc_paths(a, b);
        // The fc/ directories are the services' to write: reach them and name files in
        // them without following anything planted there (crate::beneath).
        let (dir_a, dir_b) = (self.fc_dir(a)?, self.fc_dir(b)?);
        let (name_a, name_b) = (fc_file_name(b), fc_file_name(a));
        for (dir, name, path) in [(&dir_a, &name_a, &path_a), (&dir_b, &name_b, &path_b)] {
            if let Err(e) = beneath::unlink(dir.as_fd(), name) {
                return Err(ControlError::file("cannot clear", path, e));
            }
        }
        let map = create_fc_file_with(
            (pa.ip, pa.mac),
            (pb.ip, pb.mac),
            mtu,
            channel_pools(mtu),
            |size| SharedMap::create_at(dir_a.as_fd(), &name_a, &path_a, size, 0o600),
        )
        .map_err(|e| ControlError::file("cannot create fast-channel file", &path_a, e))?;
        // Both owners may open it, no one else: one owner, 0600; two, A's user and B's
        // group, 0660.
        let (oa, ob) = (pa.owner, pb.owner);
        let (gid, mode) = if oa.0 == ob.0 {
            (oa.1, 0o600)
        } else {
            (ob.1, 0o660)
        };
        if let Err(e) = beneath::chown_mod(map.file().as_fd(), (oa.0, gid), mode) {
            let _ = beneath::unlink(dir_a.as_fd(), &name_a);
            return Err(ControlError::Give {
                path: path_a,
                owner: (oa.0, gid),
                why: e.to_string(),
            });
        }
        if let Err(e) = beneath::link(dir_a.as_fd(), &name_a, dir_b.as_fd(), &name_b) {
            let _ = beneath::unlink(dir_a.as_fd(), &name_a);
            return Err(ControlError::LinkFc {
                from: path_a,
                to: path_b,
                why: e.to_string(),
            });
        }
        let (ca, cb) = (pa.control.clone(), pb.control.clone());
        self.fcs.insert(
            fc_key(a, b),
            FcRec {
                a: a.to_string(),
                b: b.to_string(),
                mtu,
                forward,
                map,
            },
        );
        if forward {
            self.publish_fc_forwarders(b);
        }
        ca.bump_fc_generation();
        cb.bump_fc_generation();
        let fwd = if forward {
            format!(", {a} may forward to {b}")
        } else {
            String::new()
        };
        log::info!("fast channel {a}<->{b} created (mtu {mtu}{fwd})");
        Ok(FcEntry {
            a: a.into(),
            b: b.into(),
            mtu,
            path: path_a.display().to_string(),
            forward,
        })
    }

    fn fc_rm(&mut self, a: &str, b: &str) -> Result<(), ControlError> {
        let rec = self
            .fcs
            .remove(&fc_key(a, b))
            .ok_or_else(|| ControlError::NoChannel(a.to_string(), b.to_string()))?;
        close_fc_file(&rec.map);
        let (path_a, path_b) = self.fc_paths(&rec.a, &rec.b);
        let mut errs = Vec::new();
        for (side, peer, path) in [(&rec.a, &rec.b, &path_a), (&rec.b, &rec.a, &path_b)] {
            let r = self.fc_dir(side).map_err(|e| e.to_string()).and_then(|d| {
                beneath::unlink(d.as_fd(), &fc_file_name(peer)).map_err(|e| e.to_string())
            });
            if let Err(e) = r {
                errs.push(format!("{}: {e}", path.display()));
            }
        }
        if rec.forward {
            self.publish_fc_forwarders(&rec.b);
        }
        for n in [&rec.a, &rec.b] {
            if let Some(p) = self.pipes.get(n) {
                p.control.bump_fc_generation();
            }
        }
        log::info!("fast channel {}<->{} removed", rec.a, rec.b);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ControlError::PartlyDone(format!(
                "fast channel closed, but unlinking failed: {}",
                errs.join("; ")
            )))
        }
    }

    /// Every fast channel.
    pub fn fc_ls(&self) -> Vec<FcEntry> {
        self.fcs
            .values()
            .map(|f| FcEntry {
                a: f.a.clone(),
                b: f.b.clone(),
                mtu: f.mtu,
                path: self.fc_paths(&f.a, &f.b).0.display().to_string(),
                forward: f.forward,
            })
            .collect()
    }

    /// Counters of pipe `name`, or of every pipe, keyed by pipe name.
    pub fn stats(
        &self,
        name: Option<&str>,
    ) -> Result<BTreeMap<String, StatsSnapshot>, ControlError> {
        // `broken` from the mapping itself, as `pipe ls` shows it: the data path counts it
        // only at its next round, which an idle data path may not run for a while.
        let snap = |p: &PipeRec| {
            let mut s = snapshot(&p.stats, &p.faults);
            s.broken = s.broken.max(u64::from(p.control.is_broken()));
            s
        };
        match name {
            Some(n) => {
                let p = self
                    .pipes
                    .get(n)
                    .ok_or_else(|| ControlError::NoPipe(n.to_string()))?;
                Ok(BTreeMap::from([(n.to_string(), snap(p))]))
            }
            None => Ok(self
                .pipes
                .iter()
                .map(|(n, p)| (n.clone(), snap(p)))
                .collect()),
        }
    }

    /// Remove every pipe (their services stop) and forget the state: nothing is left to
    /// re-adopt.
    pub fn shutdown(&mut self) {
        self.clusters_stop_all();
        let names: Vec<String> = self.pipes.keys().cloned().collect();
        for n in names {
            if let Err(e) = self.pipe_rm(&n) {
                log::warn!("shutdown: {e}");
            }
        }
        crate::state::remove(&self.run_dir);
        self.state_written = None;
        self.closed = true;
    }

    /// Stop serving requests and leave every pipe, fast channel and service as it is,
    /// with the state file up to date, for the next docknetd on this run directory.
    pub fn detach(&mut self) {
        self.save_state();
        self.closed = true;
    }

    /// Number of pipes.
    pub fn pipe_count(&self) -> usize {
        self.pipes.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_channel_mtu_grows_only_between_equal_non_forwarding_pipes() {
        let (a, b) = (("a", 9000, false), ("b", 9000, false));
        assert_eq!(fc_mtu(a, b, false, None).unwrap(), DEFAULT_FC_MTU);
        assert_eq!(fc_mtu(a, b, false, Some(16384)).unwrap(), 16384);
        assert_eq!(fc_mtu(a, b, false, Some(9000)).unwrap(), 9000);
        let e = fc_mtu(a, b, false, Some(1500)).unwrap_err().to_string();
        assert!(e.contains("below the pipes' MTU 9000"), "{e}");
        // Two MTUs: the smaller one, and only that.
        let small = ("s", 1500, false);
        assert_eq!(fc_mtu(a, small, false, None).unwrap(), 1500);
        assert_eq!(fc_mtu(a, small, false, Some(1500)).unwrap(), 1500);
        let e = fc_mtu(a, small, false, Some(9000)).unwrap_err().to_string();
        assert!(e.contains("different MTUs (9000 and 1500)"), "{e}");
        // A forwarder on either side, or a forwarding channel: the pipes' MTU.
        let nat = ("nat", 9000, true);
        assert_eq!(fc_mtu(nat, b, false, None).unwrap(), 9000);
        assert_eq!(fc_mtu(a, b, true, None).unwrap(), 9000);
        let e = fc_mtu(a, nat, false, Some(65000)).unwrap_err().to_string();
        assert!(e.contains("pipe \"nat\" forwards for others"), "{e}");
        let e = fc_mtu(a, b, true, Some(65000)).unwrap_err().to_string();
        assert!(e.contains("--forward"), "{e}");
    }

    use super::*;

    /// `fc create A B [--mtu M]` (no `--forward`).
    fn fc_req(a: &str, b: &str, mtu: Option<u32>) -> Request {
        Request::FcCreate {
            a: a.into(),
            b: b.into(),
            forward: false,
            mtu,
        }
    }

    #[test]
    fn channel_buffers_scale_with_small_mtus() {
        assert_eq!(nbufs_for_mtu(1500), 4096);
        assert_eq!(nbufs_for_mtu(9000), 1024);
        assert_eq!(nbufs_for_mtu(65000), 1024);
        assert_eq!(channel_pools(9000), (1024, 0));
        assert_eq!(channel_pools(1500), (4096, 0));
        // 9001-9010 round up to a small buffer's size: one pool.
        assert_eq!(channel_pools(9001), (1024, 0));
        assert_eq!(channel_pools(9011), (1024, LARGE_NBUFS));
        assert_eq!(channel_pools(65000), (1024, LARGE_NBUFS));
        assert!(nbufs_for_mtu(576) <= 4096);
    }

    #[test]
    fn default_pipe_mtu_follows_the_link_and_its_gso() {
        // No GSO: the link MTU, at most DEFAULT_MTU.
        assert_eq!(pipe_mtu_for(1500, 1514), 1500);
        assert_eq!(pipe_mtu_for(65000, 65014), DEFAULT_MTU);
        // GSO: the largest frame the NIC takes, at most MAX_MTU.
        assert_eq!(pipe_mtu_for(1500, 65460), MAX_MTU);
        assert_eq!(pipe_mtu_for(1500, 20014), 20000);
        assert_eq!(pipe_mtu_for(9000, 9100), 9086);
    }

    #[test]
    fn parses_good_requests() {
        assert_eq!(
            parse_request(r#"{"cmd":"pipe_create","name":"a","ip":"10.88.0.2/16","mtu":9000}"#),
            Ok(Request::PipeCreate {
                name: "a".into(),
                ip: "10.88.0.2/16".into(),
                mtu: Some(9000),
                rate_mbps: None,
                forwarder: false,
                owner: None,
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"stats"}"#),
            Ok(Request::Stats { name: None })
        );
        assert_eq!(parse_request(" {\"cmd\":\"ping\"}\n"), Ok(Request::Ping));
        // Round trip.
        let r = Request::FcCreate {
            a: "x".into(),
            b: "y".into(),
            forward: true,
            mtu: Some(16384),
        };
        assert_eq!(parse_request(&serde_json::to_string(&r).unwrap()), Ok(r));
    }

    #[test]
    fn rejects_bad_requests_with_one_line() {
        for bad in [
            "",
            "   ",
            "garbage",
            "{",
            "[]",
            "42",
            r#"{"name":"a"}"#,
            r#"{"cmd":7}"#,
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"pipe_create","name":"a"}"#,
            r#"{"cmd":"pipe_create","name":"a","ip":"10.0.0.2/8","mtu":"big"}"#,
            r#"{"cmd":"pipe_create","name":"a","ip":"10.0.0.2/8","mtu":-1}"#,
            r#"{"cmd":"pipe_rm","name":"a","extra":1}"#,
            r#"{"cmd":"rate_set","name":"a","mbps":1e99}"#,
            "{\"cmd\":\"ping\"}{\"cmd\":\"ping\"}",
        ] {
            let e = parse_request(bad).expect_err(bad);
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?} -> {e:?}");
        }
    }

    fn test_control(tag: &str) -> (Control, mpsc::Receiver<DpMsg>, PathBuf) {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("dn-master-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(PIPES_DIR)).unwrap();
        let (tx, rx) = mpsc::channel();
        (Control::new(&dir, tx, Arc::new(Doorbell::new())), rx, dir)
    }

    /// Acknowledge data-path messages from a helper thread (stands in for the switch).
    fn fake_dp(rx: mpsc::Receiver<DpMsg>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while let Ok(m) = rx.recv() {
                if let DpMsg::Remove { done: Some(d), .. } = m {
                    let _ = d.send(());
                }
            }
        })
    }

    #[test]
    fn pipe_and_fc_lifecycle() {
        let (mut c, rx, dir) = test_control("life");
        let dp = fake_dp(rx);
        let mk = |name: &str, ip: &str| Request::PipeCreate {
            name: name.into(),
            ip: ip.into(),
            mtu: None,
            rate_mbps: None,
            forwarder: false,
            owner: None,
        };
        let e = c.handle(mk("a", "10.88.0.2/16")).unwrap();
        assert_eq!(e["mac"], "02:00:0a:58:00:02");
        assert_eq!(e["gateway"], "10.88.0.1");
        // No NIC: the largest MTU (nothing leaves the host), in a file of two pools.
        assert_eq!(e["mtu"], MAX_MTU);
        let file = Path::new(e["dir"].as_str().unwrap()).join("pipe.map");
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size < 24 << 20, "a default pipe file is {size} bytes");
        for (req, want) in [
            (mk("a", "10.88.0.3/16"), "already exists"),
            (mk("b", "10.88.0.2/16"), "already used"),
            (mk("b", "10.88.0.1/16"), "gateway"),
            (mk("b", "10.88.0.0/16"), "network"),
            (mk("b", "10.88.255.255/16"), "broadcast"),
            (mk("b/c", "10.88.0.5/16"), "invalid pipe name"),
            (mk("b", "10.88.0.5"), "A.B.C.D/N"),
            (mk("b", "10.88.0.5/31"), "prefix"),
            (
                Request::PipeCreate {
                    name: "b".into(),
                    ip: "10.88.0.5/16".into(),
                    mtu: Some(100),
                    rate_mbps: None,
                    forwarder: false,
                    owner: None,
                },
                "MTU",
            ),
            (fc_req("a", "zz", None), "no pipe"),
            (fc_req("a", "a", None), "itself"),
            (
                fc_req("a", "b", Some(65001)),
                "invalid fast-channel MTU 65001",
            ),
            (
                Request::Attach {
                    name: "a".into(),
                    pid: std::process::id(),
                },
                "shares docknetd's mount namespace",
            ),
        ] {
            let e = c
                .handle(req.clone())
                .expect_err(&format!("{req:?}"))
                .to_string();
            assert!(e.contains(want), "{req:?}: {e}");
        }
        c.handle(mk("b", "10.88.0.3/16")).unwrap();
        let e = c
            .handle(fc_req("a", "b", Some(1500)))
            .unwrap_err()
            .to_string();
        // Without a NIC, pipes default to 65000.
        assert!(e.contains("below the pipes' MTU 65000"), "{e}");
        c.handle(fc_req("a", "b", None)).unwrap();
        assert!(c.handle(fc_req("b", "a", None)).is_err());
        assert!(dir.join("pipes/a/fc/b.map").exists() && dir.join("pipes/b/fc/a.map").exists());
        assert_eq!(c.fc_ls().len(), 1);
        let s = c.handle(Request::Stats { name: None }).unwrap();
        assert_eq!(s["a"]["tx_frames"], 0);
        // Removing a pipe removes its fast channels.
        c.handle(Request::PipeRm { name: "b".into() }).unwrap();
        assert!(!dir.join("pipes/a/fc/b.map").exists() && !dir.join("pipes/b").exists());
        assert!(c.fc_ls().is_empty());
        // Same name and address again.
        c.handle(mk("b", "10.88.0.3/16")).unwrap();
        c.handle(fc_req("b", "a", None)).unwrap();
        c.handle(Request::FcRm {
            a: "a".into(),
            b: "b".into(),
        })
        .unwrap();
        assert!(!dir.join("pipes/a/fc/b.map").exists());
        let r = c
            .handle(Request::RateSet {
                name: "a".into(),
                mbps: 100,
            })
            .unwrap();
        assert_eq!(r["enforced"], true);
        assert_eq!(c.pipe_ls()[0].rate_mbps, Some(100));
        for mbps in [0, crate::rate::MAX_RATE_MBPS + 1, u64::MAX] {
            let e = c
                .handle(Request::RateSet {
                    name: "a".into(),
                    mbps,
                })
                .unwrap_err()
                .to_string();
            assert!(e.contains("invalid rate limit"), "{e}");
        }
        assert_eq!(
            c.pipe_ls()[0].rate_mbps,
            Some(100),
            "a bad value changes nothing"
        );
        let e = c
            .handle(Request::RateSet {
                name: "zz".into(),
                mbps: 5,
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("no pipe"), "{e}");
        c.handle(Request::RateClear { name: "a".into() }).unwrap();
        assert_eq!(c.pipe_ls()[0].rate_mbps, None);
        let e = c
            .handle(Request::PipeCreate {
                name: "c".into(),
                ip: "10.88.0.4/16".into(),
                mtu: None,
                rate_mbps: Some(0),
                forwarder: false,
                owner: None,
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid rate limit"), "{e}");
        assert!(!dir.join("pipes/c").exists());
        let e = c
            .handle(Request::PipeCreate {
                name: "c".into(),
                ip: "10.88.0.4/16".into(),
                mtu: None,
                rate_mbps: Some(500),
                forwarder: false,
                owner: None,
            })
            .unwrap();
        assert_eq!(e["rate_mbps"], 500);
        c.shutdown();
        assert!(c.handle(Request::Ping).is_err());
        assert_eq!(std::fs::read_dir(dir.join(PIPES_DIR)).unwrap().count(), 0);
        drop(c);
        dp.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
