//! rte_flow through the DPDK backend, on DPDK's `net_tap` PMD (which implements rte_flow
//! with the kernel's tc flower), inside a private network namespace. A separate file
//! from `dpdk.rs` because DPDK's EAL can be initialised once per process.
//!
//! Needs root and the `dpdk` feature:
//! `cargo test -p docknet-master --features dpdk --test dpdk_flow -- --nocapture`.
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use docknet_master::nic::dpdk::DpdkNic;
use docknet_master::nic::Nic;
use docknet_tests::need_root;
use docknet_tests::nic::{try_run, DpdkPrefix, Netns};

/// The net_tap PMD implements rte_flow with tc (multiq qdisc, flower filters, skbedit
/// actions); some kernels (e.g. minimal VM kernels) lack them. Probe on a scratch veth.
fn kernel_has_tc_flower(ns: &Netns) -> Result<(), String> {
    let (v1, v2) = ("dnfp", "dnfq");
    ns.try_ip(&["link", "add", v1, "type", "veth", "peer", "name", v2])?;
    let tc = |args: &[&str]| -> Result<(), String> {
        try_run(ns.command("tc").args(args), Duration::from_secs(10)).map(drop)
    };
    let r = tc(&["qdisc", "add", "dev", v1, "root", "handle", "1:", "multiq"])
        .and_then(|_| tc(&["qdisc", "add", "dev", v1, "ingress"]))
        .and_then(|_| {
            tc(&[
                "filter",
                "add",
                "dev",
                v1,
                "parent",
                "ffff:",
                "protocol",
                "ip",
                "flower",
                "dst_ip",
                "10.0.0.1",
                "action",
                "skbedit",
                "queue_mapping",
                "0",
            ])
        });
    let _ = ns.try_ip(&["link", "del", v1]);
    r.map_err(|e| format!("this kernel lacks what net_tap's rte_flow needs ({e})"))
}

#[test]
fn dpdk_tap_pmd_mtu_and_rte_flow() {
    if !need_root("dpdk rte_flow test", "network namespace, TAP") {
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping dpdk rte_flow test: needs iproute2 (`ip`)");
        return;
    }
    // Guards: EAL's runtime directory and the namespace (with the TAP the PMD makes in
    // it) go on every exit.
    let prefix = DpdkPrefix::new();
    let ns = Netns::new("dflow");
    ns.run(|| {
        let args = format!(
            "--no-huge --no-pci -m 128 -l 0 --log-level=error --no-telemetry --no-shconf \
             --file-prefix={} --vdev=net_tap0,iface=dntf0",
            prefix.prefix()
        );
        let mut nic = DpdkNic::open_with_mtu(&args, Some(1400))
            .unwrap_or_else(|e| panic!("DpdkNic::open({args}): {e}"));
        assert_eq!(nic.name(), "dpdk:net_tap0");
        assert_eq!(
            nic.max_frame(),
            1414,
            "the MTU asked for, plus the Ethernet header"
        );
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let b = Ipv4Addr::new(10, 88, 0, 3);
        if let Err(e) = nic.try_steer(a) {
            if let Err(why) = kernel_has_tc_flower(&ns) {
                // Still check the fallback: no rule, steer says so, unsteer is harmless.
                assert!(!nic.steer(a));
                nic.unsteer(a);
                eprintln!("skipping the rte_flow rule checks: {why}; try_steer said: {e}");
                return;
            }
            panic!("rte_flow rule on net_tap failed although the kernel has tc flower: {e}");
        }
        assert!(
            nic.steer(a),
            "a second steer of the same address keeps its rule"
        );
        assert!(nic.steer(b));
        nic.unsteer(a);
        nic.unsteer(a); // no rule any more: nothing happens
        assert!(nic.steer(a), "a removed rule can be made again");
        // Drop destroys the remaining rules before closing the port.
    });
}
