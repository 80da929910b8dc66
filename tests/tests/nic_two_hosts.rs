//! Two hosts (issue 3): namespaces H1 and H2 joined by a veth, a docknetd on each end
//! (AF_PACKET), pipes 10.88.1.2/16 and 10.88.2.2/16 (same subnet: on-link, resolved by the
//! masters' ARP). A service on H1 echoes with one on H2: 1 B, 1460 B, 64 KiB x 10 and
//! 16 MiB x 1, byte-exact. The DPDK variant is in nic_dpdk.rs. Needs root.

use docknet_tests::nic::{self, Backend};

#[test]
fn two_hosts_echo_over_af_packet() {
    let _serial = nic::serial();
    if nic::need_root("two_hosts_echo_over_af_packet") {
        nic::scenario_two_hosts(Backend::AfPacket);
    }
}
