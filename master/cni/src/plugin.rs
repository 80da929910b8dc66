//! What each CNI command does (see docs/ARCHITECTURE.md, *The CNI plugin*).
//!
//! - ADD: record the attachment, take an address from the IPAM plugin, create the pipe
//!   through docknetd with it, link it for the pod (`RUN_DIR/pods/POD_UID/IFNAME`), and
//!   answer with `prevResult` (if any) plus the pipe; a failure half-way gives back what
//!   was taken.
//! - DEL: remove the pipe, the link and the address, then the record; whatever is
//!   missing already is fine.
//! - CHECK: the record, the pipe and its address agree with `prevResult`; the IPAM
//!   plugin's CHECK passes.
//! - GC: DEL for every recorded attachment of the network not in the valid list.
//! - STATUS: docknetd answers, the IPAM plugin is there.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use docknet_master::control::{self, ClientError, PipeEntry, Request, SOCKET_NAME};
use serde_json::Value;

use crate::config::{check_owner, NetConf, FORWARDER_ARG, OWNER_ARG};
use crate::delegate::{self, AttachmentEnv};
use crate::protocol::{
    code, CniEnv, CniError, Command, Interface, IpConfig, SuccessResult, Version,
};
use crate::state::{pipe_name, AttachmentState, StateDir};

/// How long one docknetd request may take.
const DOCKNETD_TIMEOUT: Duration = Duration::from_secs(10);
/// The `CNI_ARGS` key with the pod's UID (set by containerd and CRI-O for Kubernetes).
pub const POD_UID_ARG: &str = "K8S_POD_UID";
/// Directory (in docknetd's run directory) of the pods' links to their pipes.
pub const PODS_DIR: &str = "pods";

/// docknetd at a run directory, through `docknet-master`'s control client.
struct Docknetd {
    sock: PathBuf,
}

impl Docknetd {
    fn new(run_dir: &Path) -> Docknetd {
        Docknetd {
            sock: run_dir.join(SOCKET_NAME),
        }
    }

    fn call(&self, req: &Request) -> Result<Value, CniError> {
        control::request(&self.sock, req, DOCKNETD_TIMEOUT).map_err(|e| match e {
            ClientError::Unreachable(m) => CniError::new(code::TRY_AGAIN_LATER, m),
            ClientError::Remote(m) => {
                CniError::new(code::DOCKNETD_REFUSED, format!("docknetd: {m}"))
            }
        })
    }

    fn ping(&self) -> Result<(), CniError> {
        self.call(&Request::Ping).map(drop)
    }

    fn pipes(&self) -> Result<Vec<PipeEntry>, CniError> {
        let v = self.call(&Request::PipeLs)?;
        serde_json::from_value(v).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("malformed pipe list from docknetd: {e}"),
            )
        })
    }

    fn pipe(&self, name: &str) -> Result<Option<PipeEntry>, CniError> {
        Ok(self.pipes()?.into_iter().find(|p| p.name == name))
    }

    fn create(
        &self,
        name: &str,
        ip: &str,
        mtu: Option<u32>,
        (owner, forwarder): (Option<String>, bool),
    ) -> Result<PipeEntry, CniError> {
        let v = self.call(&Request::PipeCreate {
            name: name.into(),
            ip: ip.into(),
            mtu,
            rate_mbps: None,
            forwarder,
            owner,
        })?;
        serde_json::from_value(v).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("malformed answer from docknetd to pipe create: {e}"),
            )
        })
    }

    /// Remove pipe `name` if it exists.
    fn remove(&self, name: &str) -> Result<(), CniError> {
        if self.pipe(name)?.is_some() {
            self.call(&Request::PipeRm { name: name.into() })?;
            log::info!("removed pipe {name}");
        }
        Ok(())
    }
}

/// Run one command; `Ok(Some(json))` is printed on stdout.
pub fn run(command: Command, env: &CniEnv, conf: &NetConf) -> Result<Option<Value>, CniError> {
    match command {
        Command::Add => add(env, conf).map(Some),
        Command::Del => del(env, conf).map(|()| None),
        Command::Check => check(env, conf).map(|()| None),
        Command::Gc => gc(env, conf).map(|()| None),
        Command::Status => status(env, conf).map(|()| None),
        Command::Version => unreachable!("VERSION is answered before a configuration is read"),
    }
}

fn attachment_env(env: &CniEnv) -> AttachmentEnv {
    AttachmentEnv {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        args: env.args.clone(),
    }
}

/// The one IPv4 address of an IPAM result, checked against docknetd's model (the
/// subnet's first address is the master's, the gateway).
fn ipam_address(r: &SuccessResult) -> Result<(Ipv4Addr, u8, Ipv4Addr), CniError> {
    let mut v4 = Vec::new();
    for ip in &r.ips {
        match crate::protocol::parse_cidr_any(&ip.address) {
            Ok((IpAddr::V4(a), n)) => v4.push((a, n, ip.gateway.clone())),
            Ok((IpAddr::V6(_), _)) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "the IPAM plugin gave the IPv6 address {}: DockNet pipes are IPv4 only; give the ipam section IPv4 ranges only",
                        ip.address
                    ),
                ))
            }
            Err(e) => {
                return Err(CniError::new(
                    code::DECODE_FAILURE,
                    format!("the IPAM plugin's result: {e}"),
                ))
            }
        }
    }
    let (addr, prefix, gw) = match v4.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the IPAM plugin gave no IPv4 address",
            ))
        }
        _ => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "the IPAM plugin gave {} IPv4 addresses; a pipe has one (give the ipam section one range)",
                    v4.len()
                ),
            ))
        }
    };
    let gateway = docknet_master::net::validate_host_addr(addr, prefix).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("the IPAM plugin gave {addr}/{prefix}, which docknetd cannot use: {e}"),
        )
    })?;
    if let Some(g) = gw {
        if g != gateway.to_string() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "the IPAM plugin's gateway {g} is not docknetd's: the master is the first address of {}/{prefix}, {gateway}; set ipam's gateway to {gateway} or leave it out",
                    Ipv4Addr::from(u32::from(addr) & docknet_master::net::netmask(prefix))
                ),
            ));
        }
    }
    Ok((addr, prefix, gateway))
}

/// The owner of the attachment's pipe: CNI_ARGS `DOCKNET_OWNER`, else the configuration.
fn owner(env: &CniEnv, conf: &NetConf) -> Result<Option<String>, CniError> {
    if let Some(o) = env.args()?.get(OWNER_ARG) {
        check_owner(o, "CNI_ARGS DOCKNET_OWNER")?;
        return Ok(Some(o.clone()));
    }
    Ok(conf.owner.clone())
}

/// Whether the attachment's pipe is a forwarder: CNI_ARGS `DOCKNET_FORWARDER`, else the
/// configuration (`args.cni.forwarder`, `forwarder`).
fn forwarder(env: &CniEnv, conf: &NetConf) -> Result<bool, CniError> {
    match env.args()?.get(FORWARDER_ARG).map(String::as_str) {
        None => Ok(conf.forwarder),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_ARGS {FORWARDER_ARG}={v:?} is not true, false, 1 or 0"),
        )),
    }
}

/// The pod's UID from CNI_ARGS, if it is one we can name a directory after.
fn pod_uid(env: &CniEnv) -> Result<Option<String>, CniError> {
    let Some(uid) = env.args()?.get(POD_UID_ARG).cloned() else {
        return Ok(None);
    };
    if uid.is_empty()
        || uid.len() > 64
        || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_ARGS {POD_UID_ARG} {uid:?} is not a pod UID"),
        ));
    }
    Ok(Some(uid))
}

/// Undo an attachment (its record need not be complete): pipe, pod link, address,
/// record. Every step is tried; the record goes only when all succeeded (else it stays
/// for DEL or GC to retry), and the first failure is returned.
fn release(st: &AttachmentState, sd: &StateDir, cni_path: &[String]) -> Result<(), CniError> {
    let mut first: Option<CniError> = None;
    if let Err(e) = Docknetd::new(&st.run_dir).remove(&st.pipe) {
        first.get_or_insert(e);
    }
    if let Some(link) = &st.pod_link {
        remove_pod_link(link);
    }
    let ipam_type = st
        .ipam_conf
        .get("ipam")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str);
    if let Some(t) = ipam_type {
        let att = AttachmentEnv {
            container_id: Some(st.container_id.clone()),
            ifname: Some(st.ifname.clone()),
            netns: st.netns.clone(),
            args: st.cni_args.clone(),
        };
        let r = delegate::find(t, cni_path)
            .and_then(|plugin| delegate::run(&plugin, Command::Del, &att, &st.ipam_conf));
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => sd.remove(&st.pipe),
    }
}

/// Remove the pod's link and its directory if that is now empty.
fn remove_pod_link(link: &Path) {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", link.display()),
    }
    // The pod's directory, then `pods/`, if now empty.
    for dir in link.ancestors().skip(1).take(2) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// `RUN_DIR/pods/UID/IFNAME` -> `../../pipes/PIPE`: where a pod's hostPath volume with
/// `subPathExpr: pods/$(POD_UID)/IFNAME` finds its pipe.
fn make_pod_link(run_dir: &Path, uid: &str, ifname: &str, pipe: &str) -> Result<PathBuf, CniError> {
    let dir = run_dir.join(PODS_DIR).join(uid);
    std::fs::create_dir_all(&dir).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let link = dir.join(ifname);
    let target = Path::new("../..").join(control::PIPES_DIR).join(pipe);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!(
                "cannot link {} to {}: {e}",
                link.display(),
                target.display()
            ),
        )
    })?;
    Ok(link)
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let ipam_type = conf.ipam_type()?;
    let owner = owner(env, conf)?;
    let forwarder = forwarder(env, conf)?;
    let uid = pod_uid(env)?;
    // A chain gives every plugin the same CNI_IFNAME: `prevResult` may well have a kernel
    // interface of that name (the `bridge` plugin's eth0). A pipe is no kernel interface,
    // so nothing clashes; our entry is told apart by its MAC and socket path.
    let prev = conf.prev_result()?;
    let plugin = delegate::find(ipam_type, &env.path)?;
    let pipe = pipe_name(container_id, ifname);
    let sd = StateDir::new(&conf.state_dir, &conf.network);
    let daemon = Docknetd::new(&conf.run_dir);
    // docknetd must answer before anything is taken (else: code 11, try again later).
    daemon.ping()?;

    if let Some(old) = sd.load(&pipe)? {
        if Docknetd::new(&old.run_dir).pipe(&pipe)?.is_some() {
            return Err(CniError::new(
                code::ATTACHMENT_EXISTS,
                format!("container {container_id} already has interface {ifname} on network {} (pipe {pipe}); DEL it first", conf.network),
            ));
        }
        log::warn!("attachment {container_id}/{ifname}: a record without a pipe (an ADD that died?): cleaning it up first");
        release(&old, &sd, &env.path)?;
    }
    let ipam_conf = conf.for_ipam()?;
    let mut st = AttachmentState {
        container_id: container_id.into(),
        ifname: ifname.into(),
        network: conf.network.clone(),
        pipe: pipe.clone(),
        run_dir: conf.run_dir.clone(),
        netns: Some(netns.into()),
        cni_args: env.args.clone(),
        ipam_conf: ipam_conf.clone(),
        address: None,
        pod_link: None,
    };
    // Recorded before anything is taken: an ADD that dies from here on leaves a record
    // that DEL or GC cleans up.
    sd.store(&st)?;
    let att = attachment_env(env);
    let undo = |st: &AttachmentState, e: CniError| -> CniError {
        log::warn!("ADD {container_id}/{ifname} failed: {e}; giving back what it took");
        if let Err(u) = release(st, &sd, &env.path) {
            log::error!("ADD {container_id}/{ifname}: cannot give back what it took: {u} (DEL or GC will retry)");
        }
        e
    };

    let ipam = match delegate::add(&plugin, &att, &ipam_conf) {
        Ok(r) => r,
        Err(e) => return Err(undo(&st, e)),
    };
    let (addr, prefix, gateway) = match ipam_address(&ipam) {
        Ok(a) => a,
        Err(e) => return Err(undo(&st, e)),
    };
    let cidr = format!("{addr}/{prefix}");
    st.address = Some(cidr.clone());
    if let Err(e) = sd.store(&st) {
        return Err(undo(&st, e));
    }
    let entry = match daemon.create(&pipe, &cidr, conf.mtu, (owner, forwarder)) {
        Ok(p) => p,
        Err(e) => return Err(undo(&st, e)),
    };
    log::info!(
        "ADD {container_id}/{ifname}: pipe {pipe} {cidr} at {}{}",
        entry.dir,
        if forwarder { " (forwarder)" } else { "" }
    );
    if let Some(uid) = uid {
        let link = match make_pod_link(&conf.run_dir, &uid, ifname, &pipe) {
            Ok(l) => l,
            Err(e) => return Err(undo(&st, e)),
        };
        st.pod_link = Some(link);
        if let Err(e) = sd.store(&st) {
            return Err(undo(&st, e));
        }
    }

    let mut result = prev.unwrap_or_default();
    result.interfaces.push(Interface {
        name: ifname.into(),
        mac: Some(entry.mac.clone()),
        mtu: Some(entry.mtu),
        sandbox: Some(netns.into()),
        socket_path: Some(entry.dir.clone()),
        pci_id: None,
    });
    let index = result.interfaces.len() - 1;
    result.ips.push(IpConfig {
        version: None,
        address: cidr,
        gateway: Some(gateway.to_string()),
        interface: Some(index),
    });
    result.routes.extend(ipam.routes);
    if result.dns.is_none() {
        result.dns = ipam.dns;
    }
    Ok(result.converted(conf.version).to_json())
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let pipe = pipe_name(container_id, ifname);
    let sd = StateDir::new(&conf.state_dir, &conf.network);
    let st = match sd.load(&pipe)? {
        Some(st) => st,
        // No record (never added, or deleted already): undo what this configuration
        // would have made, all of it idempotent.
        None => AttachmentState {
            container_id: container_id.into(),
            ifname: ifname.into(),
            network: conf.network.clone(),
            pipe: pipe.clone(),
            run_dir: conf.run_dir.clone(),
            netns: env.netns.clone(),
            cni_args: env.args.clone(),
            ipam_conf: if conf.ipam_type.is_some() {
                conf.for_ipam()?
            } else {
                Value::Null
            },
            address: None,
            pod_link: pod_uid(env)?.map(|uid| conf.run_dir.join(PODS_DIR).join(uid).join(ifname)),
        },
    };
    release(&st, &sd, &env.path)?;
    log::info!("DEL {container_id}/{ifname}: pipe {pipe} gone");
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let ipam_type = conf.ipam_type()?;
    let prev = conf.prev_result()?.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs the ADD result as prevResult",
        )
    })?;
    let pipe = pipe_name(container_id, ifname);
    let fail = |m: String| CniError::new(code::CHECK_FAILED, m);
    let sd = StateDir::new(&conf.state_dir, &conf.network);
    let st = sd.load(&pipe)?.ok_or_else(|| {
        fail(format!(
            "no attachment {container_id}/{ifname} on network {} (no record in {})",
            conf.network,
            sd.path().display()
        ))
    })?;
    let entry = Docknetd::new(&st.run_dir).pipe(&pipe)?.ok_or_else(|| {
        fail(format!(
            "pipe {pipe} of {container_id}/{ifname} is gone from docknetd"
        ))
    })?;
    if entry.broken {
        return Err(fail(format!(
            "pipe {pipe} is broken (its file was shrunk under docknetd)"
        )));
    }
    if st.address.as_deref() != Some(entry.ip.as_str()) {
        return Err(fail(format!(
            "pipe {pipe} has address {}, the attachment was given {}",
            entry.ip,
            st.address.as_deref().unwrap_or("none")
        )));
    }
    // prevResult: our interface, by name, sandbox and the pipe's MAC (a chain may have
    // a kernel interface of the same name), and socket path where the version has it.
    let idx = prev
        .interfaces
        .iter()
        .rposition(|i| {
            i.name == ifname
                && i.sandbox.as_deref() == Some(netns)
                && i.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&entry.mac))
                && i.socket_path.as_deref().is_none_or(|s| s == entry.dir)
        })
        .ok_or_else(|| {
            fail(format!(
                "prevResult has no interface {ifname:?} in {netns} with pipe {pipe}'s MAC {} (and socket path {})",
                entry.mac, entry.dir
            ))
        })?;
    let ours: Vec<&IpConfig> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .collect();
    if !ours.iter().any(|ip| ip.address == entry.ip) {
        return Err(fail(format!(
            "prevResult gives interface {ifname} {}, pipe {pipe} has {}",
            ours.iter()
                .map(|ip| ip.address.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            entry.ip
        )));
    }
    let plugin = delegate::find(ipam_type, &env.path)?;
    delegate::run(
        &plugin,
        Command::Check,
        &attachment_env(env),
        &conf.for_ipam()?,
    )?;
    Ok(())
}

fn gc(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    if env.path.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CNI_PATH is missing (required for GC)",
        ));
    }
    let valid = conf.valid_attachments()?;
    let sd = StateDir::new(&conf.state_dir, &conf.network);
    let mut errors: Vec<CniError> = Vec::new();
    let mut removed = 0;
    for (pipe, rec) in sd.all()? {
        let st = match rec {
            Ok(st) => st,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if valid
            .iter()
            .any(|v| v.container_id == st.container_id && v.ifname == st.ifname)
        {
            continue;
        }
        match release(&st, &sd, &env.path) {
            Ok(()) => {
                removed += 1;
                log::info!(
                    "GC {}: removed stale attachment {}/{} (pipe {pipe})",
                    conf.network,
                    st.container_id,
                    st.ifname
                );
            }
            Err(e) => errors.push(CniError::new(
                e.code,
                format!(
                    "stale attachment {}/{} (pipe {pipe}): {}",
                    st.container_id, st.ifname, e.msg
                ),
            )),
        }
    }
    // Delegated plugins get GC too, if they know it (Debian 12's host-local does not).
    if let Some(t) = &conf.ipam_type {
        match delegate::find(t, &env.path) {
            Ok(p) if delegate::speaks_1_1(&p) => {
                if let Err(e) = delegate::run(&p, Command::Gc, &AttachmentEnv::default(), &conf.raw)
                {
                    errors.push(e);
                }
            }
            Ok(_) => log::debug!("IPAM plugin {t} does not speak CNI 1.1.0: no GC for it"),
            Err(e) => errors.push(e),
        }
    }
    log::info!(
        "GC {}: {removed} stale attachments removed, {} errors",
        conf.network,
        errors.len()
    );
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => Err(CniError::new(
            errors[0].code,
            format!("GC: {n} errors; first: {}", errors[0].msg),
        )
        .with_details(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn status(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let unavailable =
        |e: CniError| CniError::new(code::NOT_AVAILABLE, e.msg).with_details(e.details);
    Docknetd::new(&conf.run_dir).ping().map_err(unavailable)?;
    if let Some(t) = &conf.ipam_type {
        if !env.path.is_empty() {
            let p = delegate::find(t, &env.path).map_err(unavailable)?;
            if delegate::speaks_1_1(&p) {
                delegate::run(&p, Command::Status, &AttachmentEnv::default(), &conf.raw)?;
            }
        }
    }
    Ok(())
}

/// Commands before 1.1.0 did not have.
pub fn needs_1_1(command: Command) -> bool {
    matches!(command, Command::Status | Command::Gc)
}

/// The version an error of `command` on this input is written in.
pub fn error_version(raw: Option<&Value>) -> String {
    raw.and_then(crate::config::version_of)
        .and_then(Version::parse)
        .unwrap_or(Version::latest())
        .to_string()
}
