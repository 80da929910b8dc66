//! The DPDK backend (issue 3), built only with `--features dpdk` (which builds docknetd
//! with `docknet-master/dpdk`): DPDK's af_packet PMD on a veth
//! (`--no-huge --no-pci --vdev=net_af_packet0,iface=h0`). The same checks as the other
//! backends: curl, ping, a 64 MiB verified stream, two hosts echoing across a veth, and
//! bad input counted and survived. Needs root.
#![cfg(feature = "dpdk")]

use docknet_tests::nic::{self, Backend};

#[test]
fn dpdk_curl_gets_the_http_reply() {
    let _serial = nic::serial();
    if nic::need_root("dpdk_curl_gets_the_http_reply") {
        nic::scenario_curl(Backend::Dpdk);
    }
}

#[test]
fn dpdk_ping_gets_echo_replies() {
    let _serial = nic::serial();
    if nic::need_root("dpdk_ping_gets_echo_replies") {
        nic::scenario_ping(Backend::Dpdk);
    }
}

#[test]
fn dpdk_64mib_stream_is_byte_exact() {
    let _serial = nic::serial();
    if nic::need_root("dpdk_64mib_stream_is_byte_exact") {
        nic::scenario_stream_64mib(Backend::Dpdk);
    }
}

#[test]
fn dpdk_two_hosts_echo() {
    let _serial = nic::serial();
    if nic::need_root("dpdk_two_hosts_echo") {
        nic::scenario_two_hosts(Backend::Dpdk);
    }
}

#[test]
fn dpdk_bad_frames_are_counted_and_survived() {
    let _serial = nic::serial();
    if nic::need_root("dpdk_bad_frames_are_counted_and_survived") {
        nic::scenario_bad_input(Backend::Dpdk);
    }
}
