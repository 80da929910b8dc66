//! Two "pods" on different nodes (issue 11, *Done when*, line 2, second half): the pods
//! of `cni_pods.rs` (runc containers from a `docknet-image` image of dn-echo, each in a
//! pod network namespace the test gives `docknet-cni` as `CNI_NETNS`, the pipe
//! bind-mounted from `RUN_DIR/pods/POD_UID/net1` at `/run/docknet/pipe`) on the nodes of
//! `nic_routes.rs` (two network namespaces joined by a veth, each with its own docknetd on
//! AF_PACKET with its own `--link-ip`). The client pod's pipe comes from node 1's
//! docknetd with an address from node 1's `host-local` subnet 10.90.1.0/24, the server
//! pod's from node 2's (10.90.2.0/24); `docknetctl route add` both ways; dn-echo client
//! in the client pod sends one 16 MiB message to the server pod and checks the echo byte
//! for byte. Both routes and both pipes carried the 16 MiB; then DEL on each node frees
//! its pipe, link and address.
//!
//! Needs root, runc, /usr/lib/cni/host-local (containernetworking-plugins) and musl for
//! the static dn-echo; prints why and passes otherwise.

use docknet_tests::nic::{self, TwoNodes};
use docknet_tests::pods::{
    build_echo_image, can_run_pods, echo_between_pods, pod_network_conf, unique_suffix, Attachment,
    PodSandbox,
};
use docknet_tests::{counter, Daemon, TempDir};
use serde_json::Value;

const MIB16: usize = 16 * 1024 * 1024;

#[test]
fn two_pods_on_two_nodes_echo_16_mib_through_routes() {
    let test = "two_pods_on_two_nodes_echo_16_mib_through_routes";
    let _serial = nic::serial();
    if !can_run_pods(test) {
        return;
    }
    let tmp = TempDir::new();
    let suffix = unique_suffix();

    // The image first: building it takes a while, the nodes need not wait for it.
    let layout = tmp.path().join("oci");
    build_echo_image(&layout);

    let nodes = TwoNodes::start();
    // Each node's DockNet network: its own docknetd, plugin state and host-local subnet;
    // the cluster range goes through the master (the pipe's gateway).
    let node_conf = |i: usize, d: &Daemon| {
        let dir = tmp.path().join(format!("node{}", i + 1));
        pod_network_conf(
            &d.run_dir,
            &dir.join("state"),
            &dir.join("ipam"),
            TwoNodes::POD_SUBNETS[i],
            &[TwoNodes::CLUSTER_RANGE],
        )
    };
    let client_pod = PodSandbox::new("poda", &suffix);
    let server_pod = PodSandbox::new("podb", &suffix);
    let mut client_att = Attachment::add(&client_pod, &node_conf(0, &nodes.d1));
    let mut server_att = Attachment::add(&server_pod, &node_conf(1, &nodes.d2));
    for (att, d, i) in [(&client_att, &nodes.d1, 0), (&server_att, &nodes.d2, 1)] {
        // The pod's pipe is its node's, its address from its node's subnet.
        assert!(
            att.pipe_dir().starts_with(&d.run_dir),
            "{} is not under node {}'s run directory {}",
            att.pipe_dir().display(),
            i + 1,
            d.run_dir.display()
        );
        let subnet = TwoNodes::POD_SUBNETS[i];
        let prefix = &subnet[..subnet.rfind('.').unwrap() + 1];
        assert!(
            att.cidr().starts_with(prefix) && att.cidr().ends_with("/24"),
            "node {}: address {} is not from {subnet}",
            i + 1,
            att.cidr()
        );
        assert_eq!(
            att.result["interfaces"][0]["sandbox"],
            att.pod.netns.path().display().to_string(),
            "{}",
            att.result
        );
    }
    eprintln!(
        "[pods2] ADD: client pod {} on node 1 ({}), server pod {} on node 2 ({})",
        client_att.address(),
        client_att.pipe_dir().display(),
        server_att.address(),
        server_att.pipe_dir().display()
    );
    nodes.add_routes();

    // The containers (force-deleted before this returns): one 16 MiB message from the
    // client pod on node 1 to the server pod on node 2, echoed and checked byte for byte.
    let before = (nodes.d1.stats(None), nodes.d2.stats(None));
    echo_between_pods(
        &layout,
        tmp.path(),
        &suffix,
        &server_att,
        &client_att,
        MIB16,
        &|| nodes.diagnostics(),
    );
    let after = (nodes.d1.stats(None), nodes.d2.stats(None));

    // The 16 MiB went node 1 -> node 2 and back: each route carried it once, and each
    // pod's pipe on its own node carried it each way.
    let (r1, r2) = nodes.assert_routed(MIB16 as u64);
    eprintln!("[pods2] node 1 route: {r1}, node 2 route: {r2}");
    for (node, att, before, after) in [
        (1, &client_att, &before.0, &after.0),
        (2, &server_att, &before.1, &after.1),
    ] {
        let name = att.pipe_name();
        let delta = |c| counter(after, &name, c) - counter(before, &name, c);
        assert!(
            delta("tx_bytes") >= MIB16 as u64 && delta("rx_bytes") >= MIB16 as u64,
            "node {node}, pipe {name}: tx {} B, rx {} B, expected >= 16 MiB each way",
            delta("tx_bytes"),
            delta("rx_bytes")
        );
    }

    // DEL on each node: its pipe, the pod's link and the address are gone.
    client_att.del();
    server_att.del();
    for (node, att, d) in [(1, &client_att, &nodes.d1), (2, &server_att, &nodes.d2)] {
        let left: Vec<Value> = d.list("pipe");
        assert!(
            left.is_empty(),
            "node {node}: pipes left after DEL: {left:?}"
        );
        assert!(
            std::fs::symlink_metadata(att.link()).is_err(),
            "node {node}: {} still exists",
            att.link().display()
        );
        let reserved = att.reserved_addresses();
        assert!(
            reserved.is_empty(),
            "node {node}: addresses still reserved: {reserved:?}"
        );
    }
}
