//! Two network namespaces joined by veth pairs to a Linux bridge that lives
//! in a third namespace, so the root namespace is never touched.
//!
//! ```text
//!   NS_A: eth0 10.77.1.1/24 ──veth── pa ┐
//!                                       ├ br0 (NS_BR)
//!   NS_B: eth0 10.77.1.2/24 ──veth── pb ┘
//! ```

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

/// The two-host bridge topology.
pub struct BridgeTopology {
    pub ns_a: NetnsGuard,
    pub ns_b: NetnsGuard,
    pub ns_br: NetnsGuard,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
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
            "{} ({}) <-veth-> br0 in {} <-veth-> {} ({})",
            self.ns_a.name, self.ip_a, self.ns_br.name, self.ns_b.name, self.ip_b
        )
    }

    /// Creates `dnb<pid>a`, `dnb<pid>b`, `dnb<pid>br` and wires them up.
    /// On error everything created so far is removed (guards drop).
    pub fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let ns_a = NetnsGuard::create(&format!("dnb{pid}a"))?;
        let ns_b = NetnsGuard::create(&format!("dnb{pid}b"))?;
        let ns_br = NetnsGuard::create(&format!("dnb{pid}br"))?;
        let ip_a = Ipv4Addr::new(10, 77, 1, 1);
        let ip_b = Ipv4Addr::new(10, 77, 1, 2);
        let br = ns_br.name.as_str();
        run_checked(&["ip", "-n", br, "link", "set", "lo", "up"])?;
        run_checked(&["ip", "-n", br, "link", "add", "br0", "type", "bridge"])?;
        run_checked(&["ip", "-n", br, "link", "set", "br0", "up"])?;
        for (ns, port, ip) in [(&ns_a, "pa", ip_a), (&ns_b, "pb", ip_b)] {
            let n = ns.name.as_str();
            run_checked(&[
                "ip", "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", br,
            ])?;
            run_checked(&["ip", "-n", br, "link", "set", port, "master", "br0"])?;
            run_checked(&["ip", "-n", br, "link", "set", port, "up"])?;
            run_checked(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            run_checked(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
            run_checked(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(BridgeTopology {
            ns_a,
            ns_b,
            ns_br,
            ip_a,
            ip_b,
        })
    }
}
