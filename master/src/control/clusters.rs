//! Clusters in the control plane: `cluster up` makes the NAT's pipe (the VIP, allowed to
//! forward), one pipe per member from the cluster's subnet, a fast channel from the NAT
//! to each member (with forwarding in DNAT mode), writes the NAT's configuration, and
//! starts the members and the NAT as the cluster's owner. [`Control::cluster_tick`]
//! (every [`TICK`]) restarts what died and tells the NAT at once; the NAT's health checks
//! decide when a member takes connections. Clusters are kept in the state file, so a
//! restarted docknetd re-adopts the running processes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Control, ControlError};
use crate::cluster::natfile::{
    NatBackend, NatConfig, NatStats, MAX_STATS_BYTES, NAT_CONFIG_FILE, NAT_STATS_FILE,
};
use crate::cluster::supervisor::{Launch, Proc};
use crate::cluster::{ClusterSpec, ClusterStatus, MemberRun, MemberStatus, NatMode};

/// How often the supervisor looks at the processes.
pub const TICK: Duration = Duration::from_millis(50);
/// Wait before restarting a process that died; doubled for each death in a row (one
/// that ran for [`STABLE`] starts over), up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STABLE: Duration = Duration::from_secs(10);
/// How long a stopped process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(1500);
/// Longest cluster name (members are NAME-N, pipe names are at most 32 characters).
pub const MAX_CLUSTER_NAME: usize = 24;

/// One supervised process: the NAT or a member.
pub(super) struct MemberRec {
    name: String,
    ip: Ipv4Addr,
    weight: u32,
    proc: Option<Proc>,
    restarts: u64,
    /// Deaths in a row (reset once it ran for [`STABLE`]).
    deaths: u32,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    /// Removed by `scale`/`down`: not restarted.
    stopped: bool,
}

impl MemberRec {
    fn new(name: String, ip: Ipv4Addr, weight: u32) -> Self {
        MemberRec {
            name,
            ip,
            weight,
            proc: None,
            restarts: 0,
            deaths: 0,
            started: None,
            restart_at: Some(Instant::now()),
            stopped: false,
        }
    }

    fn state(&self) -> &'static str {
        match (&self.proc, self.stopped) {
            (_, true) => "stopped",
            (Some(_), _) => "running",
            (None, _) if self.started.is_none() => "starting",
            (None, _) => "restarting",
        }
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.pid)
    }
}

/// A cluster the daemon runs.
pub(super) struct ClusterRec {
    spec: ClusterSpec,
    owner: (u32, u32),
    nat: MemberRec,
    members: Vec<MemberRec>,
    /// Of the NAT's configuration file.
    generation: u64,
    /// `RUN_DIR/clusters/NAME`: logs (root's; the pipes are the tenant's).
    dir: PathBuf,
}

/// A member as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMember {
    pub name: String,
    pub ip: Ipv4Addr,
    pub weight: u32,
    pub pid: u32,
    pub start_time: u64,
    pub restarts: u64,
}

/// A cluster as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCluster {
    pub spec: ClusterSpec,
    pub owner: (u32, u32),
    pub generation: u64,
    pub nat: SavedMember,
    pub members: Vec<SavedMember>,
}

fn saved_member(m: &MemberRec) -> SavedMember {
    SavedMember {
        name: m.name.clone(),
        ip: m.ip,
        weight: m.weight,
        pid: m.pid(),
        start_time: m.proc.as_ref().map_or(0, |p| p.start_time),
        restarts: m.restarts,
    }
}

fn member_from_saved(s: &SavedMember) -> MemberRec {
    let mut m = MemberRec::new(s.name.clone(), s.ip, s.weight);
    m.restarts = s.restarts;
    m.proc = Proc::adopt(s.pid, s.start_time);
    if m.proc.is_some() {
        m.started = Some(Instant::now());
        m.restart_at = None;
    }
    m
}

fn vip_text(spec: &ClusterSpec) -> String {
    spec.ports
        .iter()
        .map(|p| match p.proto {
            crate::cluster::Proto::Tcp => format!("{}:{}", spec.vip, p.port),
            crate::cluster::Proto::Udp => format!("{}:{}/udp", spec.vip, p.port),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `dn-nat` to run: the spec's, else the one beside this docknetd.
fn nat_binary(spec: &ClusterSpec) -> Result<PathBuf, ControlError> {
    if let Some(p) = &spec.nat_binary {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| ControlError::Unavailable(format!("cannot find docknetd's own path: {e}")))?;
    let p = exe.with_file_name("dn-nat");
    if !p.exists() {
        return Err(ControlError::Unavailable(format!(
            "no dn-nat beside docknetd ({}); build it (cargo build --release) or set nat_binary in the cluster file",
            p.display()
        )));
    }
    Ok(p)
}

impl Control {
    fn clusters_dir(&self) -> PathBuf {
        self.run_dir.join("clusters")
    }

    /// The caller may manage cluster `c` (root, or its owner).
    fn may_manage(&self, c: &ClusterRec) -> Result<(), ControlError> {
        match self.caller.filter(|p| !p.is_root()) {
            Some(p) if p.uid != c.owner.0 => Err(ControlError::Denied(format!(
                "permission denied: cluster {} belongs to uid {} (you are uid {})",
                c.spec.name, c.owner.0, p.uid
            ))),
            _ => Ok(()),
        }
    }

    fn cluster_mut(&mut self, name: &str) -> Result<&mut ClusterRec, ControlError> {
        let c = self
            .clusters
            .get(name)
            .ok_or_else(|| ControlError::NoCluster(name.to_string()))?;
        self.may_manage(c)?;
        Ok(self.clusters.get_mut(name).expect("checked above"))
    }

    /// Free member addresses of `subnet`, in order, skipping the gateway and every
    /// address a pipe has.
    fn free_member_ips(
        &self,
        subnet: &str,
        taken_also: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, ControlError> {
        let (net, prefix) = crate::net::parse_cidr(subnet).map_err(ControlError::Invalid)?;
        let mask = u32::MAX << (32 - u32::from(prefix));
        let base = u32::from(net) & mask;
        let last = base | !mask;
        Ok((base + 2..last)
            .map(Ipv4Addr::from)
            .filter(|ip| !self.pipes.values().any(|p| p.ip == *ip) && !taken_also.contains(ip))
            .collect())
    }

    /// `cluster up`.
    pub(super) fn cluster_up(
        &mut self,
        spec: ClusterSpec,
        owner: Option<&str>,
    ) -> Result<Value, ControlError> {
        let name = spec.name.clone();
        crate::net::validate_name(&name).map_err(ControlError::Invalid)?;
        if name.len() > MAX_CLUSTER_NAME {
            return Err(ControlError::Invalid(format!(
                "cluster name {name:?} is longer than {MAX_CLUSTER_NAME} characters"
            )));
        }
        if self.clusters.contains_key(&name) {
            return Err(ControlError::Conflict(format!(
                "cluster {name:?} exists already (docknetctl cluster down {name} removes it)"
            )));
        }
        if spec.ports.is_empty() {
            return Err(ControlError::Invalid("the VIP has no ports".into()));
        }
        if !matches!(spec.policy.as_str(), "maglev" | "rr" | "least-conn") {
            return Err(ControlError::Invalid(format!(
                "unknown policy {:?}: maglev, rr or least-conn",
                spec.policy
            )));
        }
        if spec.replicas == 0 {
            return Err(ControlError::Invalid("replicas must be at least 1".into()));
        }
        let owner = self.owner_for(owner)?;
        // Fail now, not in the supervisor, if there is no dn-nat to run.
        nat_binary(&spec)?;
        if let MemberRun::Binary { path, .. } = &spec.run {
            if !path.is_file() {
                return Err(ControlError::Invalid(format!(
                    "member binary {} does not exist",
                    path.display()
                )));
            }
        }
        let ips = self.free_member_ips(&spec.subnet, &[spec.vip])?;
        if ips.len() < spec.replicas as usize {
            return Err(ControlError::Invalid(format!(
                "subnet {} has {} free addresses for {} replicas",
                spec.subnet,
                ips.len(),
                spec.replicas
            )));
        }
        let dir = self.clusters_dir().join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ControlError::file("cannot create cluster directory", &dir, e))?;
        let mut rec = ClusterRec {
            nat: MemberRec::new(name.clone(), spec.vip, 0),
            members: Vec::new(),
            generation: 0,
            dir,
            owner,
            spec,
        };
        let made = self.cluster_make(&mut rec, &ips);
        if let Err(e) = made {
            // Undo what was made: processes, fast channels and pipes.
            self.cluster_teardown(&mut rec);
            return Err(e);
        }
        log::info!(
            "cluster {name}: up on {} with {} members ({}), owner {}:{}",
            vip_text(&rec.spec),
            rec.members.len(),
            rec.spec.policy,
            owner.0,
            owner.1
        );
        let status = self.cluster_status_of(&rec);
        self.clusters.insert(name, rec);
        Ok(serde_json::to_value(status).unwrap_or(Value::Null))
    }

    /// Pipes, fast channels, the NAT's configuration, then the processes.
    fn cluster_make(&mut self, rec: &mut ClusterRec, ips: &[Ipv4Addr]) -> Result<(), ControlError> {
        let spec = rec.spec.clone();
        self.pipe_create(
            &spec.name,
            &format!("{}/{}", spec.vip, spec.vip_prefix),
            None,
            (None, true),
            rec.owner,
        )?;
        for (i, ip) in ips.iter().take(spec.replicas as usize).enumerate() {
            let m = MemberRec::new(format!("{}-{}", spec.name, i + 1), *ip, spec.weight);
            self.member_pipe(rec, &m)?;
            rec.members.push(m);
        }
        self.write_nat_config(rec)?;
        let now = Instant::now();
        for m in rec.members.iter_mut().chain(std::iter::once(&mut rec.nat)) {
            m.restart_at = Some(now);
        }
        self.cluster_start_due(rec);
        Ok(())
    }

    /// A member's pipe and its fast channel from the NAT.
    fn member_pipe(&mut self, rec: &ClusterRec, m: &MemberRec) -> Result<(), ControlError> {
        let (_, prefix) =
            crate::net::parse_cidr(&rec.spec.subnet).map_err(ControlError::Invalid)?;
        self.pipe_create(
            &m.name,
            &format!("{}/{prefix}", m.ip),
            None,
            (None, false),
            rec.owner,
        )?;
        self.fc_create(
            &rec.spec.name,
            &m.name,
            rec.spec.mode == NatMode::Dnat,
            None,
        )?;
        Ok(())
    }

    /// Write the NAT's configuration (its backends with their weights, and whether the
    /// supervisor sees them running).
    fn write_nat_config(&self, rec: &mut ClusterRec) -> Result<(), ControlError> {
        rec.generation += 1;
        let cfg = NatConfig {
            generation: rec.generation,
            ports: rec.spec.ports.clone(),
            policy: rec.spec.policy.clone(),
            mode: rec.spec.mode,
            conn_capacity: rec.spec.conn_capacity,
            health: rec.spec.health.clone(),
            backends: rec
                .members
                .iter()
                .filter(|m| !m.stopped)
                .map(|m| NatBackend {
                    name: m.name.clone(),
                    ip: m.ip,
                    weight: m.weight,
                    up: m.proc.is_some() || m.started.is_none(),
                })
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
        let pipes = self.pipes_dir();
        let fd = crate::beneath::open_dir(&pipes, Path::new(&rec.spec.name))
            .map_err(|e| ControlError::file("cannot open", &pipes.join(&rec.spec.name), e))?;
        use std::os::fd::AsFd;
        crate::beneath::replace_file(
            fd.as_fd(),
            Path::new(NAT_CONFIG_FILE),
            &body,
            rec.owner,
            0o644,
        )
        .map_err(|e| {
            ControlError::file(
                "cannot write",
                &pipes.join(&rec.spec.name).join(NAT_CONFIG_FILE),
                e,
            )
        })
    }

    /// What the NAT last reported (`None` if it has not, or wrote something unreadable).
    fn nat_stats(&self, rec: &ClusterRec) -> Option<NatStats> {
        use std::os::fd::AsFd;
        let fd = crate::beneath::open_dir(&self.pipes_dir(), Path::new(&rec.spec.name)).ok()?;
        let bytes =
            crate::beneath::read_file(fd.as_fd(), Path::new(NAT_STATS_FILE), MAX_STATS_BYTES)
                .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn launch_for(
        &self,
        rec: &ClusterRec,
        m: &MemberRec,
        is_nat: bool,
    ) -> Result<Launch, ControlError> {
        let pipe_dir = self.pipes_dir().join(&m.name);
        let mut env: Vec<(String, String)> = rec.spec.env.clone();
        env.push(("DOCKNET_PIPE".into(), pipe_dir.display().to_string()));
        let log = rec.dir.join(format!("{}.log", m.name));
        if is_nat {
            return Ok(Launch {
                program: nat_binary(&rec.spec)?,
                args: Vec::new(),
                env,
                uid: rec.owner.0,
                gid: rec.owner.1,
                log,
            });
        }
        match &rec.spec.run {
            MemberRun::Binary { path, args } => Ok(Launch {
                program: path.clone(),
                args: args.clone(),
                env,
                uid: rec.owner.0,
                gid: rec.owner.1,
                log,
            }),
            MemberRun::Image { dir, tag, args } => {
                let bundle = image_bundle(rec, m, (dir, tag, args), &pipe_dir)?;
                let root = rec.dir.join("runc");
                Ok(Launch {
                    program: PathBuf::from("runc"),
                    args: vec![
                        "--root".into(),
                        root.display().to_string(),
                        "run".into(),
                        "--bundle".into(),
                        bundle.display().to_string(),
                        container_id(m),
                    ],
                    // runc needs root; the member runs as the owner inside (--user).
                    env: Vec::new(),
                    uid: 0,
                    gid: 0,
                    log,
                })
            }
        }
    }

    /// Start every process whose (re)start is due. Returns true if any started.
    fn cluster_start_due(&mut self, rec: &mut ClusterRec) -> bool {
        let now = Instant::now();
        let mut started = false;
        let n = rec.members.len();
        for i in 0..=n {
            let is_nat = i == n;
            let m = if is_nat { &rec.nat } else { &rec.members[i] };
            if m.stopped || m.proc.is_some() || m.restart_at.is_none_or(|t| t > now) {
                continue;
            }
            let launch = match self.launch_for(rec, m, is_nat) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("cluster {}: {}: {e}", rec.spec.name, m.name);
                    continue;
                }
            };
            let m = if is_nat {
                &mut rec.nat
            } else {
                &mut rec.members[i]
            };
            match Proc::spawn(&launch) {
                Ok(p) => {
                    log::info!(
                        "cluster {}: started {} (pid {}) as {}:{}",
                        rec.spec.name,
                        m.name,
                        p.pid,
                        launch.uid,
                        launch.gid
                    );
                    m.proc = Some(p);
                    m.started = Some(now);
                    m.restart_at = None;
                    started = true;
                }
                Err(e) => {
                    log::error!(
                        "cluster {}: cannot start {} ({}): {e}",
                        rec.spec.name,
                        m.name,
                        launch.program.display()
                    );
                    m.deaths += 1;
                    m.restart_at = Some(now + backoff(m.deaths));
                }
            }
        }
        started
    }

    /// Every [`TICK`]: notice what died (tell the NAT at once, restart after a backoff)
    /// and start what is due.
    pub fn cluster_tick(&mut self) {
        if self.clusters.is_empty() || self.closed {
            return;
        }
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        let mut changed_any = false;
        for name in names {
            let Some(mut rec) = self.clusters.remove(&name) else {
                continue;
            };
            let now = Instant::now();
            let mut members_changed = false;
            let n = rec.members.len();
            for i in 0..=n {
                let m = if i == n {
                    &mut rec.nat
                } else {
                    &mut rec.members[i]
                };
                let died = match &mut m.proc {
                    Some(p) => !p.alive(),
                    None => false,
                };
                if died {
                    let ran = m.started.map_or(Duration::ZERO, |s| now - s);
                    if ran >= STABLE {
                        m.deaths = 0;
                    }
                    m.deaths += 1;
                    m.restarts += 1;
                    m.proc = None;
                    let wait = backoff(m.deaths);
                    m.restart_at = Some(now + wait);
                    log::warn!(
                        "cluster {name}: {} died (ran {:.1} s); restart {} in {} ms",
                        m.name,
                        ran.as_secs_f64(),
                        m.restarts,
                        wait.as_millis()
                    );
                    if i < n {
                        members_changed = true;
                    }
                    changed_any = true;
                }
            }
            if members_changed {
                if let Err(e) = self.write_nat_config(&mut rec) {
                    log::warn!("cluster {name}: {e}");
                }
            }
            if self.cluster_start_due(&mut rec) {
                changed_any = true;
                // Started members count as up again (the health checks decide traffic).
                if let Err(e) = self.write_nat_config(&mut rec) {
                    log::warn!("cluster {name}: {e}");
                }
            }
            self.clusters.insert(name, rec);
        }
        if changed_any {
            self.save_state();
        }
    }

    fn member_status(&self, m: &MemberRec, stats: Option<&NatStats>, is_nat: bool) -> MemberStatus {
        let b = stats.and_then(|s| s.backends.iter().find(|b| b.name == m.name));
        let health = if is_nat {
            match (stats, m.proc.as_ref()) {
                (Some(s), Some(p)) if s.pid == p.pid => "healthy",
                (_, None) => "unhealthy",
                _ => "unknown",
            }
        } else {
            match (b, m.proc.as_ref()) {
                (_, None) => "unhealthy",
                (Some(b), _) if b.healthy => "healthy",
                (Some(_), _) => "unhealthy",
                (None, _) => "unknown",
            }
        };
        MemberStatus {
            name: m.name.clone(),
            ip: m.ip.to_string(),
            pid: m.pid(),
            state: m.state().to_string(),
            health: health.to_string(),
            weight: m.weight,
            connections: b.map_or(0, |b| b.connections),
            active: b.map_or(0, |b| b.active),
            bytes: b.map_or(0, |b| b.bytes),
            restarts: m.restarts,
        }
    }

    fn cluster_status_of(&self, rec: &ClusterRec) -> ClusterStatus {
        let stats = self.nat_stats(rec);
        let stats = stats.filter(|s| rec.nat.proc.as_ref().is_some_and(|p| p.pid == s.pid));
        let mut nat = self.member_status(&rec.nat, stats.as_ref(), true);
        if let Some(s) = &stats {
            nat.connections = s.backends.iter().map(|b| b.connections).sum();
            nat.active = s.flows;
            nat.bytes = s.backends.iter().map(|b| b.bytes).sum();
        }
        ClusterStatus {
            name: rec.spec.name.clone(),
            vip: vip_text(&rec.spec),
            policy: rec.spec.policy.clone(),
            mode: rec.spec.mode,
            nat,
            members: rec
                .members
                .iter()
                .filter(|m| !m.stopped)
                .map(|m| self.member_status(m, stats.as_ref(), false))
                .collect(),
            nat_counters: stats.map_or(Value::Null, |s| {
                json!({ "flows": s.flows, "capacity": s.capacity, "generation": s.generation,
                        "counters": s.counters })
            }),
        }
    }

    pub(super) fn cluster_status(&mut self, name: &str) -> Result<Value, ControlError> {
        self.cluster_mut(name)?;
        let rec = &self.clusters[name];
        Ok(serde_json::to_value(self.cluster_status_of(rec)).unwrap_or(Value::Null))
    }

    pub(super) fn cluster_ls(&self) -> Value {
        json!(self.clusters.keys().collect::<Vec<_>>())
    }

    /// `cluster scale`.
    pub(super) fn cluster_scale(
        &mut self,
        name: &str,
        replicas: u32,
    ) -> Result<Value, ControlError> {
        if replicas == 0 {
            return Err(ControlError::Invalid(
                "replicas must be at least 1 (cluster down removes a cluster)".into(),
            ));
        }
        self.cluster_mut(name)?;
        let mut rec = self.clusters.remove(name).expect("checked");
        let r = self.cluster_scale_rec(&mut rec, replicas);
        self.clusters.insert(name.to_string(), rec);
        r?;
        Ok(json!({ "name": name, "replicas": replicas }))
    }

    fn cluster_scale_rec(
        &mut self,
        rec: &mut ClusterRec,
        replicas: u32,
    ) -> Result<(), ControlError> {
        let have = rec.members.len() as u32;
        if replicas > have {
            let mut taken: Vec<Ipv4Addr> = vec![rec.spec.vip];
            taken.extend(rec.members.iter().map(|m| m.ip));
            let ips = self.free_member_ips(&rec.spec.subnet, &taken)?;
            let need = (replicas - have) as usize;
            if ips.len() < need {
                return Err(ControlError::Invalid(format!(
                    "subnet {} has {} free addresses for {need} more members",
                    rec.spec.subnet,
                    ips.len()
                )));
            }
            let mut next = rec
                .members
                .iter()
                .filter_map(|m| m.name.rsplit('-').next()?.parse::<u32>().ok())
                .max()
                .unwrap_or(0);
            for ip in ips.into_iter().take(need) {
                next += 1;
                let m = MemberRec::new(format!("{}-{next}", rec.spec.name), ip, rec.spec.weight);
                self.member_pipe(rec, &m)?;
                rec.members.push(m);
            }
            rec.spec.replicas = replicas;
            self.write_nat_config(rec)?;
            self.cluster_start_due(rec);
        } else {
            let gone: Vec<MemberRec> = rec.members.split_off(replicas as usize);
            rec.spec.replicas = replicas;
            // The NAT forgets them (and resets their flows) before they stop.
            self.write_nat_config(rec)?;
            for mut m in gone {
                self.member_remove(rec, &mut m);
            }
        }
        log::info!("cluster {}: scaled to {replicas} members", rec.spec.name);
        Ok(())
    }

    /// Stop a member's process and remove its pipe (and its fast channel).
    fn member_remove(&mut self, rec: &ClusterRec, m: &mut MemberRec) {
        m.stopped = true;
        if let Some(p) = &mut m.proc {
            p.stop(STOP_GRACE);
        }
        m.proc = None;
        runc_delete(rec, m);
        if self.pipes.contains_key(&m.name) {
            if let Err(e) = self.pipe_rm(&m.name) {
                log::warn!("{}: {e}", m.name);
            }
        }
    }

    /// `cluster weight` (0 = drain).
    pub(super) fn cluster_weight(
        &mut self,
        name: &str,
        member: &str,
        weight: u32,
    ) -> Result<Value, ControlError> {
        if weight > 1000 {
            return Err(ControlError::Invalid(format!(
                "weight {weight} is out of range (0..=1000)"
            )));
        }
        let rec = self.cluster_mut(name)?;
        let m = rec
            .members
            .iter_mut()
            .find(|m| m.name == member)
            .ok_or_else(|| {
                ControlError::Invalid(format!("cluster {name} has no member {member:?}"))
            })?;
        m.weight = weight;
        let mut rec = self.clusters.remove(name).expect("checked");
        let r = self.write_nat_config(&mut rec);
        self.clusters.insert(name.to_string(), rec);
        r?;
        log::info!("cluster {name}: {member} weight {weight}");
        Ok(json!({ "name": name, "member": member, "weight": weight }))
    }

    /// `cluster down`: stop everything, remove the pipes.
    pub(super) fn cluster_down(&mut self, name: &str) -> Result<Value, ControlError> {
        self.cluster_mut(name)?;
        let mut rec = self.clusters.remove(name).expect("checked");
        self.cluster_teardown(&mut rec);
        log::info!("cluster {name}: down");
        Ok(json!({ "removed": name }))
    }

    fn cluster_teardown(&mut self, rec: &mut ClusterRec) {
        rec.nat.stopped = true;
        if let Some(p) = &mut rec.nat.proc {
            p.stop(STOP_GRACE);
        }
        rec.nat.proc = None;
        let mut members = std::mem::take(&mut rec.members);
        for m in &mut members {
            self.member_remove(rec, m);
        }
        if self.pipes.contains_key(&rec.spec.name) {
            if let Err(e) = self.pipe_rm(&rec.spec.name) {
                log::warn!("{}: {e}", rec.spec.name);
            }
        }
        let _ = std::fs::remove_dir_all(&rec.dir);
    }

    /// Stop every cluster (`shutdown --remove-all`).
    pub(super) fn clusters_stop_all(&mut self) {
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        for n in names {
            if let Some(mut rec) = self.clusters.remove(&n) {
                self.cluster_teardown(&mut rec);
            }
        }
    }

    pub(super) fn saved_clusters(&self) -> Vec<SavedCluster> {
        self.clusters
            .values()
            .map(|c| SavedCluster {
                spec: c.spec.clone(),
                owner: c.owner,
                generation: c.generation,
                nat: saved_member(&c.nat),
                members: c.members.iter().map(saved_member).collect(),
            })
            .collect()
    }

    /// Take over the clusters an earlier docknetd ran: processes still running are
    /// watched again (not restarted); the rest are started.
    pub(super) fn clusters_readopt(&mut self, saved: &[SavedCluster]) {
        for s in saved {
            let mut rec = ClusterRec {
                spec: s.spec.clone(),
                owner: s.owner,
                nat: member_from_saved(&s.nat),
                members: s.members.iter().map(member_from_saved).collect(),
                generation: s.generation,
                dir: self.clusters_dir().join(&s.spec.name),
            };
            let _ = std::fs::create_dir_all(&rec.dir);
            let running = rec.members.iter().filter(|m| m.proc.is_some()).count();
            log::info!(
                "cluster {}: re-adopted ({running} of {} members running, NAT {})",
                s.spec.name,
                rec.members.len(),
                if rec.nat.proc.is_some() {
                    "running"
                } else {
                    "to restart"
                }
            );
            if let Err(e) = self.write_nat_config(&mut rec) {
                log::warn!("cluster {}: {e}", s.spec.name);
            }
            self.clusters.insert(s.spec.name.clone(), rec);
        }
    }

    /// The cluster pipe `name` belongs to, if any (such pipes go with `cluster down`).
    pub(super) fn cluster_of_pipe(&self, name: &str) -> Option<&str> {
        self.clusters
            .values()
            .find(|c| c.spec.name == name || c.members.iter().any(|m| m.name == name))
            .map(|c| c.spec.name.as_str())
    }
}

/// The runc container id of an image member.
fn container_id(m: &MemberRec) -> String {
    format!("docknet-{}", m.name)
}

/// Make (again) the runc bundle of an image member: its pipe mounted at
/// /run/docknet/pipe, running as the cluster's owner; a container of the same id left by
/// an earlier run is deleted first.
fn image_bundle(
    rec: &ClusterRec,
    m: &MemberRec,
    (image, tag, args): (&PathBuf, &String, &Vec<String>),
    pipe_dir: &Path,
) -> Result<PathBuf, ControlError> {
    let bundle = rec.dir.join("bundles").join(&m.name);
    let _ = std::fs::remove_dir_all(&bundle);
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ControlError::file("cannot create", parent, e))?;
    }
    runc_delete(rec, m);
    let tool = std::env::current_exe()
        .map(|e| e.with_file_name("docknet-image"))
        .map_err(|e| ControlError::Unavailable(format!("cannot find docknetd's own path: {e}")))?;
    let mut cmd = std::process::Command::new(&tool);
    cmd.arg("runc-bundle")
        .arg("--image")
        .arg(image)
        .arg("--tag")
        .arg(tag)
        .arg("--pipe")
        .arg(pipe_dir)
        .arg("--out")
        .arg(&bundle)
        .arg("--user")
        .arg(format!("{}:{}", rec.owner.0, rec.owner.1))
        .arg("--hostname")
        .arg(&m.name)
        .arg("--quiet");
    for (k, v) in &rec.spec.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg("--").args(args);
    let out = cmd.output().map_err(|e| {
        ControlError::Unavailable(format!(
            "cannot run {} (it ships beside docknetd): {e}",
            tool.display()
        ))
    })?;
    if !out.status.success() {
        return Err(ControlError::Invalid(format!(
            "docknet-image runc-bundle for {}: {}",
            m.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(bundle)
}

/// Remove an image member's container (stopped or not); nothing if it has none.
fn runc_delete(rec: &ClusterRec, m: &MemberRec) {
    if !matches!(rec.spec.run, MemberRun::Image { .. }) {
        return;
    }
    let _ = std::process::Command::new("runc")
        .arg("--root")
        .arg(rec.dir.join("runc"))
        .args(["delete", "-f", &container_id(m)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn backoff(deaths: u32) -> Duration {
    let d = FIRST_BACKOFF * 2u32.saturating_pow(deaths.saturating_sub(1).min(10));
    d.min(MAX_BACKOFF)
}
