//! Network namespaces wired up as "hosts", so the root namespace is never
//! touched. Two shapes ([`Topology`]):
//!
//! `bridge-wire` (`pingpong`'s kernel-bridge path, and `interhost
//! --topology bridge-wire`): two hosts joined by veth pairs to a Linux bridge
//! in a third namespace.
//!
//! ```text
//!   A: eth0 ──veth── pa ┐
//!                       ├ br0 (BR)
//!   B: eth0 ──veth── pb ┘
//! ```
//!
//! `containers` (`interhost`'s default): the wire is one veth pair between
//! hosts H1 and H2 (each end is the host's `eth0`). With kernel endpoints
//! each host also gets a container namespace on a Docker-style bridge that
//! the wire end is a port of; with userspace endpoints the hosts are bare
//! (the userspace stack owns `eth0`).
//!
//! ```text
//!   kernel:    C1 eth0 ─veth─ vethc1 ┐                      ┌ vethc2 ─veth─ eth0 C2
//!                              H1 br0 ┴ eth0 ══wire══ eth0 ┴ br0 H2
//!   userspace:                    H1    eth0 ══wire══ eth0    H2
//! ```
//!
//! The plan (namespaces, `ip`/`ethtool` commands, endpoints) is computed by a
//! pure function, [`TopologySpec::plan`], and then executed by
//! [`Network::create`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

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

/// The shape of the network between the two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Two hosts joined by one veth (the wire); kernel endpoints sit in
    /// containers on a bridge in each host, userspace ones own the wire ends.
    Containers,
    /// Two hosts, each eth0 a veth to a port of br0 in a third namespace.
    BridgeWire,
}

impl Topology {
    pub const ALL: [Topology; 2] = [Topology::Containers, Topology::BridgeWire];

    pub fn name(self) -> &'static str {
        match self {
            Topology::Containers => "containers",
            Topology::BridgeWire => "bridge-wire",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Topology::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown topology {s:?}; choose from {}",
                    Topology::ALL.map(Topology::name).join(", ")
                )
            })
    }
}

/// What terminates the traffic at each end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Kernel TCP: the endpoint interfaces carry the addresses (with
    /// `Containers`: in container namespaces on a bridge in each host).
    Kernel,
    /// A userspace stack binds each host's eth0 (no kernel address; with
    /// `Containers`: no bridge and no container either).
    Userspace,
}

/// What to build: namespace names `dnb<pid><tag><suffix>`, the endpoint
/// addresses, the MTU of every link (`None` = the kernel's default) and the
/// offloads.
#[derive(Debug, Clone)]
pub struct TopologySpec {
    pub tag: String,
    pub topology: Topology,
    pub endpoints: Endpoints,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
    pub prefix: u8,
    pub mtu: Option<u32>,
    /// Turn TSO and GSO off on every veth end of the topology
    /// (`ethtool -K DEV tso off gso off`), so the kernel sends MTU-sized
    /// frames as a userspace stack does.
    pub no_tso: bool,
}

/// A namespace and an interface in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsDev {
    pub ns: String,
    pub dev: String,
}

/// What [`TopologySpec::plan`] computes: everything needed to build the
/// network, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces to create, in order.
    pub namespaces: Vec<String>,
    /// Commands to run after that, in order (argv).
    pub commands: Vec<Vec<String>>,
    /// Where side a's and side b's endpoint runs, and the interface that
    /// carries its traffic (kernel: the one with the address; userspace: the
    /// NIC to bind).
    pub end_a: NsDev,
    pub end_b: NsDev,
    /// The two ends of the wire, in the host namespaces.
    pub wire_a: NsDev,
    pub wire_b: NsDev,
}

fn ip(ns: &str, args: &[&str]) -> Vec<String> {
    ["ip", "-n", ns]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

fn ethtool_no_tso(ns: &str, dev: &str) -> Vec<String> {
    [
        "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off",
    ]
    .map(String::from)
    .to_vec()
}

impl TopologySpec {
    /// `pingpong`'s kernel-bridge topology.
    pub fn pingpong() -> Self {
        TopologySpec {
            tag: String::new(),
            topology: Topology::BridgeWire,
            endpoints: Endpoints::Kernel,
            ip_a: Ipv4Addr::new(10, 77, 1, 1),
            ip_b: Ipv4Addr::new(10, 77, 1, 2),
            prefix: 24,
            mtu: None,
            no_tso: false,
        }
    }

    /// The namespace name suffixes, in creation order.
    fn suffixes(&self) -> &'static [&'static str] {
        match (self.topology, self.endpoints) {
            (Topology::BridgeWire, _) => &["a", "b", "br"],
            (Topology::Containers, Endpoints::Kernel) => &["h1", "h2", "c1", "c2"],
            (Topology::Containers, Endpoints::Userspace) => &["h1", "h2"],
        }
    }

    /// The namespace names for `pid`, in creation order.
    pub fn names(&self, pid: u32) -> Vec<String> {
        self.suffixes()
            .iter()
            .map(|s| format!("dnb{pid}{}{s}", self.tag))
            .collect()
    }

    /// The full plan for `pid` (pure: no side effects).
    pub fn plan(&self, pid: u32) -> Plan {
        let names = self.names(pid);
        let mtu = self.mtu.map(|m| m.to_string());
        let kernel = self.endpoints == Endpoints::Kernel;
        let mut cmds = Vec::new();
        let set_mtu = |cmds: &mut Vec<Vec<String>>, ns: &str, dev: &str| {
            if let Some(m) = &mtu {
                cmds.push(ip(ns, &["link", "set", dev, "mtu", m]));
            }
        };
        let addr = |ip_: Ipv4Addr| format!("{ip_}/{}", self.prefix);
        let nsdev = |ns: &str, dev: &str| NsDev {
            ns: ns.into(),
            dev: dev.into(),
        };
        match self.topology {
            Topology::BridgeWire => {
                let (a, b, br) = (&names[0], &names[1], &names[2]);
                cmds.push(ip(br, &["link", "set", "lo", "up"]));
                cmds.push(ip(br, &["link", "add", "br0", "type", "bridge"]));
                for (h, port, ip_) in [(a, "pa", self.ip_a), (b, "pb", self.ip_b)] {
                    cmds.push(ip(
                        h,
                        &[
                            "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
                            br,
                        ],
                    ));
                    set_mtu(&mut cmds, h, "eth0");
                    set_mtu(&mut cmds, br, port);
                    cmds.push(ip(br, &["link", "set", port, "master", "br0"]));
                    cmds.push(ip(br, &["link", "set", port, "up"]));
                    if kernel {
                        cmds.push(ip(h, &["addr", "add", &addr(ip_), "dev", "eth0"]));
                    }
                    cmds.push(ip(h, &["link", "set", "eth0", "up"]));
                    cmds.push(ip(h, &["link", "set", "lo", "up"]));
                    if self.no_tso {
                        cmds.push(ethtool_no_tso(h, "eth0"));
                        cmds.push(ethtool_no_tso(br, port));
                    }
                }
                set_mtu(&mut cmds, br, "br0");
                cmds.push(ip(br, &["link", "set", "br0", "up"]));
                Plan {
                    end_a: nsdev(a, "eth0"),
                    end_b: nsdev(b, "eth0"),
                    wire_a: nsdev(a, "eth0"),
                    wire_b: nsdev(b, "eth0"),
                    namespaces: names.clone(),
                    commands: cmds,
                }
            }
            Topology::Containers => {
                let (h1, h2) = (&names[0], &names[1]);
                // The wire: one veth pair, each end the host's eth0; the same
                // settings whatever the endpoints.
                cmds.push(ip(
                    h1,
                    &[
                        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", h2,
                    ],
                ));
                for h in [h1, h2] {
                    set_mtu(&mut cmds, h, "eth0");
                    if self.no_tso {
                        cmds.push(ethtool_no_tso(h, "eth0"));
                    }
                    cmds.push(ip(h, &["link", "set", "lo", "up"]));
                }
                if kernel {
                    let (c1, c2) = (&names[2], &names[3]);
                    for (h, c, veth, ip_) in
                        [(h1, c1, "vethc1", self.ip_a), (h2, c2, "vethc2", self.ip_b)]
                    {
                        cmds.push(ip(h, &["link", "add", "br0", "type", "bridge"]));
                        cmds.push(ip(h, &["link", "set", "eth0", "master", "br0"]));
                        cmds.push(ip(
                            c,
                            &[
                                "link", "add", "eth0", "type", "veth", "peer", "name", veth,
                                "netns", h,
                            ],
                        ));
                        set_mtu(&mut cmds, c, "eth0");
                        set_mtu(&mut cmds, h, veth);
                        if self.no_tso {
                            cmds.push(ethtool_no_tso(c, "eth0"));
                            cmds.push(ethtool_no_tso(h, veth));
                        }
                        cmds.push(ip(h, &["link", "set", veth, "master", "br0"]));
                        cmds.push(ip(h, &["link", "set", veth, "up"]));
                        set_mtu(&mut cmds, h, "br0");
                        cmds.push(ip(h, &["link", "set", "br0", "up"]));
                        cmds.push(ip(c, &["addr", "add", &addr(ip_), "dev", "eth0"]));
                        cmds.push(ip(c, &["link", "set", "eth0", "up"]));
                        cmds.push(ip(c, &["link", "set", "lo", "up"]));
                    }
                }
                for h in [h1, h2] {
                    cmds.push(ip(h, &["link", "set", "eth0", "up"]));
                }
                let (end_a, end_b) = if kernel {
                    (nsdev(&names[2], "eth0"), nsdev(&names[3], "eth0"))
                } else {
                    (nsdev(h1, "eth0"), nsdev(h2, "eth0"))
                };
                Plan {
                    end_a,
                    end_b,
                    wire_a: nsdev(h1, "eth0"),
                    wire_b: nsdev(h2, "eth0"),
                    namespaces: names.clone(),
                    commands: cmds,
                }
            }
        }
    }
}

/// A built topology; everything is removed on drop (and on a signal).
pub struct Network {
    /// Every namespace, in creation order.
    pub namespaces: Vec<NetnsGuard>,
    pub topology: Topology,
    pub end_a: NsDev,
    pub end_b: NsDev,
    pub wire_a: NsDev,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
    /// MTU of the wire (what `ip link` reports on H1's end after setup).
    pub mtu: u32,
    /// TSO/GSO turned off on every veth end.
    pub no_tso: bool,
}

/// Why the namespace paths cannot run here, if they cannot.
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

impl Network {
    /// One line for the progress output.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.namespaces.iter().map(|n| n.name.as_str()).collect();
        format!(
            "{} [{}]: a = {}/{} ({}), b = {}/{} ({}), wire {}/{} MTU {}{}",
            self.topology,
            names.join(" "),
            self.end_a.ns,
            self.end_a.dev,
            self.ip_a,
            self.end_b.ns,
            self.end_b.dev,
            self.ip_b,
            self.wire_a.ns,
            self.wire_a.dev,
            self.mtu,
            if self.no_tso { ", TSO/GSO off" } else { "" }
        )
    }

    /// Builds `spec`'s plan. On error everything created so far is removed
    /// (guards drop).
    pub fn create(spec: &TopologySpec) -> Result<Self, String> {
        let plan = spec.plan(std::process::id());
        let mut namespaces = Vec::new();
        for n in &plan.namespaces {
            namespaces.push(NetnsGuard::create(n)?);
        }
        for c in &plan.commands {
            let argv: Vec<&str> = c.iter().map(String::as_str).collect();
            run_checked(&argv)?;
        }
        let mtu = link_mtu(&plan.wire_a.ns, &plan.wire_a.dev)?;
        Ok(Network {
            namespaces,
            topology: spec.topology,
            end_a: plan.end_a,
            end_b: plan.end_b,
            wire_a: plan.wire_a,
            ip_a: spec.ip_a,
            ip_b: spec.ip_b,
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

    fn spec(
        topology: Topology,
        endpoints: Endpoints,
        mtu: Option<u32>,
        no_tso: bool,
    ) -> TopologySpec {
        TopologySpec {
            tag: "t".into(),
            topology,
            endpoints,
            ip_a: Ipv4Addr::new(10, 88, 1, 2),
            ip_b: Ipv4Addr::new(10, 88, 2, 2),
            prefix: 16,
            mtu,
            no_tso,
        }
    }

    fn has(plan: &Plan, cmd: &str) -> bool {
        plan.commands.iter().any(|c| c.join(" ") == cmd)
    }

    /// The commands that set up the wire ends (`eth0` in the host
    /// namespaces), bridge enslaving and addresses excepted, with the
    /// namespace names made generic (`NS0`, `NS1`, ...).
    fn wire_settings(p: &Plan) -> Vec<String> {
        let hosts = [&p.wire_a.ns, &p.wire_b.ns];
        let mut names: Vec<(usize, &String)> = p.namespaces.iter().enumerate().collect();
        names.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
        p.commands
            .iter()
            .filter(|c| {
                let target = if c[1] == "-n" { &c[2] } else { &c[3] };
                hosts.contains(&target)
                    && c.iter().any(|w| w == "eth0")
                    && !c.iter().any(|w| w == "master" || w == "addr")
            })
            .map(|c| {
                let mut s = c.join(" ");
                for (i, n) in &names {
                    s = s.replace(n.as_str(), &format!("NS{i}"));
                }
                s
            })
            .collect()
    }

    #[test]
    fn names_and_mtu_parsing() {
        let mut s = TopologySpec::pingpong();
        assert_eq!(s.names(42), ["dnb42a", "dnb42b", "dnb42br"]);
        s.tag = "k".into();
        assert_eq!(s.names(7)[2], "dnb7kbr");
        let line = "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9000 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netns x";
        assert_eq!(parse_mtu(line), Some(9000));
        assert_eq!(parse_mtu("no such thing"), None);
        assert_eq!(parse_mtu("mtu"), None);
    }

    #[test]
    fn topology_names_parse() {
        assert_eq!("containers".parse::<Topology>(), Ok(Topology::Containers));
        assert_eq!(" bridge-wire".parse::<Topology>(), Ok(Topology::BridgeWire));
        let e = "docker".parse::<Topology>().unwrap_err();
        assert!(e.contains("containers, bridge-wire"), "{e}");
    }

    #[test]
    fn pingpong_plan_is_the_bridge_wire() {
        let p = TopologySpec::pingpong().plan(5);
        assert_eq!(p.namespaces, ["dnb5a", "dnb5b", "dnb5br"]);
        assert!(has(&p, "ip -n dnb5br link add br0 type bridge"));
        assert!(has(
            &p,
            "ip -n dnb5a link add eth0 type veth peer name pa netns dnb5br"
        ));
        assert!(has(&p, "ip -n dnb5b addr add 10.77.1.2/24 dev eth0"));
        assert!(has(&p, "ip -n dnb5br link set pb master br0"));
        assert!(!p.commands.iter().any(|c| c.contains(&"mtu".to_string())));
        assert!(!p
            .commands
            .iter()
            .any(|c| c.contains(&"ethtool".to_string())));
        assert_eq!(
            p.end_a,
            NsDev {
                ns: "dnb5a".into(),
                dev: "eth0".into()
            }
        );
        assert_eq!(p.end_b.ns, "dnb5b");
    }

    #[test]
    fn containers_kernel_plan() {
        let p = spec(Topology::Containers, Endpoints::Kernel, Some(9000), true).plan(3);
        assert_eq!(p.namespaces, ["dnb3th1", "dnb3th2", "dnb3tc1", "dnb3tc2"]);
        // The wire: one veth between the hosts.
        assert!(has(
            &p,
            "ip -n dnb3th1 link add eth0 type veth peer name eth0 netns dnb3th2"
        ));
        // A bridge in each host with the wire end and the container's veth.
        for (h, c, v, a) in [
            ("dnb3th1", "dnb3tc1", "vethc1", "10.88.1.2/16"),
            ("dnb3th2", "dnb3tc2", "vethc2", "10.88.2.2/16"),
        ] {
            assert!(has(&p, &format!("ip -n {h} link add br0 type bridge")));
            assert!(has(&p, &format!("ip -n {h} link set eth0 master br0")));
            assert!(has(&p, &format!("ip -n {h} link set {v} master br0")));
            assert!(has(
                &p,
                &format!("ip -n {c} link add eth0 type veth peer name {v} netns {h}")
            ));
            assert!(has(&p, &format!("ip -n {c} addr add {a} dev eth0")));
            // MTU and offloads on every link.
            for (ns, dev) in [(h, "eth0"), (h, v), (h, "br0"), (c, "eth0")] {
                assert!(
                    has(&p, &format!("ip -n {ns} link set {dev} mtu 9000")),
                    "{ns} {dev}"
                );
            }
            for (ns, dev) in [(h, "eth0"), (h, v), (c, "eth0")] {
                assert!(
                    has(
                        &p,
                        &format!("ip netns exec {ns} ethtool -K {dev} tso off gso off")
                    ),
                    "{ns} {dev}"
                );
            }
        }
        // No address on the hosts: only the containers talk.
        assert_eq!(
            p.commands
                .iter()
                .filter(|c| c.contains(&"addr".to_string()))
                .count(),
            2
        );
        assert_eq!(
            p.end_a,
            NsDev {
                ns: "dnb3tc1".into(),
                dev: "eth0".into()
            }
        );
        assert_eq!(p.end_b.ns, "dnb3tc2");
        assert_eq!(
            p.wire_a,
            NsDev {
                ns: "dnb3th1".into(),
                dev: "eth0".into()
            }
        );
        // Every namespace is created before a command names it.
        let created: Vec<&String> = p.namespaces.iter().collect();
        for c in &p.commands {
            for w in c.iter().filter(|w| w.starts_with("dnb")) {
                assert!(created.contains(&w), "{w} in {c:?}");
            }
        }
    }

    #[test]
    fn containers_userspace_plan_is_the_bare_wire() {
        let p = spec(Topology::Containers, Endpoints::Userspace, None, false).plan(3);
        assert_eq!(p.namespaces, ["dnb3th1", "dnb3th2"]);
        assert!(!p.commands.iter().any(|c| c.contains(&"bridge".to_string())));
        assert!(!p.commands.iter().any(|c| c.contains(&"addr".to_string())));
        assert_eq!(p.end_a, p.wire_a);
        assert_eq!(p.end_b, p.wire_b);
        assert_eq!(
            p.end_b,
            NsDev {
                ns: "dnb3th2".into(),
                dev: "eth0".into()
            }
        );
        assert!(has(&p, "ip -n dnb3th2 link set eth0 up"));
    }

    #[test]
    fn wire_settings_are_identical_for_kernel_and_userspace() {
        for topology in Topology::ALL {
            for (mtu, no_tso) in [(None, false), (Some(9000), true), (Some(1400), false)] {
                let k = spec(topology, Endpoints::Kernel, mtu, no_tso).plan(1);
                let mut u = spec(topology, Endpoints::Userspace, mtu, no_tso);
                u.tag = "u".into();
                let u = u.plan(1);
                let (wk, wu) = (wire_settings(&k), wire_settings(&u));
                assert!(!wk.is_empty());
                assert_eq!(wk, wu, "{topology} {mtu:?} {no_tso}");
                if let Some(m) = mtu {
                    assert!(wu.contains(&format!("ip -n NS0 link set eth0 mtu {m}")));
                    assert!(wu.contains(&format!("ip -n NS1 link set eth0 mtu {m}")));
                }
                assert_eq!(
                    wu.iter().any(|c| c.contains("tso off gso off")),
                    no_tso,
                    "{wu:?}"
                );
            }
        }
    }
}
