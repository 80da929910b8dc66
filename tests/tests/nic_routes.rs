//! Several nodes (issue 11, part 2): two "nodes" are two network namespaces joined by a
//! veth, each with its own docknetd on its end (AF_PACKET) and its own address on the wire
//! (`--link-ip` 192.168.50.1/24 and .2/24). Pods get addresses from each node's own /24
//! of one cluster range 10.90.0.0/16 — through `docknet-cni` ADD with Debian's
//! `host-local` when it is installed, else `docknetctl pipe create` (the test says which).
//! `docknetctl route add` both ways, then a 16 MiB echo between a pod on node 1 and one
//! on node 2 goes through the routes byte-exact; the routes' and the NIC's counters show
//! the frames were routed. The CLI test covers `route add/rm/ls`, bad input and a restart.
//! Needs root (namespaces, docknetd's tmpfs); without it each test prints why and passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use docknet_tests::nic::{self, veth, Netns, TwoNodes, ECHO_PORT};
use docknet_tests::pods::{cni_path, run_cni, CNI_PLUGINS};
use docknet_tests::{Daemon, TempDir};
use serde_json::json;

const MIB16: usize = 16 * 1024 * 1024;

/// A pod of node `d`: its pipe's name and address.
struct Pod {
    pipe: String,
    ip: String,
}

/// Give a pod on node `d` a pipe through `docknet-cni` ADD, as a container runtime does
/// (host-local IPAM on `subnet`, state under `tmp`).
fn cni_add(d: &Daemon, tmp: &Path, node: &str, subnet: &str, pod_netns: &Netns) -> Pod {
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": format!("dnet-{node}"),
        "type": "docknet-cni",
        "runDir": d.run_dir,
        "stateDir": tmp.join(node).join("state"),
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "dataDir": tmp.join(node).join("ipam"),
            // The cluster range goes through the master (the pipe's gateway).
            "routes": [{"dst": "10.90.0.0/16"}]
        }
    });
    let vars = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", format!("pod-{node}")),
        ("CNI_NETNS", pod_netns.path().display().to_string()),
        ("CNI_IFNAME", "dn0".into()),
        ("CNI_PATH", cni_path()),
        ("CNI_ARGS", String::new()),
    ];
    let (status, result, stderr) = run_cni(&vars, &conf);
    assert_eq!(
        status,
        0,
        "docknet-cni ADD on {node} failed: {result}\nstderr: {stderr}\ndocknetd log:\n{}",
        d.log_tail()
    );
    let dir = result["interfaces"][0]["socketPath"]
        .as_str()
        .unwrap_or_else(|| panic!("no socketPath in {result}"));
    let pipe = PathBuf::from(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("pipe name");
    let cidr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    let ip = cidr.split('/').next().unwrap_or_default().to_string();
    assert!(
        cidr.starts_with(&subnet[..subnet.rfind('.').unwrap()]) && cidr.ends_with("/24"),
        "{node}: address {cidr} is not from {subnet}"
    );
    Pod { pipe, ip }
}

#[test]
fn two_nodes_echo_16mib_through_routes() {
    let _serial = nic::serial();
    if !nic::need_root("two_nodes_echo_16mib_through_routes") {
        return;
    }
    let tmp = TempDir::new();
    let nodes = TwoNodes::start();
    let (d1, d2) = (&nodes.d1, &nodes.d2);
    // The pods' own namespaces (given to the plugin as CNI_NETNS; the pipe is what they
    // use, their kernel network is left alone).
    let (p1ns, p2ns) = (Netns::new("pod1"), Netns::new("pod2"));
    let host_local = Path::new(CNI_PLUGINS).join("host-local");
    let (pod1, pod2) = if host_local.exists() {
        eprintln!("[routes] pods get their pipes through docknet-cni ADD (host-local)");
        (
            cni_add(d1, tmp.path(), "node1", TwoNodes::POD_SUBNETS[0], &p1ns),
            cni_add(d2, tmp.path(), "node2", TwoNodes::POD_SUBNETS[1], &p2ns),
        )
    } else {
        eprintln!(
            "[routes] {} missing (apt-get install containernetworking-plugins): pods get their pipes through docknetctl pipe create instead",
            host_local.display()
        );
        d1.create_pipe("pod1", "10.90.1.2/24", &[]);
        d2.create_pipe("pod2", "10.90.2.2/24", &[]);
        (
            Pod {
                pipe: "pod1".into(),
                ip: "10.90.1.2".into(),
            },
            Pod {
                pipe: "pod2".into(),
                ip: "10.90.2.2".into(),
            },
        )
    };
    eprintln!(
        "[routes] node 1 pod {} at {}, node 2 pod {} at {}",
        pod1.pipe, pod1.ip, pod2.pipe, pod2.ip
    );
    nodes.add_routes();
    let _server = d2.echo_server(&pod2.pipe, ECHO_PORT);
    let to = format!("{}:{ECHO_PORT}", pod2.ip);
    for (size, count) in [(1, 10), (65536, 10), (MIB16, 1)] {
        let (size_s, count_s) = (size.to_string(), count.to_string());
        let args = ["--to", &to, "--size", &size_s, "--count", &count_s];
        let start = Instant::now();
        let out = d1.echo_client(&pod1.pipe, &args, Duration::from_secs(180));
        assert!(
            out.status.success(),
            "dn-echo client {args:?} on node 1 failed ({}) after {:.1?}:\nstdout: {}\nstderr: {}\n{}",
            out.status,
            start.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            nodes.diagnostics()
        );
        eprintln!("[routes] {size} B x {count}: ok in {:.2?}", start.elapsed());
    }
    // The 16 MiB went node 1 -> node 2 and back: each route carried it once.
    let (r1, r2) = nodes.assert_routed(MIB16 as u64);
    eprintln!("[routes] node 1 route: {r1}, node 2 route: {r2}");
    drop(_server);
}

#[test]
fn route_cli_add_rm_ls_bad_input_and_restart() {
    let _serial = nic::serial();
    if !nic::need_root("route_cli_add_rm_ls_bad_input_and_restart") {
        return;
    }
    let n1 = Netns::new("rc1");
    let n2 = Netns::new("rc2");
    veth(&n1, "e0", &n2, "e0");
    let link_ip = ["--link-ip", "192.168.50.1/24"];
    let mut d = Daemon::start_in(n1.path(), "af-packet:e0", &link_ip);
    d.create_pipe("pod", "10.90.1.2/24", &[]);
    let ls = d.routes_json();
    assert_eq!(ls["routes"], json!([]), "{ls}");
    assert_eq!(ls["link_ip"], "192.168.50.1/24", "{ls}");
    assert_eq!(ls["nic"], "af-packet:e0", "{ls}");
    d.ctl_ok(&["route", "add", "10.90.2.0/24", "via", "192.168.50.2"]);
    d.ctl_ok(&["route", "add", "10.90.0.0/16", "via", "192.168.50.3"]);
    d.ctl_ok(&["route", "add", "0.0.0.0/0", "via", "192.168.50.9"]);
    let table = d.ctl_ok(&["route", "ls"]);
    assert!(
        table.contains("192.168.50.1/24")
            && table.contains("10.90.2.0/24")
            && table.contains("192.168.50.2")
            && table.contains("DEST"),
        "route ls: {table}"
    );
    assert_eq!(d.routes_json()["routes"].as_array().map(Vec::len), Some(3));

    for (args, want) in [
        (
            vec!["route", "add", "10.90.2.0/24", "via", "192.168.50.4"],
            "a route to 10.90.2.0/24 exists already (via 192.168.50.2)",
        ),
        (
            vec!["route", "add", "10.90.3.0/33", "via", "192.168.50.2"],
            "invalid route destination \"10.90.3.0/33\": prefix length",
        ),
        (
            vec!["route", "add", "ten.90.3.0/24", "via", "192.168.50.2"],
            "is not an IPv4 address",
        ),
        (
            vec!["route", "add", "10.90.3.5/24", "via", "192.168.50.2"],
            "host bits are set (the network is 10.90.3.0/24)",
        ),
        (
            vec!["route", "add", "10.90.3.0", "via", "192.168.50.2"],
            "expected A.B.C.D/N",
        ),
        (
            vec!["route", "add", "10.90.3.0/24", "via", "192.168.50.x"],
            "invalid next hop \"192.168.50.x\"",
        ),
        (
            vec!["route", "add", "10.90.3.0/24", "via", "10.1.1.1"],
            "next hop 10.1.1.1 is not on the link of af-packet:e0 (192.168.50.0/24",
        ),
        (
            vec!["route", "add", "10.90.3.0/24", "via", "192.168.50.1"],
            "is this docknetd's own link address",
        ),
        (
            vec!["route", "add", "10.90.1.0/24", "via", "192.168.50.2"],
            "overlaps pipe \"pod\"'s subnet 10.90.1.0/24",
        ),
        (
            vec!["route", "add", "10.90.1.128/25", "via", "192.168.50.2"],
            "overlaps pipe \"pod\"'s subnet 10.90.1.0/24",
        ),
        (
            vec!["route", "add", "192.168.50.128/25", "via", "192.168.50.2"],
            "overlaps the link's subnet 192.168.50.0/24",
        ),
        (
            vec!["route", "rm", "10.90.7.0/24"],
            "no route to 10.90.7.0/24",
        ),
        (vec!["route", "rm", "10.90.7.0/99"], "prefix length"),
        (
            vec!["pipe", "create", "late", "--ip", "10.90.2.7/24"],
            "contains route 10.90.2.0/24 via 192.168.50.2",
        ),
    ] {
        let e = d.ctl_err(&args);
        assert!(e.contains(want), "{args:?}: {e:?} should say {want:?}");
    }
    // `via` is a keyword.
    let out = d.ctl(&["route", "add", "10.90.3.0/24", "through", "192.168.50.2"]);
    assert!(!out.status.success(), "route add … through … succeeded");
    assert_eq!(d.routes_json()["routes"].as_array().map(Vec::len), Some(3));

    // Routes survive a restart (the state file), counters start over.
    d.restart(&link_ip);
    let after = d.routes_json();
    let cidrs: Vec<&str> = after["routes"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["cidr"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        cidrs,
        ["0.0.0.0/0", "10.90.0.0/16", "10.90.2.0/24"],
        "after a restart: {after}"
    );
    d.ctl_ok(&["route", "rm", "10.90.2.0/24"]);
    d.ctl_ok(&["route", "rm", "0.0.0.0/0"]);
    let e = d.ctl_err(&["route", "rm", "10.90.2.0/24"]);
    assert!(e.contains("no route to 10.90.2.0/24"), "{e}");
    assert_eq!(d.routes_json()["routes"].as_array().map(Vec::len), Some(1));
    // Now the /24 inside the summary is a pipe subnet again.
    d.create_pipe("late", "10.90.2.7/24", &[]);

    // Restarted without --link-ip: the routes cannot be restored (logged), and new ones
    // are refused with the reason.
    d.restart(&[]);
    assert_eq!(d.routes_json()["routes"], json!([]));
    let e = d.ctl_err(&["route", "add", "10.90.3.0/24", "via", "192.168.50.2"]);
    assert!(
        e.contains("no address on its link af-packet:e0") && e.contains("--link-ip"),
        "{e}"
    );
    drop(d);

    // With --nic none there is no link at all.
    let none = Daemon::start();
    let e = none.ctl_err(&["route", "add", "10.90.3.0/24", "via", "192.168.50.2"]);
    assert!(e.contains("--nic none"), "{e}");
}
