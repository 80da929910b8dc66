//! `docknet-cni` driven exactly as a container runtime drives it: `CNI_*` environment
//! variables, the network configuration on stdin, the result or error object on stdout,
//! with Debian's real `host-local` (and, chained, `bridge`) from containernetworking-plugins
//! on `CNI_PATH`. For every version the plugin claims: VERSION, ADD, CHECK with
//! `prevResult`, DEL twice, GC, STATUS (docknetd up and down), and bad input answered with
//! CNI's codes; a failure half-way gives back the address; chained after `bridge` the
//! previous result is passed through with the pipe added.
//!
//! Needs root (docknetd's tmpfs, network namespaces, the bridge) and
//! /usr/lib/cni/host-local; without them each test prints why and passes. The bad-input
//! test needs neither.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use docknet_tests::nic::Netns;
use docknet_tests::pods::{self, cni_path, CNI_PLUGINS};
use docknet_tests::{bin, is_root, Daemon, TempDir};
use serde_json::{json, Value};

/// What VERSION must claim, exactly.
const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// True if the test can run: root and Debian's CNI plugins; prints why not otherwise.
fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: needs root (docknetd's tmpfs, network namespaces)");
        return false;
    }
    for p in ["host-local", "bridge"] {
        if !Path::new(CNI_PLUGINS).join(p).exists() {
            eprintln!(
                "skipping {test}: {CNI_PLUGINS}/{p} missing (apt-get install containernetworking-plugins)"
            );
            return false;
        }
    }
    true
}

/// What one plugin run gave.
struct Answer {
    status: i32,
    /// stdout parsed (`Null` when empty).
    out: Value,
    stderr: String,
}

impl Answer {
    /// The success result; panics with the error otherwise.
    fn ok(self, what: &str) -> Value {
        assert_eq!(
            self.status, 0,
            "{what} failed: {}\nstderr: {}",
            self.out, self.stderr
        );
        self.out
    }

    /// Asserts a CNI error object with `code` (and the version `version`), and that its
    /// message contains `needle`; returns it.
    fn err(self, what: &str, code: u64, version: &str, needle: &str) -> Value {
        assert_ne!(self.status, 0, "{what} succeeded: {}", self.out);
        let e = &self.out;
        assert_eq!(
            e["code"].as_u64(),
            Some(code),
            "{what}: wrong code in {e}\nstderr: {}",
            self.stderr
        );
        assert_eq!(e["cniVersion"], version, "{what}: {e}");
        let msg = e["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no msg in {e}"));
        assert!(!msg.is_empty(), "{what}: empty msg in {e}");
        assert!(e.get("details").is_some(), "{what}: no details in {e}");
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} does not mention {needle:?}"
        );
        self.out
    }
}

/// Run `plugin` as a runtime does ([`pods::run_plugin`]).
fn run_plugin(plugin: &Path, vars: &[(&str, String)], stdin: &str) -> Answer {
    let (status, out, stderr) = pods::run_plugin(plugin, vars, stdin);
    Answer {
        status,
        out,
        stderr,
    }
}

/// One attachment's environment.
fn vars(
    command: &str,
    container: &str,
    ifname: &str,
    netns: &Path,
    args: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.into()),
        ("CNI_CONTAINERID", container.into()),
        ("CNI_NETNS", netns.display().to_string()),
        ("CNI_IFNAME", ifname.into()),
        ("CNI_PATH", cni_path()),
        ("CNI_ARGS", args.into()),
    ]
}

fn cni(vars: &[(&str, String)], conf: &Value) -> Answer {
    run_plugin(&bin("docknet-cni"), vars, &conf.to_string())
}

/// A docknet-cni network configuration on daemon `d`, addresses from `subnet`.
fn network(version: &str, d: &Daemon, tmp: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "dnet",
        "type": "docknet-cni",
        "runDir": d.run_dir,
        "stateDir": tmp.join("state"),
        "owner": "1000:1000",
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "dataDir": tmp.join("ipam"),
            "routes": [{"dst": "10.200.0.0/16"}]
        }
    })
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// The addresses host-local holds for network `dnet` in `tmp` (one file per address).
fn reserved(tmp: &Path) -> Vec<String> {
    let dir = tmp.join("ipam").join("dnet");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn pipe_names(d: &Daemon) -> Vec<String> {
    d.list("pipe")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// The pipe directory an ADD result reports (1.1.0: `socketPath` of interface `ifname`).
fn socket_path(result: &Value, ifname: &str) -> PathBuf {
    let ifs = result["interfaces"].as_array().expect("interfaces");
    let i = ifs
        .iter()
        .find(|i| i["name"] == ifname)
        .unwrap_or_else(|| panic!("no interface {ifname} in {result}"));
    PathBuf::from(
        i["socketPath"]
            .as_str()
            .unwrap_or_else(|| panic!("no socketPath in {i}")),
    )
}

#[test]
fn version_lists_exactly_what_is_supported() {
    for asked in VERSIONS.iter().chain(["0.3.1", "9.9.9"].iter()) {
        let a = run_plugin(
            &bin("docknet-cni"),
            &[("CNI_COMMAND", "VERSION".into())],
            &json!({"cniVersion": asked}).to_string(),
        )
        .ok("VERSION");
        assert_eq!(a["cniVersion"], *asked, "{a}");
        assert_eq!(a["supportedVersions"], json!(VERSIONS), "{a}");
    }
    // No input at all is answered too.
    let a = run_plugin(
        &bin("docknet-cni"),
        &[("CNI_COMMAND", "VERSION".into())],
        "",
    )
    .ok("VERSION without input");
    assert_eq!(a["supportedVersions"], json!(VERSIONS), "{a}");
}

/// Bad input gets CNI's codes before anything is touched (no docknetd, no root needed).
#[test]
fn bad_input_gets_the_right_codes() {
    let tmp = TempDir::new();
    let netns = Path::new("/run/netns/none");
    for v in VERSIONS {
        let conf = json!({
            "cniVersion": v, "name": "dnet", "type": "docknet-cni",
            "runDir": tmp.path().join("run"), "stateDir": tmp.path().join("state"),
            "ipam": {"type": "host-local", "subnet": "10.88.9.0/24", "dataDir": tmp.path().join("ipam")}
        });
        let without = |var: &str, cmd: &str| -> Vec<(&'static str, String)> {
            vars(cmd, "ctr1", "net1", netns, "")
                .into_iter()
                .filter(|(k, _)| *k != var)
                .collect()
        };
        for cmd in ["ADD", "DEL", "CHECK"] {
            for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
                cni(&without(var, cmd), &conf).err(&format!("{v} {cmd} without {var}"), 4, v, var);
            }
        }
        for cmd in ["ADD", "CHECK"] {
            cni(&without("CNI_NETNS", cmd), &conf).err(
                &format!("{v} {cmd} without CNI_NETNS"),
                4,
                v,
                "CNI_NETNS",
            );
        }
        cni(&without("CNI_COMMAND", "ADD"), &conf).err(
            &format!("{v} no CNI_COMMAND"),
            4,
            v,
            "CNI_COMMAND",
        );
        cni(&vars("FROB", "ctr1", "net1", netns, ""), &conf).err(
            &format!("{v} CNI_COMMAND=FROB"),
            4,
            v,
            "CNI_COMMAND",
        );
        cni(&vars("ADD", "-bad", "net1", netns, ""), &conf).err(
            &format!("{v} bad container id"),
            4,
            v,
            "CNI_CONTAINERID",
        );
        cni(&vars("ADD", "ctr1", "a/b", netns, ""), &conf).err(
            &format!("{v} bad ifname"),
            4,
            v,
            "CNI_IFNAME",
        );
        cni(&vars("ADD", "ctr1", "net1", netns, "novalue"), &conf).err(
            &format!("{v} bad CNI_ARGS"),
            4,
            v,
            "CNI_ARGS",
        );
        cni(
            &vars("ADD", "ctr1", "net1", netns, "DOCKNET_OWNER=a b"),
            &conf,
        )
        .err(&format!("{v} bad owner"), 7, v, "DOCKNET_OWNER");

        let mut no_ipam = conf.clone();
        no_ipam.as_object_mut().unwrap().remove("ipam");
        cni(&vars("ADD", "ctr1", "net1", netns, ""), &no_ipam).err(
            &format!("{v} no ipam"),
            7,
            v,
            "ipam",
        );
        let mut no_name = conf.clone();
        no_name.as_object_mut().unwrap().remove("name");
        cni(&vars("ADD", "ctr1", "net1", netns, ""), &no_name).err(
            &format!("{v} no name"),
            7,
            v,
            "name",
        );
        let mut rel = conf.clone();
        rel["runDir"] = json!("relative/run");
        cni(&vars("ADD", "ctr1", "net1", netns, ""), &rel).err(
            &format!("{v} relative runDir"),
            7,
            v,
            "runDir",
        );
        cni(&vars("CHECK", "ctr1", "net1", netns, ""), &conf).err(
            &format!("{v} CHECK without prevResult"),
            7,
            v,
            "prevResult",
        );
        cni(
            &vars("CHECK", "ctr1", "net1", netns, ""),
            &with_prev(&conf, &json!({"ips": 5})),
        )
        .err(
            &format!("{v} CHECK with a malformed prevResult"),
            6,
            v,
            "prevResult",
        );
        let mut ipam_missing = conf.clone();
        ipam_missing["ipam"]["type"] = json!("no-such-ipam");
        cni(&vars("ADD", "ctr1", "net1", netns, ""), &ipam_missing).err(
            &format!("{v} unknown IPAM"),
            7,
            v,
            "no-such-ipam",
        );
        let mut no_path = vars("ADD", "ctr1", "net1", netns, "");
        no_path.retain(|(k, _)| *k != "CNI_PATH");
        cni(&no_path, &conf).err(&format!("{v} ADD without CNI_PATH"), 4, v, "CNI_PATH");

        // STATUS and GC are 1.1.0 commands.
        if v != "1.1.0" {
            for cmd in ["STATUS", "GC"] {
                cni(&vars(cmd, "ctr1", "net1", netns, ""), &conf).err(
                    &format!("{v} {cmd}"),
                    1,
                    v,
                    cmd,
                );
            }
        }
    }
    let v11 = json!({"cniVersion": "1.1.0", "name": "dnet", "type": "docknet-cni",
        "stateDir": tmp.path().join("state"), "ipam": {"type": "host-local", "subnet": "10.88.9.0/24"}});
    let gc = vec![("CNI_COMMAND", "GC".to_string()), ("CNI_PATH", cni_path())];
    cni(&gc, &v11).err(
        "GC without valid-attachments",
        7,
        "1.1.0",
        "valid-attachments",
    );
    let mut listed = v11.clone();
    listed["cni.dev/valid-attachments"] = json!([]);
    cni(&[("CNI_COMMAND", "GC".into())], &listed).err(
        "GC without CNI_PATH",
        4,
        "1.1.0",
        "CNI_PATH",
    );

    // Not JSON, not an object, unknown or missing versions; errors then speak 1.1.0.
    let add = vars("ADD", "ctr1", "net1", netns, "");
    run_plugin(&bin("docknet-cni"), &add, "{\"cniVersion\": \"1.1.0\", ").err(
        "malformed JSON",
        6,
        "1.1.0",
        "JSON",
    );
    run_plugin(&bin("docknet-cni"), &add, "[1, 2]").err("a JSON array", 6, "1.1.0", "object");
    run_plugin(&bin("docknet-cni"), &add, "").err("empty stdin", 6, "1.1.0", "JSON");
    run_plugin(
        &bin("docknet-cni"),
        &[("CNI_COMMAND", "VERSION".into())],
        "{nope",
    )
    .err("VERSION with malformed JSON", 6, "1.1.0", "JSON");
    for bad in ["0.3.1", "1.2.0", "9.9.9"] {
        let mut c = v11.clone();
        c["cniVersion"] = json!(bad);
        cni(&add, &c).err(&format!("cniVersion {bad}"), 1, "1.1.0", bad);
    }
    let mut c = v11.clone();
    c.as_object_mut().unwrap().remove("cniVersion");
    cni(&add, &c).err("no cniVersion", 7, "1.1.0", "cniVersion");
    // Nothing was recorded.
    assert!(
        !tmp.path().join("state").exists(),
        "bad input left state behind"
    );
}

/// One version's life cycle: ADD, CHECK, ADD again, STATUS, GC, DEL twice.
fn life_cycle(version: &str, subnet_octet: u8) {
    let d = Daemon::start();
    let tmp = TempDir::new();
    let ns = Netns::new("cni");
    let subnet = format!("10.88.{subnet_octet}.0/24");
    let conf = network(version, &d, tmp.path(), &subnet);
    let pod_uid = format!("0000-pod-{subnet_octet}");
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_UID={pod_uid}"
    );
    let env = |cmd: &str| vars(cmd, "ctr1", "net1", ns.path(), &args);

    // ADD
    let add = cni(&env("ADD"), &conf).ok(&format!("{version} ADD"));
    assert_eq!(add["cniVersion"], version, "{add}");
    let ifs = add["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 1, "{add}");
    assert_eq!(ifs[0]["name"], "net1");
    assert_eq!(ifs[0]["sandbox"], ns.path().display().to_string());
    let ips = add["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{add}");
    let addr = ips[0]["address"].as_str().unwrap().to_string();
    assert_eq!(addr, format!("10.88.{subnet_octet}.2/24"), "{add}");
    assert_eq!(ips[0]["gateway"], format!("10.88.{subnet_octet}.1"));
    assert_eq!(ips[0]["interface"], 0);
    assert_eq!(add["routes"], json!([{"dst": "10.200.0.0/16"}]), "{add}");
    let pipes = pipe_names(&d);
    assert_eq!(pipes.len(), 1, "{pipes:?}");
    let pipe = &pipes[0];
    assert!(pipe.starts_with("cni-") && pipe.len() <= 32, "{pipe}");
    let entry = d.pipe_entry(pipe);
    assert_eq!(entry["ip"], addr);
    assert_eq!(entry["owner"], "1000:1000", "{entry}");
    assert_eq!(ifs[0]["mac"], entry["mac"]);
    match version {
        "1.1.0" => {
            assert_eq!(socket_path(&add, "net1"), d.pipe_dir(pipe));
            assert!(d.pipe_dir(pipe).join("pipe.map").exists());
            assert_eq!(ifs[0]["mtu"], entry["mtu"]);
            assert!(ips[0].get("version").is_none(), "{add}");
        }
        "1.0.0" => {
            assert!(
                ifs[0].get("socketPath").is_none() && ifs[0].get("mtu").is_none(),
                "{add}"
            );
            assert!(ips[0].get("version").is_none(), "{add}");
        }
        _ => {
            assert!(ifs[0].get("socketPath").is_none(), "{add}");
            assert_eq!(ips[0]["version"], "4", "{add}");
        }
    }
    assert_eq!(
        reserved(tmp.path()),
        vec![format!("10.88.{subnet_octet}.2")]
    );
    // The pod's link, for a hostPath volume with subPathExpr pods/$(POD_UID)/net1.
    let link = d.run_dir.join("pods").join(&pod_uid).join("net1");
    assert_eq!(
        std::fs::canonicalize(&link).expect("pod link resolves"),
        std::fs::canonicalize(d.pipe_dir(pipe)).unwrap()
    );
    // The same name for the same attachment: ADD again is refused, nothing changes.
    cni(&env("ADD"), &conf).err(&format!("{version} second ADD"), 103, version, "already");
    assert_eq!(pipe_names(&d), pipes);

    // CHECK with the ADD result, then with results that do not match.
    let checked = cni(&env("CHECK"), &with_prev(&conf, &add)).ok(&format!("{version} CHECK"));
    assert_eq!(checked, Value::Null, "CHECK prints nothing on success");
    let mut wrong = add.clone();
    wrong["ips"][0]["address"] = json!(format!("10.88.{subnet_octet}.77/24"));
    cni(&env("CHECK"), &with_prev(&conf, &wrong)).err(
        &format!("{version} CHECK wrong address"),
        101,
        version,
        "10.88.",
    );
    let mut renamed = add.clone();
    renamed["interfaces"][0]["name"] = json!("eth9");
    cni(&env("CHECK"), &with_prev(&conf, &renamed)).err(
        &format!("{version} CHECK wrong interface"),
        101,
        version,
        "net1",
    );

    // STATUS and GC (1.1.0 only; older versions get code 1 in bad_input_gets_the_right_codes).
    if version == "1.1.0" {
        let st = cni(
            &[("CNI_COMMAND", "STATUS".into()), ("CNI_PATH", cni_path())],
            &conf,
        );
        assert_eq!(st.ok("STATUS"), Value::Null);
        // A second attachment that the runtime forgot: GC removes it and frees its address.
        let env2 = vars("ADD", "ctr2", "net1", ns.path(), "");
        let add2 = cni(&env2, &conf).ok("ADD ctr2");
        assert_eq!(pipe_names(&d).len(), 2);
        assert_eq!(reserved(tmp.path()).len(), 2);
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr1", "ifname": "net1"}]);
        let gcenv = [("CNI_COMMAND", "GC".to_string()), ("CNI_PATH", cni_path())];
        assert_eq!(cni(&gcenv, &gc).ok("GC"), Value::Null);
        assert_eq!(pipe_names(&d), pipes, "GC kept the valid pipe only");
        assert_eq!(
            reserved(tmp.path()),
            vec![format!("10.88.{subnet_octet}.2")],
            "GC released ctr2's address"
        );
        assert!(!socket_path(&add2, "net1").exists());
        // The valid attachment is untouched; GC again changes nothing.
        cni(&env("CHECK"), &with_prev(&conf, &add)).ok("CHECK after GC");
        cni(&gcenv, &gc).ok("GC again");
        assert_eq!(pipe_names(&d), pipes);
    }

    // DEL (with prevResult, as runtimes send it), twice.
    assert_eq!(
        cni(&env("DEL"), &with_prev(&conf, &add)).ok(&format!("{version} DEL")),
        Value::Null
    );
    assert!(pipe_names(&d).is_empty(), "DEL left {:?}", pipe_names(&d));
    assert!(
        reserved(tmp.path()).is_empty(),
        "DEL left {:?}",
        reserved(tmp.path())
    );
    assert!(
        !link.exists() && !d.run_dir.join("pods").exists(),
        "DEL left the pod link"
    );
    cni(&env("DEL"), &with_prev(&conf, &add)).ok(&format!("{version} second DEL"));
    cni(&env("DEL"), &conf).ok(&format!("{version} third DEL, without prevResult"));
    cni(&env("CHECK"), &with_prev(&conf, &add)).err(
        &format!("{version} CHECK after DEL"),
        101,
        version,
        "ctr1",
    );
    // The attachment can come back.
    let again = cni(&env("ADD"), &conf).ok(&format!("{version} ADD after DEL"));
    cni(&env("DEL"), &with_prev(&conf, &again)).ok(&format!("{version} DEL"));
    assert!(pipe_names(&d).is_empty());
    assert!(reserved(tmp.path()).is_empty());
}

#[test]
fn life_cycle_0_4_0() {
    if can_run("life_cycle_0_4_0") {
        life_cycle("0.4.0", 40);
    }
}

#[test]
fn life_cycle_1_0_0() {
    if can_run("life_cycle_1_0_0") {
        life_cycle("1.0.0", 100);
    }
}

#[test]
fn life_cycle_1_1_0() {
    if can_run("life_cycle_1_1_0") {
        life_cycle("1.1.0", 110);
    }
}

/// docknetd down: STATUS says 50, ADD says 11 and keeps no address; a half-way failure
/// (docknetd refusing the address, an IPAM gateway that is not the master's) gives the
/// address back; CNI_ARGS DOCKNET_OWNER names the owner.
#[test]
fn failures_give_back_what_they_took() {
    if !can_run("failures_give_back_what_they_took") {
        return;
    }
    let tmp = TempDir::new();
    let ns = Netns::new("cnifail");
    let env = |cmd: &str, args: &str| vars(cmd, "ctr1", "net1", ns.path(), args);
    {
        // A run directory nobody serves.
        let nobody = json!({
            "cniVersion": "1.1.0", "name": "dnet", "type": "docknet-cni",
            "runDir": tmp.path().join("no-daemon"), "stateDir": tmp.path().join("state"),
            "ipam": {"type": "host-local", "subnet": "10.88.60.0/24", "dataDir": tmp.path().join("ipam")}
        });
        cni(
            &[("CNI_COMMAND", "STATUS".into()), ("CNI_PATH", cni_path())],
            &nobody,
        )
        .err("STATUS without docknetd", 50, "1.1.0", "docknetd");
        cni(&env("ADD", ""), &nobody).err("ADD without docknetd", 11, "1.1.0", "docknetd");
        assert!(
            reserved(tmp.path()).is_empty(),
            "ADD kept {:?}",
            reserved(tmp.path())
        );
        assert!(
            !tmp.path().join("state").exists(),
            "ADD without docknetd recorded something"
        );
    }
    let d = Daemon::start();
    let conf = network("1.1.0", &d, tmp.path(), "10.88.61.0/24");
    // GC with a null list (libcni's empty list) and nothing recorded: nothing to do.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = Value::Null;
    let gcenv = [("CNI_COMMAND", "GC".to_string()), ("CNI_PATH", cni_path())];
    assert_eq!(cni(&gcenv, &gc).ok("GC of nothing"), Value::Null);

    // docknetd refuses the address IPAM gives (a pipe has it already): 100, address back.
    d.create_pipe("squatter", "10.88.61.2/24", &[]);
    cni(&env("ADD", ""), &conf).err("ADD onto a taken address", 100, "1.1.0", "10.88.61.2");
    assert!(
        reserved(tmp.path()).is_empty(),
        "kept {:?}",
        reserved(tmp.path())
    );
    assert_eq!(pipe_names(&d), vec!["squatter".to_string()]);
    d.ctl_ok(&["pipe", "rm", "squatter"]);

    // An IPAM gateway that is not the master's address.
    let mut gw = conf.clone();
    gw["ipam"]["gateway"] = json!("10.88.61.254");
    cni(&env("ADD", ""), &gw).err("ADD with a foreign gateway", 7, "1.1.0", "10.88.61.1");
    assert!(
        reserved(tmp.path()).is_empty(),
        "kept {:?}",
        reserved(tmp.path())
    );
    assert!(pipe_names(&d).is_empty());

    // The owner from CNI_ARGS wins over the configuration's.
    let add = cni(&env("ADD", "DOCKNET_OWNER=1234:5678"), &conf).ok("ADD with DOCKNET_OWNER");
    let pipe = pipe_names(&d).pop().expect("a pipe");
    assert_eq!(d.pipe_entry(&pipe)["owner"], "1234:5678");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(socket_path(&add, "net1")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));

    // docknetd stops: DEL cannot know whether the pipe is gone, so it says "try again".
    drop(d);
    cni(&env("DEL", ""), &conf).err("DEL without docknetd", 11, "1.1.0", "docknetd");
}

/// A pod asks for a fixed address (CNI_ARGS `IP=`, or the `ips` capability as
/// `runtimeConfig` when the configuration declares it, as Multus passes a network
/// selection's `ips`) and the delegated `host-local` honours it; a taken fixed address is
/// refused and nothing is kept; `forwarder` (configuration key, `args.cni.forwarder` as
/// Multus passes `cni-args`, CNI_ARGS `DOCKNET_FORWARDER`) makes the pipe a forwarder.
#[test]
fn fixed_addresses_and_forwarder_pipes() {
    if !can_run("fixed_addresses_and_forwarder_pipes") {
        return;
    }
    let tmp = TempDir::new();
    let ns = Netns::new("cnifix");
    let d = Daemon::start();
    let conf = network("1.1.0", &d, tmp.path(), "10.88.62.0/24");
    let env = |cmd: &str, ctr: &str, args: &str| vars(cmd, ctr, "net1", ns.path(), args);
    let address = |r: &Value| r["ips"][0]["address"].as_str().unwrap_or("").to_string();
    let pipe_of = |r: &Value| {
        socket_path(r, "net1")
            .file_name()
            .expect("pipe dir name")
            .to_string_lossy()
            .into_owned()
    };

    // CNI_ARGS IP= (host-local's own key; IgnoreUnknown lets the runtime's keys by).
    let a = cni(&env("ADD", "a", "K8S_POD_NAME=web-1;IP=10.88.62.10"), &conf).ok("ADD IP=");
    assert_eq!(address(&a), "10.88.62.10/24", "{a}");
    let pa = pipe_of(&a);
    assert_eq!(d.pipe_entry(&pa)["ip"], "10.88.62.10/24");
    assert_eq!(d.pipe_entry(&pa)["forwarder"], false);

    // runtimeConfig ips with the capability declared (what libcni sends for Multus's ips).
    let mut caps = conf.clone();
    caps["capabilities"] = json!({"ips": true});
    caps["runtimeConfig"] = json!({"ips": ["10.88.62.100/24"]});
    caps["forwarder"] = json!(true);
    let b = cni(&env("ADD", "b", ""), &caps).ok("ADD runtimeConfig ips");
    assert_eq!(address(&b), "10.88.62.100/24", "{b}");
    let pb = pipe_of(&b);
    let entry = d.pipe_entry(&pb);
    assert_eq!(entry["ip"], "10.88.62.100/24", "{entry}");
    assert_eq!(entry["forwarder"], true, "{entry}");
    // CHECK passes for a fixed address too.
    let mut chk = caps.clone();
    chk["prevResult"] = b.clone();
    assert_eq!(cni(&env("CHECK", "b", ""), &chk).ok("CHECK b"), Value::Null);

    // A fixed address someone holds: host-local refuses, nothing is left behind.
    let before = reserved(tmp.path());
    let e = cni(&env("ADD", "c", "IP=10.88.62.10"), &conf);
    let err = e.out.clone();
    assert_ne!(e.status, 0, "a second ADD of 10.88.62.10 succeeded: {err}");
    assert!(
        err["msg"].as_str().unwrap_or("").contains("10.88.62.10"),
        "{err}"
    );
    assert_eq!(reserved(tmp.path()), before);
    assert_eq!(pipe_names(&d).len(), 2);

    // args.cni.forwarder (Multus cni-args) and the CNI_ARGS key, which wins.
    let mut margs = conf.clone();
    margs["args"] = json!({"cni": {"forwarder": true, "ips": ["10.88.62.20/24"]}});
    let c = cni(&env("ADD", "c", ""), &margs).ok("ADD args.cni");
    assert_eq!(
        address(&c),
        "10.88.62.20/24",
        "args.cni.ips is host-local's: {c}"
    );
    assert_eq!(d.pipe_entry(&pipe_of(&c))["forwarder"], true);
    let f = cni(&env("ADD", "f", "DOCKNET_FORWARDER=1"), &conf).ok("ADD DOCKNET_FORWARDER=1");
    assert_eq!(d.pipe_entry(&pipe_of(&f))["forwarder"], true);
    let mut caps2 = caps.clone();
    caps2["runtimeConfig"] = json!({"ips": ["10.88.62.101/24"]});
    let g =
        cni(&env("ADD", "g", "DOCKNET_FORWARDER=false"), &caps2).ok("ADD DOCKNET_FORWARDER=false");
    assert_eq!(d.pipe_entry(&pipe_of(&g))["forwarder"], false);
    cni(&env("ADD", "h", "DOCKNET_FORWARDER=maybe"), &conf).err(
        "ADD DOCKNET_FORWARDER=maybe",
        4,
        "1.1.0",
        "DOCKNET_FORWARDER",
    );

    for ctr in ["a", "b", "c", "f", "g", "h"] {
        let c = match ctr {
            "b" => &caps,
            "c" => &margs,
            "g" => &caps2,
            _ => &conf,
        };
        assert_eq!(cni(&env("DEL", ctr, ""), c).ok("DEL"), Value::Null);
    }
    assert!(pipe_names(&d).is_empty(), "{:?}", pipe_names(&d));
    assert!(
        reserved(tmp.path()).is_empty(),
        "{:?}",
        reserved(tmp.path())
    );
}

/// Chained after Debian's `bridge` plugin (a kernel interface in the pod) in one chain,
/// so with the same `CNI_IFNAME`, for every version: the bridge's interfaces, addresses
/// and routes pass through, the pipe is added; CHECK and DEL get the chain's final
/// result.
#[test]
fn chained_after_bridge() {
    if !can_run("chained_after_bridge") {
        return;
    }
    let d = Daemon::start();
    for (i, version) in VERSIONS.iter().enumerate() {
        let tmp = TempDir::new();
        let ns = Netns::new("cnichain");
        let bridge_name = format!("dncb{}x{i}", std::process::id() % 100_000);
        let _bridge_gone = BridgeGuard(bridge_name.clone());
        // host-local and bridge speak up to 1.0.0: the runtime picks that for the bridge.
        let bridge_version = if *version == "1.1.0" {
            "1.0.0"
        } else {
            version
        };
        let bridge_conf = json!({
            "cniVersion": bridge_version, "name": "kube", "type": "bridge",
            "bridge": bridge_name, "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": format!("10.99.{i}.0/24"),
                     "dataDir": tmp.path().join("ipam-bridge"),
                     "routes": [{"dst": "0.0.0.0/0"}]}
        });
        let ctr = format!("chain{i}");
        let benv = vars("ADD", &ctr, "eth0", ns.path(), "");
        let bridged = run_plugin(
            &Path::new(CNI_PLUGINS).join("bridge"),
            &benv,
            &bridge_conf.to_string(),
        )
        .ok(&format!("{version} bridge ADD"));
        let mut prev = bridged.clone();
        prev["cniVersion"] = json!(version);
        let conf = network(version, &d, tmp.path(), &format!("10.88.{}.0/24", 70 + i));
        // One chain: every plugin gets the same CNI_IFNAME.
        let env = |cmd: &str| vars(cmd, &ctr, "eth0", ns.path(), "");
        let add = cni(&env("ADD"), &with_prev(&conf, &prev)).ok(&format!("{version} chained ADD"));
        assert_eq!(add["cniVersion"], *version);
        let before = bridged["interfaces"].as_array().unwrap();
        let after = add["interfaces"].as_array().unwrap();
        assert_eq!(after.len(), before.len() + 1, "{add}");
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "bridge's interfaces kept: {add}"
        );
        assert_eq!(after[before.len()]["name"], "eth0");
        assert_eq!(
            after[before.len()]["sandbox"],
            ns.path().display().to_string()
        );
        let bips = bridged["ips"].as_array().unwrap();
        let ips = add["ips"].as_array().unwrap();
        assert_eq!(ips.len(), bips.len() + 1, "{add}");
        for (a, b) in ips.iter().zip(bips) {
            assert_eq!(a["address"], b["address"]);
            assert_eq!(a["interface"], b["interface"]);
        }
        let ours = &ips[bips.len()];
        assert_eq!(ours["interface"], before.len(), "{add}");
        assert_eq!(ours["address"], format!("10.88.{}.2/24", 70 + i));
        let routes = add["routes"].as_array().unwrap();
        assert!(
            routes.iter().any(|r| r["dst"] == "0.0.0.0/0"),
            "bridge's route kept: {add}"
        );
        assert!(routes.contains(&json!({"dst": "10.200.0.0/16"})), "{add}");
        if *version == "1.1.0" {
            let ours = &after[before.len()];
            let dir = Path::new(ours["socketPath"].as_str().expect("socketPath"));
            assert!(dir.join("pipe.map").exists(), "{ours}");
        }
        // The pod still has its kernel interface from the bridge.
        let shown = ns.ip_show(&["-4", "addr", "show", "eth0"]);
        assert!(shown.contains(&format!("10.99.{i}.")), "{shown}");

        cni(&env("CHECK"), &with_prev(&conf, &add)).ok(&format!("{version} chained CHECK"));
        // prevResult with our interface's MAC changed: not ours any more.
        let mut other = add.clone();
        other["interfaces"][before.len()]["mac"] = json!("02:00:0a:0a:0a:0a");
        cni(&env("CHECK"), &with_prev(&conf, &other)).err(
            &format!("{version} chained CHECK, MAC changed"),
            101,
            version,
            "MAC",
        );
        // DEL in reverse order, each with the final result.
        cni(&env("DEL"), &with_prev(&conf, &add)).ok(&format!("{version} chained DEL"));
        let mut bdel = bridge_conf.clone();
        bdel["prevResult"] = bridged.clone();
        run_plugin(
            &Path::new(CNI_PLUGINS).join("bridge"),
            &vars("DEL", &ctr, "eth0", ns.path(), ""),
            &bdel.to_string(),
        )
        .ok(&format!("{version} bridge DEL"));
        assert!(pipe_names(&d).is_empty());
        assert!(reserved(tmp.path()).is_empty());
    }
}

/// Deletes a bridge the `bridge` plugin made in our namespace.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}
