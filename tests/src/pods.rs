//! "Pods" for the CNI tests (issue 11): a pod sandbox is a network namespace the test
//! makes and gives `docknet-cni` as `CNI_NETNS`; the plugin is run as a container runtime
//! runs it (`CNI_*` environment, configuration on stdin, Debian's `host-local` on
//! `CNI_PATH`, `K8S_POD_UID` in `CNI_ARGS`); a pod's container is a runc container from a
//! `docknet-image` image of dn-echo that joins the sandbox's namespace and gets the pipe
//! the way the kubelet's `hostPath` volume with `subPathExpr: pods/$(POD_UID)/net1` would
//! bring it: a bind mount of `RUN_DIR/pods/POD_UID/net1` (the plugin's link to the pipe)
//! at `/run/docknet/pipe` in the bundle's `config.json`.
//!
//! Every guard cleans up on drop: an [`Attachment`] not DELeted is DELeted, a
//! [`Container`] is force-deleted. Used by `tests/tests/cni_pods.rs` (one node),
//! `tests/tests/cni_pods_two_nodes.rs` and `tests/tests/nic_routes.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::image::{build_image, build_minimal};
use crate::nic::{run_ok, Netns};
use crate::{bin, run_with_input, run_with_timeout, unique_tmp};

/// Where Debian's containernetworking-plugins puts the plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
/// `CNI_IFNAME` of the DockNet attachment (a secondary network, as with Multus).
pub const POD_IFNAME: &str = "net1";
/// The tag of the dn-echo image the pods run.
pub const ECHO_IMAGE_TAG: &str = "dn-echo:pods";
/// The pods' user: the pipes' owner (`"owner"` in the network configuration).
pub const POD_USER: &str = "1000:1000";

/// True if the pod tests can run: root, `/usr/lib/cni/host-local` and runc; prints
/// `skipping TEST: …` with the reason otherwise.
pub fn can_run_pods(test: &str) -> bool {
    if !crate::need_root(test, "docknetd's tmpfs, network namespaces, runc") {
        return false;
    }
    let host_local = Path::new(CNI_PLUGINS).join("host-local");
    if !host_local.exists() {
        eprintln!(
            "skipping {test}: {} missing (apt-get install containernetworking-plugins)",
            host_local.display()
        );
        return false;
    }
    let runc = Command::new("runc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !runc.is_ok_and(|s| s.success()) {
        eprintln!("skipping {test}: runc missing (apt-get install runc)");
        return false;
    }
    true
}

/// A word unique to this test process and call, for the names of pods and containers.
pub fn unique_suffix() -> String {
    unique_tmp()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("dntest-", "")
}

/// The dn-echo image (a minimal static binary, `FROM scratch`) as an OCI layout at
/// `layout`, tagged [`ECHO_IMAGE_TAG`].
pub fn build_echo_image(layout: &Path) {
    let binary = build_minimal("dn-echo");
    build_image(&binary, ECHO_IMAGE_TAG, layout);
}

/// `CNI_PATH` as a runtime would set it: our plugin's directory, then Debian's plugins.
pub fn cni_path() -> String {
    format!(
        "{}:{CNI_PLUGINS}",
        bin("docknet-cni").parent().unwrap().display()
    )
}

/// Run the CNI plugin `plugin` as a runtime runs it: only the given `CNI_*` variables (and
/// `PATH`), `stdin` on its standard input; a plugin that hangs is killed after 30 s and
/// fails the test. (exit status, stdout parsed or `Null` when empty, stderr).
pub fn run_plugin(plugin: &Path, vars: &[(&str, String)], stdin: &str) -> (i32, Value, String) {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run_with_input(&mut cmd, Some(stdin.as_bytes()), Duration::from_secs(30))
        .unwrap_or_else(|(e, out)| panic!("{e}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{} wrote non-JSON on stdout ({e}): {text}\nstderr: {}",
                plugin.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    (
        out.status.code().unwrap_or(-1),
        parsed,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `docknet-cni` run as a runtime runs it ([`run_plugin`]).
pub fn run_cni(vars: &[(&str, String)], conf: &Value) -> (i32, Value, String) {
    run_plugin(&bin("docknet-cni"), vars, &conf.to_string())
}

/// A pod sandbox: its network namespace (deleted on drop), UID and sandbox id.
pub struct PodSandbox {
    pub netns: Netns,
    pub uid: String,
    pub container_id: String,
}

impl PodSandbox {
    /// A sandbox named after `tag` and [`unique_suffix`]'s `suffix`.
    pub fn new(tag: &str, suffix: &str) -> PodSandbox {
        PodSandbox {
            netns: Netns::new(tag),
            uid: format!("pod-uid-{tag}-{suffix}"),
            container_id: format!("sandbox-{tag}-{suffix}"),
        }
    }

    /// The `CNI_*` variables a runtime sets for `command` on this pod's attachment.
    pub fn vars(&self, command: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.into()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.path().display().to_string()),
            ("CNI_IFNAME", POD_IFNAME.into()),
            ("CNI_PATH", cni_path()),
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_UID={}",
                    self.container_id, self.uid
                ),
            ),
        ]
    }

    /// The plugin's link for this pod under docknetd's `run_dir`:
    /// `RUN_DIR/pods/POD_UID/net1`, what the pod's `subPathExpr` names.
    pub fn link(&self, run_dir: &Path) -> PathBuf {
        run_dir.join("pods").join(&self.uid).join(POD_IFNAME)
    }
}

/// The network configuration of a DockNet network for pods: docknetd at `run_dir`, the
/// plugin's records under `state_dir`, `host-local` handing out `subnet` (reservations
/// under `ipam_dir`), pipes owned by [`POD_USER`]. `ipam_routes` go into the IPAM
/// section (for example the cluster range, through the master).
pub fn pod_network_conf(
    run_dir: &Path,
    state_dir: &Path,
    ipam_dir: &Path,
    subnet: &str,
    ipam_routes: &[&str],
) -> Value {
    let mut ipam = json!({"type": "host-local", "subnet": subnet, "dataDir": ipam_dir});
    if !ipam_routes.is_empty() {
        ipam["routes"] = ipam_routes.iter().map(|dst| json!({"dst": dst})).collect();
    }
    json!({
        "cniVersion": "1.1.0",
        "name": "docknet",
        "type": "docknet-cni",
        "runDir": run_dir,
        "stateDir": state_dir,
        "owner": POD_USER,
        "ipam": ipam
    })
}

/// A DockNet attachment made by ADD; DEL on drop if the test did not (any exit path).
pub struct Attachment<'a> {
    pub pod: &'a PodSandbox,
    pub conf: Value,
    /// The ADD result.
    pub result: Value,
    deleted: bool,
}

impl<'a> Attachment<'a> {
    /// ADD (which must succeed); the result is in [`Attachment::result`].
    pub fn add(pod: &'a PodSandbox, conf: &Value) -> Attachment<'a> {
        let (status, out, stderr) = run_cni(&pod.vars("ADD"), conf);
        assert_eq!(status, 0, "ADD for {}: {out}\nstderr: {stderr}", pod.uid);
        Attachment {
            pod,
            conf: conf.clone(),
            result: out,
            deleted: false,
        }
    }

    /// DEL (which must succeed).
    pub fn del(&mut self) {
        let (status, out, stderr) = run_cni(&self.pod.vars("DEL"), &self.conf);
        assert_eq!(
            status, 0,
            "DEL for {}: {out}\nstderr: {stderr}",
            self.pod.uid
        );
        self.deleted = true;
    }

    /// The pipe directory of the result's interface [`POD_IFNAME`] (`socketPath`).
    pub fn pipe_dir(&self) -> PathBuf {
        let ifs = self.result["interfaces"].as_array().expect("interfaces");
        let i = ifs
            .iter()
            .find(|i| i["name"] == POD_IFNAME)
            .unwrap_or_else(|| panic!("no interface {POD_IFNAME} in {}", self.result));
        PathBuf::from(i["socketPath"].as_str().expect("socketPath"))
    }

    /// The pipe's name (the last component of its directory).
    pub fn pipe_name(&self) -> String {
        self.pipe_dir()
            .file_name()
            .expect("pipe name")
            .to_string_lossy()
            .into_owned()
    }

    /// The address with its prefix (`A.B.C.D/N`) the result gives the pod.
    pub fn cidr(&self) -> String {
        self.result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {}", self.result))
            .to_string()
    }

    /// The address without its prefix.
    pub fn address(&self) -> String {
        self.cidr().split('/').next().unwrap().to_string()
    }

    /// The pod's link `RUN_DIR/pods/POD_UID/net1` (`runDir` of the configuration).
    pub fn link(&self) -> PathBuf {
        self.pod
            .link(Path::new(self.conf["runDir"].as_str().expect("runDir")))
    }

    /// The addresses `host-local` still holds for this network (files named by address
    /// in `IPAM_DIR/NETWORK`).
    pub fn reserved_addresses(&self) -> Vec<String> {
        let dir = Path::new(self.conf["ipam"]["dataDir"].as_str().expect("dataDir"))
            .join(self.conf["name"].as_str().expect("name"));
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = run_cni(&self.pod.vars("DEL"), &self.conf);
        }
    }
}

/// A runc container in a private state root, force-deleted on drop.
pub struct Container {
    pub root: PathBuf,
    pub name: String,
}

impl Container {
    /// `runc --root ROOT`.
    pub fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut c = self.runc();
        c.args(["delete", "-f", &self.name]);
        let _ = run_with_timeout(&mut c, Duration::from_secs(30));
    }
}

/// A runc bundle at `out` of the dn-echo image at `layout` for `att`'s pod: the pod's
/// link bind-mounted at /run/docknet/pipe, as the hostPath volume with subPathExpr would
/// be (checked: the mount's source is the attachment's pipe directory), the pod's
/// network namespace joined (the sandbox's), uid 1000, `args` after the entrypoint.
pub fn pod_bundle(layout: &Path, out: &Path, att: &Attachment, args: &[&str]) {
    let mut c = Command::new(bin("docknet-image"));
    c.arg("runc-bundle")
        .arg("--image")
        .arg(layout)
        .args(["--tag", ECHO_IMAGE_TAG, "--user", POD_USER, "--pipe"])
        .arg(att.link())
        .arg("--out")
        .arg(out)
        .arg("--")
        .args(args);
    run_ok(&mut c, Duration::from_secs(60));
    let path = out.join("config.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read config.json")).expect("JSON");
    // The mount is the pipe directory the link names, nothing else of the run directory.
    let mount = cfg["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == "/run/docknet/pipe")
        .unwrap_or_else(|| panic!("no /run/docknet/pipe mount: {}", cfg["mounts"]))
        .clone();
    assert_eq!(
        std::fs::canonicalize(mount["source"].as_str().expect("source")).unwrap(),
        std::fs::canonicalize(att.pipe_dir()).unwrap(),
        "{mount}"
    );
    // The container joins the pod's network namespace, the one the plugin was given.
    let namespaces = cfg["linux"]["namespaces"]
        .as_array_mut()
        .expect("linux.namespaces");
    let net = namespaces
        .iter_mut()
        .find(|n| n["type"] == "network")
        .expect("a network namespace entry");
    net["path"] = json!(att.pod.netns.path());
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).expect("write config.json");
}

/// dn-echo server (port 7) in `server`'s pod and dn-echo client in `client`'s pod, both
/// runc containers of the image at `layout` (bundles, runc state and logs under `work`,
/// container names ending in `suffix`): the client sends one `size`-byte message to the
/// server pod's address and checks the echo byte for byte. Panics, with `diagnostics()`
/// (daemon logs, counters), if the server does not listen within 20 s or the client
/// fails or outlasts 180 s. Returns the client's JSON line. Both containers are
/// force-deleted before it returns, whatever happens (so the attachments can go next).
pub fn echo_between_pods(
    layout: &Path,
    work: &Path,
    suffix: &str,
    server: &Attachment,
    client: &Attachment,
    size: usize,
    diagnostics: &dyn Fn() -> String,
) -> Value {
    let runc_root = work.join("runc");
    let server_bundle = work.join("bundle-server");
    pod_bundle(layout, &server_bundle, server, &["server", "--port", "7"]);
    let client_bundle = work.join("bundle-client");
    let to = format!("{}:7", server.address());
    let size_s = size.to_string();
    pod_bundle(
        layout,
        &client_bundle,
        client,
        &[
            "client", "--to", &to, "--size", &size_s, "--count", "1", "--json",
        ],
    );
    let server_container = Container {
        root: runc_root.clone(),
        name: format!("dnt-pod-server-{suffix}"),
    };
    let server_out = work.join("server.out");
    let server_err = work.join("server.err");
    let status = server_container
        .runc()
        .args(["run", "-d", "--bundle"])
        .arg(&server_bundle)
        .arg(&server_container.name)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&server_out).expect("server log"))
        .stderr(std::fs::File::create(&server_err).expect("server log"))
        .status()
        .expect("runc run -d");
    assert!(
        status.success(),
        "runc run -d (server pod): {status}\n{}",
        std::fs::read_to_string(&server_err).unwrap_or_default()
    );
    let start = Instant::now();
    loop {
        let out = std::fs::read_to_string(&server_out).unwrap_or_default();
        if out.contains("listening") {
            eprintln!("[pods] server container: {}", out.trim());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server pod's dn-echo is not listening within 20 s; stdout {out:?}, stderr {:?}\n{}",
            std::fs::read_to_string(&server_err).unwrap_or_default(),
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let client_container = Container {
        root: runc_root,
        name: format!("dnt-pod-client-{suffix}"),
    };
    let started = Instant::now();
    let mut run = client_container.runc();
    run.args(["run", "--bundle"])
        .arg(&client_bundle)
        .arg(&client_container.name);
    let out = run_with_timeout(&mut run, Duration::from_secs(180)).unwrap_or_else(|(e, o)| {
        panic!(
            "{e}\nstdout: {}\nstderr: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            diagnostics()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dn-echo client in the client pod failed ({}):\nstdout: {stdout}\nstderr: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        diagnostics()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from dn-echo client: {stdout}"));
    let result: Value = serde_json::from_str(line).expect("dn-echo client JSON");
    assert_eq!(result["size"], size, "{result}");
    assert_eq!(result["count"], 1, "{result}");
    eprintln!(
        "[pods] {size} B echoed byte-exact client pod -> server pod in {:.2?}: {result}",
        started.elapsed()
    );
    drop(client_container);
    drop(server_container);
    result
}
