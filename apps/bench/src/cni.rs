//! The `cni` benchmark (issue 11): two pods' network namespaces on one node, each with
//! two networks as Multus would give them: `eth0` from the standard `bridge` CNI plugin
//! (with `host-local`) and `net1` from `docknet-cni` (a pipe). Pod-to-pod ping-pong over
//! each, in one run.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cleanup::{self, DirGuard, Resource};
use crate::docknet::{self, Daemon};
use crate::netns::{self, NetnsGuard};
use crate::pingpong::{self, BenchArgs, NamedList, NamedPath, OutputSpec};
use crate::proc::{run_checked, ChildGuard};
use crate::report::{HostInfo, Row, Skipped};

/// One measured path between the two pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniPath {
    /// The bench's kernel echo client/server over the pods' `eth0` (bridge plugin).
    KernelBridge,
    /// dn-echo over the pods' pipes, frames switched by docknetd.
    DocknetMaster,
    /// dn-echo over the pods' pipes joined by a fast channel.
    DocknetFc,
}

impl CniPath {
    pub const ALL: [CniPath; 3] = [
        CniPath::KernelBridge,
        CniPath::DocknetMaster,
        CniPath::DocknetFc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CniPath::KernelBridge => "kernel-cni-bridge",
            CniPath::DocknetMaster => "docknet-cni-master",
            CniPath::DocknetFc => "docknet-cni-fc",
        }
    }
}

impl fmt::Display for CniPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl NamedPath for CniPath {
    const ALL: &'static [Self] = &CniPath::ALL;
    fn path_name(self) -> &'static str {
        self.name()
    }
}

/// `--paths` of `cni`.
pub type CniPathList = NamedList<CniPath>;

/// What `cni` runs.
pub struct CniArgs {
    pub bench: BenchArgs,
    pub paths: Vec<CniPath>,
    /// Where `host-local` and `bridge` are (Debian: /usr/lib/cni).
    pub plugins: PathBuf,
}

/// The pods' subnets.
const DOCKNET_SUBNET: &str = "10.88.7.0/24";
const BRIDGE_SUBNET: &str = "10.77.30.0/24";
/// `CNI_IFNAME` of each network (the bridge is the primary, DockNet the secondary).
const BRIDGE_IFNAME: &str = "eth0";
const DOCKNET_IFNAME: &str = "net1";

/// Runs a CNI plugin as a runtime does: only `CNI_*` (and `PATH`) in the environment,
/// the configuration on stdin, the result on stdout. Inside network namespace `netns`
/// (`nsenter --net`) if given: the bridge plugin makes its bridge in the namespace it
/// runs in, so it runs in the bench's node namespace, not the host's.
fn run_plugin(
    plugin: &Path,
    netns: Option<&str>,
    vars: &[(&str, String)],
    conf: &Value,
) -> Result<Value, String> {
    let what = format!(
        "{} {}",
        plugin.display(),
        vars.iter()
            .find(|(k, _)| *k == "CNI_COMMAND")
            .map_or("", |(_, v)| v.as_str())
    );
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cleanup::unblock_signals_in_child(&mut cmd);
    log::debug!("{what}: {conf}");
    let mut child = cmd.spawn().map_err(|e| format!("{what}: spawn: {e}"))?;
    let id = cleanup::register(Resource::Process(child.id()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = conf.to_string();
    // Written from a thread: a plugin that does not read its stdin cannot block us.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{what}: no answer within 30 s"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => break Err(format!("{what}: wait: {e}")),
        }
    };
    cleanup::unregister(id);
    let _ = writer.join();
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    let status = status?;
    if !status.success() {
        return Err(format!(
            "{what}: {status}: {} {}",
            out.trim(),
            err.trim().lines().last().unwrap_or("")
        ));
    }
    if out.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("{what}: result is not JSON ({e}): {out}"))
}

/// One network attachment of a pod: ADD done, DEL on drop (a signal instead deletes the
/// namespaces and the directories holding every trace of it).
struct Attachment {
    plugin: PathBuf,
    /// Where the plugin runs (the node namespace for `bridge`).
    netns: Option<String>,
    vars: Vec<(&'static str, String)>,
    conf: Value,
    result: Value,
}

impl Attachment {
    fn add(
        plugin: &Path,
        netns: Option<&str>,
        vars: Vec<(&'static str, String)>,
        conf: Value,
    ) -> Result<Attachment, String> {
        let mut add = vars.clone();
        add.push(("CNI_COMMAND", "ADD".into()));
        let result = run_plugin(plugin, netns, &add, &conf)?;
        log::debug!("ADD result: {result}");
        Ok(Attachment {
            plugin: plugin.to_path_buf(),
            netns: netns.map(str::to_string),
            vars,
            conf,
            result,
        })
    }

    /// The address the result gives the pod (without prefix): the last address, the one
    /// of this plugin's interface.
    fn address(&self) -> Result<String, String> {
        self.result["ips"]
            .as_array()
            .and_then(|ips| ips.last())
            .and_then(|ip| ip["address"].as_str())
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .ok_or_else(|| format!("no address in the ADD result {}", self.result))
    }

    /// The pipe directory (`interfaces[].socketPath`, CNI 1.1.0).
    fn socket_path(&self) -> Result<PathBuf, String> {
        self.result["interfaces"]
            .as_array()
            .and_then(|ifs| ifs.iter().find_map(|i| i["socketPath"].as_str()))
            .map(PathBuf::from)
            .ok_or_else(|| format!("no socketPath in the ADD result {}", self.result))
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut del = self.vars.clone();
        del.push(("CNI_COMMAND", "DEL".into()));
        if let Err(e) = run_plugin(&self.plugin, self.netns.as_deref(), &del, &self.conf) {
            log::warn!("DEL: {e}");
        }
    }
}

/// `CNI_*` of pod `ns`'s attachment `ifname` (no command).
fn pod_vars(ns: &str, ifname: &str, cni_path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_CONTAINERID", format!("{ns}-sandbox")),
        ("CNI_NETNS", format!("/run/netns/{ns}")),
        ("CNI_IFNAME", ifname.into()),
        ("CNI_PATH", cni_path.into()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={ns};K8S_POD_UID={ns}-uid"
            ),
        ),
    ]
}

/// Runs `pingpong`'s measurement with `server` (a command, run in the server pod's
/// namespace) and clients built by `client(size, count, warmup)` in the client pod's.
fn measure_between(
    a: &BenchArgs,
    path: CniPath,
    server: Command,
    client: impl FnMut(usize, usize, usize) -> Command,
    daemon: Option<&mut Daemon>,
) -> Result<Vec<Row>, String> {
    let mut server = ChildGuard::spawn(&format!("{path} server"), server)?;
    server.wait_for_line("listening", Duration::from_secs(15))?;
    let mut daemon = daemon;
    Ok(pingpong::measure(a, path.name(), client, |_prev_failed| {
        if let Some(s) = server.exited() {
            return Err(format!(
                "server exited ({s}); stderr: {}",
                server.stderr_tail.digest()
            ));
        }
        if let Some(d) = daemon.as_deref_mut() {
            if let Some(s) = d.exited() {
                return Err(format!(
                    "docknetd exited ({s}); stderr: {}",
                    d.stderr_tail()
                ));
            }
        }
        Ok(())
    }))
}

/// `PROGRAM` run in network namespace `ns` (nsenter: the network namespace only, so
/// dn-echo still sees docknetd's tmpfs in our mount namespace).
fn in_netns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

pub fn run(args: &CniArgs) -> Result<(), String> {
    let a = &args.bench;
    let names: Vec<&str> = args.paths.iter().map(|p| p.name()).collect();
    pingpong::announce(a, "cni", &names)?;
    if let Some(reason) = netns::unavailable_reason() {
        return Err(reason);
    }
    let host_local = args.plugins.join("host-local");
    let bridge = args.plugins.join("bridge");
    for p in [&host_local, &bridge] {
        if !p.is_file() {
            return Err(format!(
                "{} not found (apt-get install containernetworking-plugins, or --cni-plugins DIR)",
                p.display()
            ));
        }
    }
    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
    let docknet_cni = bins.sibling("docknet-cni")?;
    let self_exe = pingpong::self_exe()?;
    let host = HostInfo::collect();
    let pid = std::process::id();
    let cni_path = format!(
        "{}:{}",
        docknet_cni.parent().unwrap_or(Path::new(".")).display(),
        args.plugins.display()
    );

    // The node and its pods.
    let state = DirGuard::create(
        std::env::temp_dir().join(format!("dnbench-{pid}-cni-state")),
        a.keep_run_dir,
    )
    .map_err(|e| format!("creating the CNI state dir: {e}"))?;
    let node = NetnsGuard::create(&format!("dnb{pid}cnode"))?;
    let pod_a = NetnsGuard::create(&format!("dnb{pid}cpa"))?;
    let pod_b = NetnsGuard::create(&format!("dnb{pid}cpb"))?;
    for ns in [&node, &pod_a, &pod_b] {
        run_checked(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
    }
    let mut daemon = Daemon::start(
        &bins,
        std::env::temp_dir().join(format!("dnbench-{pid}-cni")),
        a.keep_run_dir,
        Duration::from_secs(15),
    )?;

    // Each pod: eth0 from bridge + host-local (run in the node namespace), net1 from
    // docknet-cni + host-local. Declared after the daemon and namespaces: DEL runs first.
    let bridge_name = format!("dnb{pid}cbr");
    let bridge_conf = json!({
        "cniVersion": "1.0.0", "name": "dnbench-bridge", "type": "bridge",
        "bridge": bridge_name, "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": BRIDGE_SUBNET,
                 "dataDir": state.path.join("ipam-bridge")}
    });
    let docknet_conf = json!({
        "cniVersion": "1.1.0", "name": "dnbench-docknet", "type": "docknet-cni",
        "runDir": daemon.run.path, "stateDir": state.path.join("docknet-cni"),
        "ipam": {"type": "host-local", "subnet": DOCKNET_SUBNET,
                 "dataDir": state.path.join("ipam-docknet")}
    });
    let mut attachments: Vec<(Attachment, Attachment)> = Vec::new();
    for pod in [&pod_a, &pod_b] {
        let eth0 = Attachment::add(
            &bridge,
            Some(&node.name),
            pod_vars(&pod.name, BRIDGE_IFNAME, &cni_path),
            bridge_conf.clone(),
        )?;
        let net1 = Attachment::add(
            &docknet_cni,
            None,
            pod_vars(&pod.name, DOCKNET_IFNAME, &cni_path),
            docknet_conf.clone(),
        )?;
        attachments.push((eth0, net1));
    }
    let (kernel_a, kernel_b) = (attachments[0].0.address()?, attachments[1].0.address()?);
    let (docknet_a, docknet_b) = (attachments[0].1.address()?, attachments[1].1.address()?);
    let (pipe_a, pipe_b) = (
        attachments[0].1.socket_path()?,
        attachments[1].1.socket_path()?,
    );
    let pipe_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("pipe path {} has no name", p.display()))
    };
    let (pipe_a_name, pipe_b_name) = (pipe_name(&pipe_a)?, pipe_name(&pipe_b)?);
    let kernel_mtu = netns::link_mtu(&pod_a.name, BRIDGE_IFNAME)?;
    let pipe_mtu = attachments[0].1.result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.last())
        .and_then(|i| i["mtu"].as_u64())
        .unwrap_or(0);
    let topology = format!(
        "pod A {} (eth0 {kernel_a}, net1 {docknet_a} on pipe {pipe_a_name}), pod B {} \
         (eth0 {kernel_b}, net1 {docknet_b} on pipe {pipe_b_name}); bridge {bridge_name} \
         in node namespace {}; eth0 MTU {kernel_mtu}, pipe MTU {pipe_mtu}",
        pod_a.name, pod_b.name, node.name
    );
    eprintln!("  pods: {topology}");

    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (i, &path) in args.paths.iter().enumerate() {
        eprintln!("[{}/{}] {path}", i + 1, args.paths.len());
        let r = match path {
            CniPath::KernelBridge => {
                let mut server = in_netns(&pod_a.name, &self_exe);
                server.args(["kernel-echo-server", "--bind", &format!("{kernel_a}:5201")]);
                let to = format!("{kernel_a}:5201");
                measure_between(
                    a,
                    path,
                    server,
                    |size, count, warmup| {
                        let mut c = in_netns(&pod_b.name, &self_exe);
                        pingpong::kernel_client_args(&mut c, &to, size, count, warmup);
                        c
                    },
                    None,
                )
            }
            CniPath::DocknetMaster | CniPath::DocknetFc => {
                let fc = path == CniPath::DocknetFc;
                let made_fc = if fc {
                    daemon.ctl(&["fc", "create", &pipe_a_name, &pipe_b_name])
                } else {
                    Ok(String::new())
                };
                let r = made_fc.and_then(|_| {
                    let mut server = in_netns(&pod_a.name, &bins.dn_echo);
                    server
                        .env("DOCKNET_PIPE", &pipe_a)
                        .args(["server", "--port", "7"]);
                    let to = format!("{docknet_a}:7");
                    let dn_echo = bins.dn_echo.clone();
                    let pod_b_name = pod_b.name.clone();
                    let pipe_b = pipe_b.clone();
                    measure_between(
                        a,
                        path,
                        server,
                        move |size, count, warmup| {
                            let mut c = in_netns(&pod_b_name, &dn_echo);
                            c.env("DOCKNET_PIPE", &pipe_b)
                                .args(["client", "--to", &to])
                                .args(["--size", &size.to_string()])
                                .args(["--count", &count.to_string()])
                                .args(["--warmup", &warmup.to_string()])
                                .arg("--json");
                            c
                        },
                        Some(&mut daemon),
                    )
                });
                if fc {
                    if let Err(e) = daemon.ctl(&["fc", "rm", &pipe_a_name, &pipe_b_name]) {
                        log::warn!("fc rm: {e}");
                    }
                }
                r
            }
        };
        match r {
            Ok(mut v) => rows.append(&mut v),
            Err(reason) => {
                eprintln!("  skipping {path}: {reason}");
                skipped.push(Skipped {
                    path: path.name().into(),
                    reason,
                });
            }
        }
    }
    // DEL every attachment (bridge and DockNet), then the daemon, the namespaces and the
    // state directory go.
    drop(attachments);
    drop(daemon);
    drop((pod_a, pod_b, node));
    drop(state);

    let order: Vec<String> = names.iter().map(|p| p.to_string()).collect();
    let paths_text = format!(
        "Two pods' network namespaces on one node, each with two networks as Multus gives \
them: `eth0` from the standard `bridge` CNI plugin (`isGateway`, no masquerade; the bridge \
in a node namespace) with `host-local` {BRIDGE_SUBNET}, and `net1` from `docknet-cni` \
(a pipe from `docknetd --nic none`) with `host-local` {DOCKNET_SUBNET}; both plugins run \
as a runtime runs them (environment, configuration on stdin). Paths: `kernel-cni-bridge` \
= the bench's kernel echo client (pod B) and server (pod A) over `eth0`; \
`docknet-cni-master` = dn-echo client (pod B's pipe) and server (pod A's pipe), frames \
switched by `docknetd`; `docknet-cni-fc` = the same over a fast channel between the two \
pods' pipes (`docknetctl fc create`). Every process runs in its pod's network namespace \
(`nsenter --net`). This run: {topology}."
    );
    let spec = OutputSpec {
        stem: "cni",
        title: "Pod to pod: docknet-cni vs the bridge CNI plugin",
        plot_title: "Pod to pod: bridge CNI vs docknet-cni",
        what: "TCP ping-pong between two pods, one connection, message echoed back",
        paths_text: &paths_text,
        baselines: &["kernel-cni-bridge"],
        extra: None,
        json_extra: json!({"pods": topology}),
    };
    pingpong::write_outputs(a, &spec, &host, &rows, &skipped, &order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_by_name() {
        let l: CniPathList = "docknet-cni-fc,kernel-cni-bridge".parse().unwrap();
        assert_eq!(l.0, vec![CniPath::DocknetFc, CniPath::KernelBridge]);
        assert!("kernel-bridge".parse::<CniPathList>().is_err());
    }

    #[test]
    fn pod_vars_name_the_pod() {
        let v = pod_vars("dnb1cpa", "net1", "/x:/usr/lib/cni");
        let get = |k: &str| v.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CNI_NETNS"), Some("/run/netns/dnb1cpa"));
        assert_eq!(get("CNI_IFNAME"), Some("net1"));
        assert!(get("CNI_ARGS").unwrap().contains("K8S_POD_UID=dnb1cpa-uid"));
        assert!(get("CNI_COMMAND").is_none());
    }
}
