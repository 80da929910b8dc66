//! Two network namespaces joined by veth pairs to a Linux bridge that lives
//! in a third namespace, so the root namespace is never touched.
//!
//! ```text
//!   NS_A: eth0 10.77.1.1/24 ──veth── pa ┐
//!                                       ├ br0 (NS_BR)
//!   NS_B: eth0 10.77.1.2/24 ──veth── pb ┘
//! ```
//!
//! (`pingpong`'s kernel-bridge path; `interhost` uses the same shape with its
//! own names, addresses and MTU, see [`TopologySpec`].)

use std::net::Ipv4Addr;

use crate::cleanup::{self, Resource};
use crate::proc::run_checked;

/// A network namespace, deleted on drop (and on a signal).
pub struct NetnsGuard {
    pub name: String,
    id: u64,
}

impl NetnsGuard {
    pub fn create(name: &str) -> Result<Self, String> {
        run_checked(&["ip", "netns", "add", name])?;
        let id = cleanup::register(Resource::Netns(name.to_string()));
        Ok(NetnsGuard {
            name: name.to_string(),
            id,
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        cleanup::unregister(self.id);
        if let Err(e) = run_checked(&["ip", "netns", "del", &self.name]) {
            log::warn!("{e}");
        } else {
            log::debug!("deleted netns {}", self.name);
        }
    }
}

/// What to build: namespace names `dnb<pid><tag>a/b/br`, the hosts'
/// addresses (`None` = leave eth0 without an address, for a userspace stack
/// that binds it), and the MTU of every link (`None` = the kernel's default).
#[derive(Debug, Clone)]
pub struct TopologySpec {
    pub tag: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
    pub prefix: u8,
    pub assign_ips: bool,
    pub mtu: Option<u32>,
    /// Turn TSO and GSO off on both hosts' eth0 (`ethtool -K eth0 tso off gso off`),
    /// so the kernel sends MTU-sized frames on the wire as a userspace stack does.
    pub no_tso: bool,
}

impl TopologySpec {
    /// `pingpong`'s kernel-bridge topology.
    pub fn pingpong() -> Self {
        TopologySpec {
            tag: String::new(),
            ip_a: Ipv4Addr::new(10, 77, 1, 1),
            ip_b: Ipv4Addr::new(10, 77, 1, 2),
            prefix: 24,
            assign_ips: true,
            mtu: None,
            no_tso: false,
        }
    }

    /// The namespace names for `pid`: (a, b, bridge).
    pub fn names(&self, pid: u32) -> (String, String, String) {
        let t = &self.tag;
        (
            format!("dnb{pid}{t}a"),
            format!("dnb{pid}{t}b"),
            format!("dnb{pid}{t}br"),
        )
    }
}

/// The two-host bridge topology.
pub struct BridgeTopology {
    pub ns_a: NetnsGuard,
    pub ns_b: NetnsGuard,
    pub ns_br: NetnsGuard,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
    /// Link MTU (what `ip link` reports on eth0 after setup).
    pub mtu: u32,
    /// TSO/GSO turned off on eth0.
    pub no_tso: bool,
}

/// Why the bridge path cannot run here, if it cannot.
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!(
            "needs root to create network namespaces (running as uid {euid})"
        ));
    }
    if let Err(e) = run_checked(&["ip", "netns", "list"]) {
        return Some(format!("`ip netns` is not usable: {e}"));
    }
    None
}

impl BridgeTopology {
    /// One line for the progress output.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}) <-veth-> br0 in {} <-veth-> {} ({}), MTU {}{}",
            self.ns_a.name,
            self.ip_a,
            self.ns_br.name,
            self.ns_b.name,
            self.ip_b,
            self.mtu,
            if self.no_tso { ", TSO/GSO off" } else { "" }
        )
    }

    /// Creates the namespaces of `spec` and wires them up: eth0 in each host,
    /// its veth peer (pa, pb) in the bridge namespace as a port of br0.
    /// On error everything created so far is removed (guards drop).
    pub fn create(spec: &TopologySpec) -> Result<Self, String> {
        let (a, b, brn) = spec.names(std::process::id());
        let ns_a = NetnsGuard::create(&a)?;
        let ns_b = NetnsGuard::create(&b)?;
        let ns_br = NetnsGuard::create(&brn)?;
        let (ip_a, ip_b) = (spec.ip_a, spec.ip_b);
        let br = ns_br.name.as_str();
        run_checked(&["ip", "-n", br, "link", "set", "lo", "up"])?;
        run_checked(&["ip", "-n", br, "link", "add", "br0", "type", "bridge"])?;
        for (ns, port, ip) in [(&ns_a, "pa", ip_a), (&ns_b, "pb", ip_b)] {
            let n = ns.name.as_str();
            run_checked(&[
                "ip", "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", br,
            ])?;
            if let Some(mtu) = spec.mtu {
                let m = mtu.to_string();
                run_checked(&["ip", "-n", n, "link", "set", "eth0", "mtu", &m])?;
                run_checked(&["ip", "-n", br, "link", "set", port, "mtu", &m])?;
            }
            run_checked(&["ip", "-n", br, "link", "set", port, "master", "br0"])?;
            run_checked(&["ip", "-n", br, "link", "set", port, "up"])?;
            if spec.assign_ips {
                run_checked(&[
                    "ip",
                    "-n",
                    n,
                    "addr",
                    "add",
                    &format!("{ip}/{}", spec.prefix),
                    "dev",
                    "eth0",
                ])?;
            }
            run_checked(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
            run_checked(&["ip", "-n", n, "link", "set", "lo", "up"])?;
            if spec.no_tso {
                run_checked(&[
                    "ip", "netns", "exec", n, "ethtool", "-K", "eth0", "tso", "off", "gso", "off",
                ])?;
            }
        }
        if let Some(mtu) = spec.mtu {
            run_checked(&[
                "ip",
                "-n",
                br,
                "link",
                "set",
                "br0",
                "mtu",
                &mtu.to_string(),
            ])?;
        }
        run_checked(&["ip", "-n", br, "link", "set", "br0", "up"])?;
        let mtu = link_mtu(&ns_a.name, "eth0")?;
        Ok(BridgeTopology {
            ns_a,
            ns_b,
            ns_br,
            ip_a,
            ip_b,
            mtu,
            no_tso: spec.no_tso,
        })
    }
}

/// The MTU of `dev` in namespace `ns` (from /sys, read inside the namespace).
pub fn link_mtu(ns: &str, dev: &str) -> Result<u32, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()
        .map_err(|e| format!("ip link show: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_mtu(&text).ok_or_else(|| format!("no MTU for {dev} in {ns}: {:?}", text.trim()))
}

/// The number after ` mtu ` in `ip -o link show` output.
pub fn parse_mtu(text: &str) -> Option<u32> {
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mtu" {
            return it.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mtu_parsing() {
        let mut s = TopologySpec::pingpong();
        assert_eq!(
            s.names(42),
            ("dnb42a".into(), "dnb42b".into(), "dnb42br".into())
        );
        s.tag = "k".into();
        assert_eq!(s.names(7).2, "dnb7kbr");
        let line = "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9000 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netns x";
        assert_eq!(parse_mtu(line), Some(9000));
        assert_eq!(parse_mtu("no such thing"), None);
        assert_eq!(parse_mtu("mtu"), None);
    }
}
