//! Two "pods" on one node (issue 11, *Done when*, line 2, first half): each pod is a runc
//! container from a `docknet-image` image of dn-echo, in a network namespace of its own
//! that the test makes (the pod sandbox) and gives to `docknet-cni` as `CNI_NETNS`. The
//! plugin is run as a container runtime runs it (`CNI_*` environment, configuration on
//! stdin, Debian's `host-local` on `CNI_PATH`, `K8S_POD_UID` in `CNI_ARGS`); each pod's
//! pipe reaches its container the way the kubelet's `hostPath` volume with
//! `subPathExpr: pods/$(POD_UID)/net1` would bring it: a bind mount of
//! `RUN_DIR/pods/POD_UID/net1` (the plugin's link to the pipe) at `/run/docknet/pipe` in
//! the bundle's `config.json`. dn-echo server runs in pod A, dn-echo client in pod B sends
//! one 16 MiB message to A's address and checks the echo byte for byte, both as uid 1000
//! (the pipes' owner). Then DEL for both: pipes, links and addresses are gone.
//!
//! Needs root, runc, /usr/lib/cni/host-local (containernetworking-plugins) and musl for
//! the static dn-echo (as tests/tests/container.rs); prints why and passes otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docknet_tests::image::{build_image, build_minimal};
use docknet_tests::nic::{self, run_ok, Netns};
use docknet_tests::{bin, run_with_timeout, unique_tmp, Daemon, TempDir};
use serde_json::{json, Value};

/// Where Debian's containernetworking-plugins puts the plugins.
const CNI_PLUGINS: &str = "/usr/lib/cni";
/// `CNI_IFNAME` of the DockNet attachment (a secondary network, as with Multus).
const IFNAME: &str = "net1";
const TAG: &str = "dn-echo:pods";
const MIB16: usize = 16 * 1024 * 1024;
/// The pods' user: the pipes' owner (`"owner"` in the network configuration).
const POD_USER: &str = "1000:1000";

fn can_run(test: &str) -> bool {
    if !docknet_tests::need_root(test, "docknetd's tmpfs, network namespaces, runc") {
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

/// One `docknet-cni` run as a runtime runs it: only the `CNI_*` variables (and `PATH`),
/// the configuration on stdin; (exit status, stdout parsed or `Null`, stderr).
fn run_cni(vars: &[(&str, String)], conf: &Value) -> (i32, Value, String) {
    let plugin = bin("docknet-cni");
    let mut child = Command::new(&plugin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", plugin.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(conf.to_string().as_bytes())
        .expect("write the configuration to docknet-cni");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for docknet-cni");
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("docknet-cni wrote non-JSON ({e}): {text}"))
    };
    (
        out.status.code().unwrap_or(-1),
        parsed,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pod sandbox: its network namespace and UID.
struct Pod {
    netns: Netns,
    uid: String,
    container_id: String,
}

impl Pod {
    fn new(tag: &str, suffix: &str) -> Pod {
        Pod {
            netns: Netns::new(tag),
            uid: format!("pod-uid-{tag}-{suffix}"),
            container_id: format!("sandbox-{tag}-{suffix}"),
        }
    }

    fn vars(&self, command: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.into()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.path().display().to_string()),
            ("CNI_IFNAME", IFNAME.into()),
            (
                "CNI_PATH",
                format!(
                    "{}:{CNI_PLUGINS}",
                    bin("docknet-cni").parent().unwrap().display()
                ),
            ),
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_UID={}",
                    self.container_id, self.uid
                ),
            ),
        ]
    }
}

/// A DockNet attachment made by ADD; DEL on drop if the test did not (any exit path).
struct Attachment<'a> {
    pod: &'a Pod,
    conf: Value,
    deleted: bool,
}

impl<'a> Attachment<'a> {
    /// ADD; returns the attachment and the result.
    fn add(pod: &'a Pod, conf: &Value) -> (Attachment<'a>, Value) {
        let (status, out, stderr) = run_cni(&pod.vars("ADD"), conf);
        assert_eq!(status, 0, "ADD for {}: {out}\nstderr: {stderr}", pod.uid);
        (
            Attachment {
                pod,
                conf: conf.clone(),
                deleted: false,
            },
            out,
        )
    }

    fn del(&mut self) {
        let (status, out, stderr) = run_cni(&self.pod.vars("DEL"), &self.conf);
        assert_eq!(
            status, 0,
            "DEL for {}: {out}\nstderr: {stderr}",
            self.pod.uid
        );
        self.deleted = true;
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
struct Container {
    root: PathBuf,
    name: String,
}

impl Container {
    fn runc(&self) -> Command {
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

/// The pipe directory of the ADD result's interface `IFNAME` (`socketPath`, CNI 1.1.0).
fn socket_path(result: &Value) -> PathBuf {
    let ifs = result["interfaces"].as_array().expect("interfaces");
    let i = ifs
        .iter()
        .find(|i| i["name"] == IFNAME)
        .unwrap_or_else(|| panic!("no interface {IFNAME} in {result}"));
    PathBuf::from(i["socketPath"].as_str().expect("socketPath"))
}

/// The address (without prefix) the ADD result gives the pod.
fn address(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap().to_string()
}

/// A runc bundle of the dn-echo image for `pod`: the pod's link
/// `RUN_DIR/pods/POD_UID/net1` bind-mounted at /run/docknet/pipe, as the hostPath volume
/// with subPathExpr would be, the pod's network namespace joined (the sandbox's), uid
/// 1000, `args` after the entrypoint.
fn pod_bundle(
    layout: &Path,
    out: &Path,
    pod: &Pod,
    pod_link: &Path,
    pipe_dir: &Path,
    args: &[&str],
) {
    let mut c = Command::new(bin("docknet-image"));
    c.arg("runc-bundle")
        .arg("--image")
        .arg(layout)
        .args(["--tag", TAG, "--user", POD_USER, "--pipe"])
        .arg(pod_link)
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
        std::fs::canonicalize(pipe_dir).unwrap(),
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
    net["path"] = json!(pod.netns.path());
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).expect("write config.json");
}

#[test]
fn two_pods_on_one_node_echo_16_mib_through_their_pipes() {
    let test = "two_pods_on_one_node_echo_16_mib_through_their_pipes";
    let _serial = nic::serial();
    if !can_run(test) {
        return;
    }
    let tmp = TempDir::new();
    let suffix = unique_tmp()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("dntest-", "");

    // The image: dn-echo as a minimal static binary, FROM scratch.
    let binary = build_minimal("dn-echo");
    let layout = tmp.path().join("oci");
    build_image(&binary, TAG, &layout);

    // The node: docknetd, and two pod sandboxes.
    let d = Daemon::start();
    let server_pod = Pod::new("poda", &suffix);
    let client_pod = Pod::new("podb", &suffix);
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "docknet",
        "type": "docknet-cni",
        "runDir": d.run_dir,
        "stateDir": tmp.path().join("state"),
        "owner": POD_USER,
        "ipam": {"type": "host-local", "subnet": "10.88.9.0/24",
                 "dataDir": tmp.path().join("ipam")}
    });
    let (mut server_att, server_add) = Attachment::add(&server_pod, &conf);
    let (mut client_att, client_add) = Attachment::add(&client_pod, &conf);
    let (server_pipe, client_pipe) = (socket_path(&server_add), socket_path(&client_add));
    let server_ip = address(&server_add);
    assert_ne!(server_pipe, client_pipe);
    assert_ne!(server_ip, address(&client_add));
    for (pod, result) in [(&server_pod, &server_add), (&client_pod, &client_add)] {
        assert_eq!(
            result["interfaces"][0]["sandbox"],
            pod.netns.path().display().to_string(),
            "{result}"
        );
    }
    eprintln!(
        "[pods] ADD: server pod {server_ip} on {}, client pod {} on {}",
        server_pipe.display(),
        address(&client_add),
        client_pipe.display()
    );
    let link = |pod: &Pod| d.run_dir.join("pods").join(&pod.uid).join(IFNAME);

    // The containers. Declared after the attachments: dropped (deleted) before them.
    let runc_root = tmp.path().join("runc");
    let server_bundle = tmp.path().join("bundle-server");
    pod_bundle(
        &layout,
        &server_bundle,
        &server_pod,
        &link(&server_pod),
        &server_pipe,
        &["server", "--port", "7"],
    );
    let client_bundle = tmp.path().join("bundle-client");
    let to = format!("{server_ip}:7");
    pod_bundle(
        &layout,
        &client_bundle,
        &client_pod,
        &link(&client_pod),
        &client_pipe,
        &[
            "client",
            "--to",
            &to,
            "--size",
            &MIB16.to_string(),
            "--count",
            "1",
            "--json",
        ],
    );
    let server = Container {
        root: runc_root.clone(),
        name: format!("dnt-pod-server-{suffix}"),
    };
    let server_out = tmp.path().join("server.out");
    let server_err = tmp.path().join("server.err");
    let status = server
        .runc()
        .args(["run", "-d", "--bundle"])
        .arg(&server_bundle)
        .arg(&server.name)
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
            "the server pod's dn-echo is not listening within 20 s; stdout {out:?}, stderr {:?}\ndocknetd log:\n{}",
            std::fs::read_to_string(&server_err).unwrap_or_default(),
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The client pod: one 16 MiB message, echoed and checked byte for byte by dn-echo.
    let client = Container {
        root: runc_root.clone(),
        name: format!("dnt-pod-client-{suffix}"),
    };
    let before = d.stats(None);
    let started = Instant::now();
    let mut run = client.runc();
    run.args(["run", "--bundle"])
        .arg(&client_bundle)
        .arg(&client.name);
    let out = run_with_timeout(&mut run, Duration::from_secs(180)).unwrap_or_else(|(e, o)| {
        panic!(
            "{e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dn-echo client in the client pod failed ({}):\nstdout: {stdout}\nstderr: {}\ndocknetd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log_tail()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from dn-echo client: {stdout}"));
    let result: Value = serde_json::from_str(line).expect("dn-echo client JSON");
    assert_eq!(result["size"], MIB16, "{result}");
    assert_eq!(result["count"], 1, "{result}");
    eprintln!(
        "[pods] 16 MiB echoed byte-exact pod B -> pod A in {:.2?}: {result}",
        started.elapsed()
    );
    // Both pipes carried the 16 MiB each way through the master.
    let after = d.stats(None);
    for pipe in [&server_pipe, &client_pipe] {
        let name = pipe.file_name().unwrap().to_str().unwrap();
        let delta =
            |c| docknet_tests::counter(&after, name, c) - docknet_tests::counter(&before, name, c);
        assert!(
            delta("tx_bytes") >= MIB16 as u64 && delta("rx_bytes") >= MIB16 as u64,
            "pipe {name}: tx {} B, rx {} B, expected >= 16 MiB each way",
            delta("tx_bytes"),
            delta("rx_bytes")
        );
    }
    drop(client);
    drop(server);

    // DEL both: the pipes, the pods' links and the addresses are gone.
    server_att.del();
    client_att.del();
    let left: Vec<Value> = d.list("pipe");
    assert!(left.is_empty(), "pipes left after DEL: {left:?}");
    for pod in [&server_pod, &client_pod] {
        assert!(
            std::fs::symlink_metadata(link(pod)).is_err(),
            "{} still exists",
            link(pod).display()
        );
    }
    let reserved: Vec<_> = std::fs::read_dir(tmp.path().join("ipam").join("docknet"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        reserved.is_empty(),
        "addresses still reserved: {reserved:?}"
    );
}
