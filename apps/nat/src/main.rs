//! `dn-nat`: an L4 load balancer (NAT) on the DockNet libOS.
//!
//! Its pipe's address is the virtual IP. Frames to the VIP's ports are sent to a backend
//! chosen by Maglev hashing, round robin or least connections, and the backends' replies
//! are sent back from the VIP (see `forward`); its own TCP stack runs the health checks
//! (`health`). The configuration (`nat.json` in the pipe directory, or `--config`) is
//! re-read when it changes, so backends are added, removed, drained and re-weighted live;
//! the NAT reports what it sees to `nat-stats.json` (or `--stats`) every 100 ms.

mod forward;
mod health;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use dn_nat::backends::{BackendSet, Policy};
use dn_nat::conntrack::{ConnTable, Timeouts};
use dn_nat::maglev::DEFAULT_TABLE_SIZE;
use docknet::runtime::AppResult;
use docknet::{Control, Engine};
use docknet_master::cluster::natfile::{
    NatConfig, NatStats, CONFIG_POLL_MS, NAT_CONFIG_FILE, NAT_STATS_FILE, STATS_EVERY_MS,
};
use docknet_master::cluster::{NatBackendStats, NatMode, Proto};

use forward::{Claim, Counters, Nat, FULLNAT_MAX_FLOWS, FULLNAT_PORT_BASE, RST_FRAME_LEN};
use health::HealthChecker;

/// L4 load balancer on the DockNet libOS: run it on a pipe whose address is the VIP.
#[derive(Parser, Debug)]
#[command(name = "dn-nat", version, after_help = CONFIG_EXAMPLE)]
struct Args {
    /// The configuration (JSON: ports, policy, mode, health, backends; see
    /// docs/ARCHITECTURE.md). Default: nat.json in the pipe directory, where docknetd
    /// writes it for a cluster. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to write what the NAT sees (per backend: health, connections, bytes).
    /// Default: nat-stats.json in the pipe directory.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
}

const CONFIG_EXAMPLE: &str = r#"A configuration (docknetd writes one per cluster; `generation` goes up on every change):
  {"generation": 1, "ports": [{"port": 80, "proto": "tcp"}], "policy": "maglev",
   "mode": "dnat", "conn_capacity": 65536,
   "health": {"kind": "http", "path": "/", "port": null, "interval_ms": 200},
   "backends": [{"name": "web-1", "ip": "10.88.1.2", "weight": 1, "up": true}]}
policy: maglev | rr | least-conn; mode: dnat (backends reply through this NAT: give it
a fast channel to each, `docknetctl fc create NAT BACKEND --forward`, and the NAT's pipe
--forwarder) | fullnat (the source is rewritten too); weight 0 drains a backend."#;

/// Longest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// How often the stats file is rewritten (if anything changed).
const STATS_EVERY: Duration = Duration::from_millis(STATS_EVERY_MS);
/// Table slots looked at per expiry sweep (one every `CONFIG_POLL_MS`).
const EXPIRE_BUDGET: usize = 8192;

fn read_config(path: &Path) -> Result<NatConfig, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg: NatConfig =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if cfg.ports.is_empty() {
        return Err(format!(
            "{}: no ports: the VIP serves nothing",
            path.display()
        ));
    }
    Ok(cfg)
}

/// (modification time, length, inode): a change means "read it again".
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

struct Service {
    nat: Nat,
    health: HealthChecker,
    config_path: PathBuf,
    stats_path: PathBuf,
    stamp: Option<(std::time::SystemTime, u64, u64)>,
    generation: u64,
    started: Instant,
    /// Scratch for the clients to reset when a backend goes (reused).
    resets: Vec<(u32, u16, u16, u32)>,
    transitions: Vec<health::Transition>,
    last_stats: Option<NatStats>,
}

impl Service {
    /// Apply a (new) configuration: backends added, re-weighted, marked down or removed;
    /// flows of the removed and the down are reset.
    fn apply(&mut self, e: &mut Engine, cfg: &NatConfig) {
        self.generation = cfg.generation;
        if cfg.ports != self.nat.claim.ports {
            log::info!("VIP ports now {:?}", cfg.ports);
            self.nat.claim.ports = cfg.ports.clone();
            let claim = self.nat.claim.clone();
            e.set_packet_filter(move |h| claim.claims(h));
        }
        let names: Vec<String> = self
            .nat
            .backends
            .iter()
            .map(|(_, b)| b.name.clone())
            .collect();
        for name in names {
            if !cfg.backends.iter().any(|b| b.name == name) {
                if let Some(idx) = self.nat.backends.index_of(&name) {
                    self.reset_flows(e, idx);
                    self.health.forget(e, idx);
                    self.nat.backends.remove(&name);
                    log::info!("backend {name} removed");
                }
            }
        }
        for b in &cfg.backends {
            let known = self.nat.backends.index_of(&b.name);
            let idx = match self.nat.backends.upsert(&b.name, b.ip, b.weight) {
                Ok(i) => i,
                Err(err) => {
                    log::error!("backend {}: {err}", b.name);
                    continue;
                }
            };
            if known.is_none() {
                log::info!("backend {} ({}) added, weight {}", b.name, b.ip, b.weight);
                self.health.forget(e, idx);
                self.health.check_soon(idx);
            }
            if !b.up {
                let was = self.nat.backends.get(idx).is_some_and(|x| x.healthy);
                self.nat.backends.set_healthy(idx, false);
                if was {
                    log::warn!(
                        "backend {}: not running (supervisor): out of rotation",
                        b.name
                    );
                    self.reset_flows(e, idx);
                }
                self.health.forget(e, idx);
            }
        }
    }

    /// Drop backend `idx`'s flows and reset their clients.
    fn reset_flows(&mut self, e: &mut Engine, idx: u16) {
        self.resets.clear();
        self.nat.drop_backend_flows(idx, &mut self.resets);
        let vip = self.nat.claim.vip;
        for &(cip, cport, vport, seq) in &self.resets {
            let sent = e.send_frame(cip.into(), RST_FRAME_LEN, |f| {
                let _ = dn_nat::packet::write_tcp_rst(f, (vip, vport), (cip, cport), seq, None);
            });
            if sent {
                self.nat.counters.resets_sent += 1;
            } else {
                self.nat.counters.tx_no_buffer += 1;
            }
        }
    }

    fn stats(&self) -> NatStats {
        let mut counters: std::collections::BTreeMap<String, u64> = self
            .nat
            .counters
            .named()
            .iter()
            .map(|&(k, v)| (k.to_string(), v))
            .collect();
        counters.insert("flows".into(), self.nat.table.len() as u64);
        NatStats {
            pid: std::process::id(),
            generation: self.generation,
            uptime_ms: 0,
            flows: self.nat.table.len() as u64,
            capacity: self.nat.table.capacity() as u64,
            counters,
            backends: self
                .nat
                .backends
                .iter()
                .map(|(_, b)| NatBackendStats {
                    name: b.name.clone(),
                    healthy: b.healthy,
                    weight: b.weight,
                    active: u64::from(b.active),
                    connections: b.total,
                    bytes: b.bytes,
                })
                .collect(),
        }
    }

    /// Rewrite the stats file if anything changed (atomically: a temporary file renamed).
    fn write_stats(&mut self) {
        let s = self.stats();
        if self.last_stats.as_ref() == Some(&s) {
            return;
        }
        let mut out = s.clone();
        out.uptime_ms = self.started.elapsed().as_millis() as u64;
        let tmp = self.stats_path.with_extension("json.tmp");
        let body = serde_json::to_vec(&out).unwrap_or_default();
        if let Err(e) =
            std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &self.stats_path))
        {
            log::warn!("cannot write {}: {e}", self.stats_path.display());
            return;
        }
        self.last_stats = Some(s);
    }

    /// Re-read the configuration if its file changed.
    fn poll_config(&mut self, e: &mut Engine) {
        let stamp = file_stamp(&self.config_path);
        if stamp == self.stamp {
            return;
        }
        match read_config(&self.config_path) {
            Ok(cfg) => {
                self.stamp = stamp;
                self.apply(e, &cfg);
            }
            Err(err) => {
                // Keep the configuration in force; try again when the file changes.
                log::warn!("new configuration not applied: {err}");
                self.stamp = stamp;
            }
        }
    }
}

fn new_nat(vip: std::net::Ipv4Addr, cfg: &NatConfig) -> Result<Nat, String> {
    let policy: Policy = cfg.policy.parse().map_err(|e| format!("policy: {e}"))?;
    let backends = BackendSet::new(policy, DEFAULT_TABLE_SIZE).map_err(|e| e.to_string())?;
    let mut capacity = cfg.conn_capacity.max(16);
    let fullnat = cfg.mode == NatMode::Fullnat;
    if fullnat && capacity > FULLNAT_MAX_FLOWS {
        log::warn!(
            "full NAT: connection table capped at {FULLNAT_MAX_FLOWS} flows (one source port each)"
        );
        capacity = FULLNAT_MAX_FLOWS;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    Ok(Nat {
        claim: Claim {
            vip: u32::from(vip),
            ports: cfg.ports.clone(),
            fullnat_ports: fullnat.then_some((FULLNAT_PORT_BASE, capacity)),
        },
        mode: cfg.mode,
        backends,
        table: ConnTable::with_capacity(capacity as usize, Timeouts::default(), seed)
            .map_err(|e| format!("conn_capacity: {e}"))?,
        counters: Counters::default(),
    })
}

fn app(engine: &mut Engine, args: Args) -> AppResult {
    let dir = engine.pipe_dir().to_path_buf();
    let config_path = args.config.unwrap_or_else(|| dir.join(NAT_CONFIG_FILE));
    let stats_path = args.stats.unwrap_or_else(|| dir.join(NAT_STATS_FILE));
    let cfg = read_config(&config_path)?;
    let nat = new_nat(engine.local_ip(), &cfg)?;
    let health_port = cfg
        .health
        .port
        .or_else(|| {
            cfg.ports
                .iter()
                .find(|p| p.proto == Proto::Tcp)
                .map(|p| p.port)
        })
        .ok_or("health checks need a TCP port: set health.port")?;
    let claim = nat.claim.clone();
    engine.set_packet_filter(move |h| claim.claims(h));
    let mut svc = Service {
        nat,
        health: HealthChecker::new(cfg.health.clone(), health_port),
        config_path: config_path.clone(),
        stats_path,
        stamp: file_stamp(&config_path),
        generation: cfg.generation,
        started: Instant::now(),
        resets: Vec::with_capacity(1024),
        transitions: Vec::new(),
        last_stats: None,
    };
    svc.apply(engine, &cfg);
    log::info!(
        "dn-nat on {} ports {:?}, policy {}, mode {:?}, {} backends",
        engine.local_ip(),
        cfg.ports,
        cfg.policy,
        cfg.mode,
        cfg.backends.len()
    );
    let mut next_maint = Instant::now();
    let mut next_stats = Instant::now();
    let mut next_health = Instant::now();
    engine.run(|e| {
        let now = Instant::now();
        let now_ms = now.duration_since(svc.started).as_millis() as u64;
        let nat = &mut svc.nat;
        e.packets(|io| nat.handle(io, now_ms));
        // Health checks: at their times, and every round while one is open (a few
        // sockets; no allocation).
        if now >= next_health || svc.health.inflight() {
            let mut tr = std::mem::take(&mut svc.transitions);
            tr.clear();
            let targets = svc.nat.backends.iter().map(|(i, b)| (i, b.ip));
            next_health = svc.health.tick(e, targets, now, &mut tr);
            for &(idx, ok) in &tr {
                let name = svc
                    .nat
                    .backends
                    .get(idx)
                    .map(|b| b.name.clone())
                    .unwrap_or_default();
                svc.nat.backends.set_healthy(idx, ok);
                if ok {
                    log::info!("backend {name}: healthy, in rotation");
                } else {
                    log::warn!("backend {name}: failed health checks, out of rotation");
                    svc.reset_flows(e, idx);
                }
            }
            svc.transitions = tr;
        }
        if now >= next_maint {
            svc.nat.expire(now_ms, EXPIRE_BUDGET);
            svc.poll_config(e);
            next_maint = now + Duration::from_millis(CONFIG_POLL_MS);
        }
        if now >= next_stats {
            svc.write_stats();
            next_stats = now + STATS_EVERY;
        }
        e.wake_at(next_maint.min(next_stats).min(next_health));
        Control::Continue
    });
    svc.write_stats();
    Ok(())
}

fn main() {
    // Arguments first: `--help` works without a pipe.
    let args = Args::parse();
    std::process::exit(docknet::runtime::start(
        "dn-nat",
        |_| {},
        |engine| app(engine, args),
    ));
}
