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
//! The pods' machinery is `docknet_tests::pods`; `cni_pods_two_nodes.rs` puts the two
//! pods on two nodes.
//!
//! Needs root, runc, /usr/lib/cni/host-local (containernetworking-plugins) and musl for
//! the static dn-echo (as tests/tests/container.rs); prints why and passes otherwise.

use docknet_tests::nic;
use docknet_tests::pods::{
    build_echo_image, can_run_pods, echo_between_pods, pod_network_conf, unique_suffix, Attachment,
    PodSandbox,
};
use docknet_tests::{Daemon, TempDir};
use serde_json::Value;

const MIB16: usize = 16 * 1024 * 1024;

#[test]
fn two_pods_on_one_node_echo_16_mib_through_their_pipes() {
    let test = "two_pods_on_one_node_echo_16_mib_through_their_pipes";
    let _serial = nic::serial();
    if !can_run_pods(test) {
        return;
    }
    let tmp = TempDir::new();
    let suffix = unique_suffix();

    // The image: dn-echo as a minimal static binary, FROM scratch.
    let layout = tmp.path().join("oci");
    build_echo_image(&layout);

    // The node: docknetd, and two pod sandboxes.
    let d = Daemon::start();
    let server_pod = PodSandbox::new("poda", &suffix);
    let client_pod = PodSandbox::new("podb", &suffix);
    let conf = pod_network_conf(
        &d.run_dir,
        &tmp.path().join("state"),
        &tmp.path().join("ipam"),
        "10.88.9.0/24",
        &[],
    );
    let mut server_att = Attachment::add(&server_pod, &conf);
    let mut client_att = Attachment::add(&client_pod, &conf);
    let (server_pipe, client_pipe) = (server_att.pipe_dir(), client_att.pipe_dir());
    assert_ne!(server_pipe, client_pipe);
    assert_ne!(server_att.address(), client_att.address());
    for att in [&server_att, &client_att] {
        assert_eq!(
            att.result["interfaces"][0]["sandbox"],
            att.pod.netns.path().display().to_string(),
            "{}",
            att.result
        );
    }
    eprintln!(
        "[pods] ADD: server pod {} on {}, client pod {} on {}",
        server_att.address(),
        server_pipe.display(),
        client_att.address(),
        client_pipe.display()
    );

    // The containers (force-deleted before this returns): one 16 MiB message, echoed and
    // checked byte for byte by dn-echo.
    let before = d.stats(None);
    echo_between_pods(
        &layout,
        tmp.path(),
        &suffix,
        &server_att,
        &client_att,
        MIB16,
        &|| format!("docknetd log:\n{}", d.log_tail()),
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

    // DEL both: the pipes, the pods' links and the addresses are gone.
    server_att.del();
    client_att.del();
    let left: Vec<Value> = d.list("pipe");
    assert!(left.is_empty(), "pipes left after DEL: {left:?}");
    for att in [&server_att, &client_att] {
        assert!(
            std::fs::symlink_metadata(att.link()).is_err(),
            "{} still exists",
            att.link().display()
        );
    }
    let reserved = server_att.reserved_addresses();
    assert!(
        reserved.is_empty(),
        "addresses still reserved: {reserved:?}"
    );
}
