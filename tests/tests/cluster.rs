//! Clusters (issue 9) through the TAP backend, from kernel clients: `docknetctl cluster
//! up` brings up dn-nat and dn-httpd members behind a VIP; new connections spread
//! evenly; a member killed under load is taken out and its connections reset, then
//! restarted; a drained member finishes its keep-alive connections and gets no new
//! ones; a full connection table refuses new flows and counts them; malformed frames
//! and fragments to the VIP are dropped and counted; a UDP VIP balances by flow.
//! Needs root (namespaces, TAP); prints why and passes otherwise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use docknet_tests::cluster::{
    bin_path, connections, get_once, members, ClusterSite, KeepAlive, Outcome, VIP,
};
use docknet_tests::nic;

fn vip(port: u16) -> SocketAddr {
    format!("{VIP}:{port}").parse().expect("VIP address")
}

/// A cluster file for `replicas` dn-httpd members (backlog for the tests' concurrency).
fn httpd_cluster(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"name = "{name}"
vip = "{VIP}:80"
replicas = {replicas}
policy = "maglev"
binary = "{}"
args = ["--backlog", "256"]
subnet = "10.88.1.0/24"
health = {{ kind = "http", path = "/", interval_ms = 200 }}
{extra}
"#,
        bin_path("dn-httpd")
    )
}

#[test]
fn cluster_spreads_new_connections_evenly() {
    let _serial = nic::serial();
    if !nic::need_root("cluster_spreads_new_connections_evenly") {
        return;
    }
    let site = ClusterSite::start();
    let table = site.up("web.toml", &httpd_cluster("web", 4, ""));
    assert!(
        table.contains("web-4"),
        "cluster up should print the members: {table}"
    );

    const REQUESTS: usize = 10_000;
    const THREADS: usize = 4;
    let t0 = Instant::now();
    let outcomes = site.clients(THREADS, |i| {
        let mut bad = Vec::new();
        for _ in (i..REQUESTS).step_by(THREADS) {
            match get_once(vip(80), Duration::from_secs(5)) {
                Outcome::Status(200) => {}
                o => bad.push(o),
            }
        }
        bad
    });
    let bad: Vec<_> = outcomes.into_iter().flatten().collect();
    eprintln!(
        "[cluster] {REQUESTS} requests on new connections in {:.1} s, {} failed",
        t0.elapsed().as_secs_f64(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "failed requests: {:?}",
        &bad[..bad.len().min(20)]
    );
    let st = site.status("web");
    let c = connections(&st);
    eprintln!("[cluster] spread: {c:?}");
    assert_eq!(c.len(), 4, "{st}");
    let total: u64 = c.iter().map(|(_, n)| n).sum();
    assert!(
        total >= REQUESTS as u64,
        "the NAT counted {total} connections: {st}"
    );
    let even = total as f64 / 4.0;
    for (name, n) in &c {
        assert!(
            (*n as f64 - even).abs() <= 0.2 * even,
            "{name} got {n} connections, even share {even:.0} (±20%): {c:?}"
        );
    }
    for m in members(&st) {
        assert_eq!(m["health"], "healthy", "{m}");
        assert_eq!(m["state"], "running", "{m}");
        assert!(m["pid"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["bytes"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(
            m["ip"].as_str().unwrap_or("").starts_with("10.88.1."),
            "{m}"
        );
    }
    site.daemon.ctl_ok(&["cluster", "down", "web"]);
    let ls = site.daemon.ctl_ok(&["pipe", "ls", "--json"]);
    assert!(
        !ls.contains("web"),
        "cluster down should remove the pipes: {ls}"
    );
}

#[test]
fn killed_member_is_reset_then_replaced() {
    let _serial = nic::serial();
    if !nic::need_root("killed_member_is_reset_then_replaced") {
        return;
    }
    let site = ClusterSite::start();
    site.up("web.toml", &httpd_cluster("web", 3, ""));
    let victim = site.member("web", "web-2");
    let pid = victim["pid"].as_u64().expect("pid") as i32;

    // Keep-alive connections to every member, one request each so they are established.
    let mut idle: Vec<KeepAlive> = site.keepalives(vip(80), 24);
    let on_victim = site.member("web", "web-2")["active"].as_u64().unwrap_or(0);
    assert!(on_victim > 0, "no keep-alive connection landed on web-2");

    // Load on new connections while the member is killed.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let interval = Duration::from_millis(200);
    let killed_at = std::sync::Mutex::new(None::<Instant>);
    let results = std::thread::scope(|s| {
        let load = s.spawn(|| {
            site.clients(2, |_| {
                let mut log = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let o = get_once(vip(80), Duration::from_secs(5));
                    log.push((t, t.elapsed(), o));
                }
                log
            })
        });
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on the member's pid, read from cluster status just before.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        *killed_at.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().expect("load")
    });
    let killed_at = killed_at.lock().unwrap().expect("killed");
    let log: Vec<_> = results.into_iter().flatten().collect();
    let late_failures: Vec<_> = log
        .iter()
        .filter(|(t, _, o)| *t > killed_at + interval && !matches!(o, Outcome::Status(200)))
        .collect();
    let hung: Vec<_> = log
        .iter()
        .filter(|(_, d, _)| *d > Duration::from_secs(2))
        .collect();
    eprintln!(
        "[cluster] {} requests around the kill; {} failed after one interval; {} took > 2 s",
        log.len(),
        late_failures.len(),
        hung.len()
    );
    assert!(log.len() > 50, "too little load: {}", log.len());
    assert!(
        late_failures.is_empty(),
        "new connections failed after one health interval: {late_failures:?}"
    );
    assert!(hung.is_empty(), "requests hung: {hung:?}");

    // The kept-alive connections that were on the dead member are reset, not hung; the
    // others still answer.
    let t = Instant::now();
    let mut reset = 0;
    for k in &mut idle {
        match k.get() {
            Outcome::Status(200) => {}
            Outcome::Reset => reset += 1,
            o => panic!(
                "a kept-alive connection gave {o:?} (after {:?})",
                t.elapsed()
            ),
        }
    }
    assert_eq!(
        reset as u64, on_victim,
        "connections on the dead member should be reset"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "reset connections took {:?}",
        t.elapsed()
    );

    // The supervisor brings it back and it rejoins.
    let st = site.wait_until(
        "web",
        "web-2 restarted and healthy",
        Duration::from_secs(15),
        |st| {
            members(st).iter().any(|m| {
                m["name"] == "web-2"
                    && m["restarts"].as_u64() >= Some(1)
                    && m["health"] == "healthy"
            })
        },
    );
    let new_pid = st["members"][1]["pid"].as_u64().unwrap_or(0);
    assert_ne!(new_pid as i32, pid, "{st}");
    let before = site.member("web", "web-2")["connections"]
        .as_u64()
        .unwrap_or(0);
    let ok = site.clients(1, |_| {
        (0..300)
            .filter(|_| {
                matches!(
                    get_once(vip(80), Duration::from_secs(5)),
                    Outcome::Status(200)
                )
            })
            .count()
    })[0];
    assert_eq!(ok, 300);
    let after = site.member("web", "web-2")["connections"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after > before,
        "the restarted member got no new connections ({before} -> {after})"
    );
}

#[test]
fn drained_member_finishes_keepalive_requests_and_gets_no_new_ones() {
    let _serial = nic::serial();
    if !nic::need_root("drained_member_finishes_keepalive_requests_and_gets_no_new_ones") {
        return;
    }
    let site = ClusterSite::start();
    site.up("web.toml", &httpd_cluster("web", 3, ""));
    let mut conns = site.keepalives(vip(80), 18);
    assert!(site.member("web", "web-1")["active"].as_u64().unwrap_or(0) > 0);
    site.daemon.ctl_ok(&["cluster", "drain", "web", "web-1"]);
    site.wait_until("web", "web-1 weight 0", Duration::from_secs(5), |st| {
        st["nat_counters"]["generation"].as_u64() >= Some(2)
    });
    let drained_before = site.member("web", "web-1")["connections"]
        .as_u64()
        .unwrap_or(0);
    for k in &mut conns {
        for _ in 0..5 {
            let o = k.get();
            assert!(
                matches!(o, Outcome::Status(200)),
                "a kept-alive request after the drain gave {o:?}"
            );
        }
    }
    let ok = site.clients(2, |_| {
        (0..150)
            .filter(|_| {
                matches!(
                    get_once(vip(80), Duration::from_secs(5)),
                    Outcome::Status(200)
                )
            })
            .count()
    });
    assert_eq!(ok.iter().sum::<usize>(), 300);
    let st = site.status("web");
    let c = connections(&st);
    assert_eq!(
        c[0].1, drained_before,
        "the drained member got new connections: {c:?}"
    );
    assert!(c[1].1 + c[2].1 >= 300 + 18 - drained_before, "{c:?}");
    assert_eq!(st["members"][0]["weight"], 0, "{st}");

    // Weight back: it takes new connections again.
    site.daemon
        .ctl_ok(&["cluster", "weight", "web", "web-1", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    site.clients(1, |_| {
        for _ in 0..100 {
            assert!(matches!(
                get_once(vip(80), Duration::from_secs(5)),
                Outcome::Status(200)
            ));
        }
    });
    let after = site.member("web", "web-1")["connections"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after > drained_before + 20,
        "web-1 at weight 2 got {} of 100",
        after - drained_before
    );
}

/// An IPv4 frame from `src` (MAC and address) to the VIP with `l4` as its payload,
/// `proto`, the fragment field `frag` and the IPv4 total length `total` (whatever the
/// payload's real length: a lie makes the frame malformed).
fn raw_frame(
    src_mac: [u8; 6],
    src: [u8; 4],
    proto: u8,
    frag: u16,
    l4: &[u8],
    total: Option<u16>,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&docknet::abi::MASTER_MAC);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = total.unwrap_or(20 + l4.len() as u16);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[10, 88, 0, 100]);
    f.extend_from_slice(l4);
    f
}

#[test]
fn full_table_refuses_new_flows_and_bad_frames_are_counted() {
    let _serial = nic::serial();
    if !nic::need_root("full_table_refuses_new_flows_and_bad_frames_are_counted") {
        return;
    }
    let site = ClusterSite::start();
    site.up("web.toml", &httpd_cluster("web", 2, "conn_capacity = 16"));
    let mut held = site.keepalives(vip(80), 16);
    // The 17th: the NAT answers its SYN with a reset.
    let refused = site
        .clients(1, |_| get_once(vip(80), Duration::from_secs(3)))
        .pop()
        .expect("one thread");
    assert!(
        matches!(
            refused,
            Outcome::ConnectFailed(std::io::ErrorKind::ConnectionRefused)
        ),
        "a 17th connection to a full table should be refused at once, got {refused:?}"
    );
    for k in &mut held {
        assert!(
            matches!(k.get(), Outcome::Status(200)),
            "an established flow stopped working"
        );
    }
    let st = site.status("web");
    let counters = &st["nat_counters"]["counters"];
    assert!(counters["refused_table_full"].as_u64() >= Some(1), "{st}");
    assert_eq!(st["nat_counters"]["flows"], 16, "{st}");

    // Malformed frames and fragments to the VIP, from a service's pipe (the master drops
    // such frames arriving from the NIC itself).
    let dir = site.daemon.create_pipe("prober", "10.88.0.77/16", &[]);
    let mut end = docknet::pipe::ServicePipeEnd::attach(&dir).expect("attach prober");
    let (mac, src) = (end.info.mac, end.info.ipv4.octets());
    let tcp_head = |flags: u8| {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    };
    let mut frames = Vec::new();
    for _ in 0..5 {
        // A first fragment (MF) and a later one (offset), both TCP to port 80.
        frames.push((
            "fragment",
            raw_frame(mac, src, 6, 0x2000, &tcp_head(0x02), None),
        ));
        frames.push(("fragment", raw_frame(mac, src, 6, 0x0010, &[0u8; 24], None)));
        // TCP with a 10-byte header (truncated), and with a data offset past the packet.
        frames.push((
            "malformed",
            raw_frame(mac, src, 6, 0, &tcp_head(0x02)[..10], None),
        ));
        let mut bad_off = tcp_head(0x02);
        bad_off[12] = 15 << 4;
        frames.push(("malformed", raw_frame(mac, src, 6, 0, &bad_off, None)));
    }
    for (_, f) in &frames {
        assert!(end.tx.send_copy(f), "prober ring full");
    }
    end.tx.flush();
    let st = site.wait_until(
        "web",
        "fragments and malformed frames counted",
        Duration::from_secs(5),
        |st| {
            let c = &st["nat_counters"]["counters"];
            c["fragments"].as_u64() >= Some(10) && c["malformed"].as_u64() >= Some(10)
        },
    );
    eprintln!("[cluster] NAT counters: {}", st["nat_counters"]["counters"]);
    for k in &mut held {
        assert!(
            matches!(k.get(), Outcome::Status(200)),
            "the NAT stopped serving after bad frames"
        );
    }
}

#[test]
fn udp_vip_balances_datagrams_by_flow() {
    let _serial = nic::serial();
    if !nic::need_root("udp_vip_balances_datagrams_by_flow") {
        return;
    }
    let site = ClusterSite::start();
    let file = format!(
        r#"name = "dns"
vip = "{VIP}:7/udp"
replicas = 4
policy = "maglev"
binary = "{}"
args = ["udp-echo", "--port", "7"]
subnet = "10.88.1.0/24"
health = {{ kind = "tcp", port = 7, interval_ms = 200 }}
"#,
        bin_path("dn-echo")
    );
    site.up("dns.toml", &file);
    const FLOWS: usize = 40;
    let answers: Vec<Vec<String>> = site
        .clients(1, |_| {
            // All sockets bound before the first is used and kept to the end: a socket
            // closed early could hand its port to a later one, making two "flows" one
            // (CI saw 39 NAT flows for 40 sockets that way).
            let sockets: Vec<std::net::UdpSocket> = (0..FLOWS)
                .map(|_| std::net::UdpSocket::bind("0.0.0.0:0").expect("bind"))
                .collect();
            sockets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    (0..5)
                        .map(|j| {
                            let msg = format!("flow {i} datagram {j}");
                            let mut buf = [0u8; 256];
                            // A lost datagram is sent again (UDP; the first may race the NAT's
                            // table); an answer tells which member echoed it.
                            for _ in 0..3 {
                                s.send_to(msg.as_bytes(), vip(7)).expect("send");
                                if let Ok((n, from)) = s.recv_from(&mut buf) {
                                    assert_eq!(from, vip(7), "the answer should come from the VIP");
                                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                                    let (member, echoed) = text.split_once(' ').expect("IP prefix");
                                    assert_eq!(echoed, msg);
                                    return member.to_string();
                                }
                            }
                            panic!("no answer to {msg:?}");
                        })
                        .collect()
                })
                .collect()
        })
        .pop()
        .expect("one thread");
    let mut by_member = std::collections::BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.iter().all(|m| m == &a[0]),
            "flow {i} was answered by several members: {a:?}"
        );
        *by_member.entry(a[0].clone()).or_insert(0) += 1;
    }
    eprintln!("[cluster] UDP flows per member: {by_member:?}");
    assert!(
        by_member.len() >= 3,
        "{FLOWS} flows reached only {by_member:?}"
    );
    let st = site.status("dns");
    let total: u64 = connections(&st).iter().map(|(_, n)| n).sum();
    assert_eq!(
        total, FLOWS as u64,
        "the NAT should count one flow per source port: {st}"
    );
}

#[test]
fn image_members_run_as_runc_containers_and_spread() {
    let _serial = nic::serial();
    if !nic::need_root("image_members_run_as_runc_containers_and_spread") {
        return;
    }
    let have_runc = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_runc {
        eprintln!("SKIPPED image_members_run_as_runc_containers_and_spread: runc missing (apt-get install runc)");
        return;
    }
    let binary = docknet_tests::image::build_minimal_httpd();
    let site = ClusterSite::start();
    let layout = site.dir.path().join("oci");
    docknet_tests::image::build_image(&binary, "web:1", &layout);
    // The image is named relative to the cluster file.
    let file = format!(
        r#"name = "img"
vip = "{VIP}:80"
replicas = 4
image = "oci"
tag = "web:1"
args = ["--port", "80", "--backlog", "256"]
subnet = "10.88.1.0/24"
health = {{ kind = "http", path = "/", interval_ms = 200 }}
"#
    );
    site.up("img.toml", &file);
    // Each member is a runc container: its pid (runc's) has a child in other namespaces.
    for m in members(&site.status("img")) {
        let pid = m["pid"].as_u64().expect("pid");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        assert!(
            exe.to_string_lossy().contains("runc"),
            "{} runs {}, not runc",
            m["name"],
            exe.display()
        );
    }
    const REQUESTS: usize = 10_000;
    let bad: Vec<_> = site
        .clients(4, |i| {
            (i..REQUESTS)
                .step_by(4)
                .filter_map(|_| match get_once(vip(80), Duration::from_secs(5)) {
                    Outcome::Status(200) => None,
                    o => Some(o),
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
    assert!(
        bad.is_empty(),
        "failed requests: {:?}",
        &bad[..bad.len().min(20)]
    );
    let c = connections(&site.status("img"));
    eprintln!("[cluster] image members, spread: {c:?}");
    let total: u64 = c.iter().map(|(_, n)| n).sum();
    assert!(total >= REQUESTS as u64, "{c:?}");
    for (name, n) in &c {
        let even = total as f64 / 4.0;
        assert!(
            (*n as f64 - even).abs() <= 0.2 * even,
            "{name}: {n}, even {even:.0}: {c:?}"
        );
    }
    site.daemon.ctl_ok(&["cluster", "down", "img"]);
}

#[test]
fn members_survive_a_docknetd_restart_and_are_readopted() {
    let _serial = nic::serial();
    if !nic::need_root("members_survive_a_docknetd_restart_and_are_readopted") {
        return;
    }
    let mut site = ClusterSite::start();
    site.up("web.toml", &httpd_cluster("web", 2, ""));
    let before = site.status("web");
    let pids: Vec<u64> = members(&before)
        .iter()
        .map(|m| m["pid"].as_u64().unwrap_or(0))
        .collect();
    let nat_pid = before["nat"]["pid"].as_u64().unwrap_or(0);
    let mut conn = site.keepalives(vip(80), 1).pop().expect("one");
    site.daemon.restart(&[]);
    let after = site.status("web");
    let pids_after: Vec<u64> = members(&after)
        .iter()
        .map(|m| m["pid"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        pids, pids_after,
        "members should be re-adopted, not restarted: {after}"
    );
    assert_eq!(
        after["nat"]["pid"].as_u64().unwrap_or(0),
        nat_pid,
        "{after}"
    );
    assert!(
        matches!(conn.get(), Outcome::Status(200)),
        "a connection through the NAT broke across the restart"
    );
    // Still supervised: a member killed now is restarted by the new docknetd.
    // SAFETY: kill(2) on a member pid read from cluster status.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    site.wait_until(
        "web",
        "web-1 restarted by the new docknetd",
        Duration::from_secs(15),
        |st| {
            st["members"][0]["restarts"].as_u64() >= Some(1)
                && st["members"][0]["health"] == "healthy"
        },
    );
}

#[test]
fn scale_adds_and_removes_members_without_touching_other_flows() {
    let _serial = nic::serial();
    if !nic::need_root("scale_adds_and_removes_members_without_touching_other_flows") {
        return;
    }
    let site = ClusterSite::start();
    site.up("web.toml", &httpd_cluster("web", 3, ""));
    let mut conns = site.keepalives(vip(80), 24);
    // Only the kept-alive flows are in the table yet: web-3's share of them.
    let on_web3 = site.member("web", "web-3")["active"].as_u64().unwrap_or(0);
    site.daemon.ctl_ok(&["cluster", "scale", "web", "4"]);
    site.wait_until("web", "web-4 healthy", Duration::from_secs(15), |st| {
        members(st).len() == 4 && members(st).iter().all(|m| m["health"] == "healthy")
    });
    for k in &mut conns {
        assert!(
            matches!(k.get(), Outcome::Status(200)),
            "a flow broke when a member was added"
        );
    }
    site.clients(1, |_| {
        for _ in 0..200 {
            assert!(matches!(
                get_once(vip(80), Duration::from_secs(5)),
                Outcome::Status(200)
            ));
        }
    });
    let web4 = site.member("web", "web-4")["connections"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        web4 >= 20,
        "the new member got {web4} of 200 new connections"
    );

    // Down to 2: web-3 and web-4 go; flows on web-1 and web-2 go on, theirs are reset
    // (the kept-alive connections were made before web-4 existed).
    let on_gone = on_web3;
    site.daemon.ctl_ok(&["cluster", "scale", "web", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    let (mut ok, mut reset) = (0, 0);
    for k in &mut conns {
        match k.get() {
            Outcome::Status(200) => ok += 1,
            Outcome::Reset => reset += 1,
            o => panic!("a flow gave {o:?} after scaling down"),
        }
    }
    eprintln!("[cluster] after scale 4 -> 2: {ok} flows went on, {reset} were reset (web-3 had {on_gone})");
    assert!(ok > 0, "no kept-alive flow was on web-1 or web-2");
    assert_eq!(
        reset as u64, on_gone,
        "only the removed member's flows should be reset"
    );
    let st = site.status("web");
    assert_eq!(members(&st).len(), 2, "{st}");
    let ls = site.daemon.ctl_ok(&["pipe", "ls"]);
    assert!(!ls.contains("web-3") && !ls.contains("web-4"), "{ls}");
}

#[test]
fn fullnat_members_reply_to_the_nat() {
    let _serial = nic::serial();
    if !nic::need_root("fullnat_members_reply_to_the_nat") {
        return;
    }
    let site = ClusterSite::start();
    let file = httpd_cluster("web", 2, "mode = \"fullnat\"").replace("\"maglev\"", "\"rr\"");
    site.up("web.toml", &file);
    let fcs = site.daemon.ctl_ok(&["fc", "ls", "--json"]);
    assert!(
        !fcs.contains("\"forward\":true"),
        "full NAT needs no forwarding: {fcs}"
    );
    site.clients(2, |_| {
        for _ in 0..500 {
            let o = get_once(vip(80), Duration::from_secs(5));
            assert!(matches!(o, Outcome::Status(200)), "{o:?}");
        }
    });
    let c = connections(&site.status("web"));
    // Round robin: an even split.
    assert_eq!(c.iter().map(|(_, n)| n).sum::<u64>(), 1000, "{c:?}");
    assert!(c.iter().all(|(_, n)| (490..=510).contains(n)), "{c:?}");
}

/// Binaries other users may run (the build tree may be private to root).
fn public_copy(dir: &std::path::Path, names: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for b in names {
        let to = dir.join(b);
        std::fs::copy(docknet_tests::bin(b), &to).expect("copy binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn members_run_as_the_owner() {
    let _serial = nic::serial();
    if !nic::need_root("members_run_as_the_owner") {
        return;
    }
    let site = ClusterSite::start();
    public_copy(site.dir.path(), &["dn-httpd", "dn-nat"]);
    let file = format!(
        r#"name = "web"
vip = "{VIP}:80"
replicas = 2
binary = "dn-httpd"
nat_binary = "dn-nat"
subnet = "10.88.1.0/24"
health = {{ kind = "http", path = "/", interval_ms = 200 }}
"#
    );
    let path = site.dir.path().join("web.toml");
    std::fs::write(&path, file).expect("write");
    let p = path.display().to_string();
    site.daemon
        .ctl_ok(&["cluster", "up", &p, "--owner", "65534:65534"]);
    let st = site.status("web");
    for m in members(&st).iter().chain(std::iter::once(&st["nat"])) {
        let pid = m["pid"].as_u64().expect("pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{} runs as {uid}",
            m["name"]
        );
    }
    site.clients(1, |_| {
        for _ in 0..50 {
            assert!(matches!(
                get_once(vip(80), Duration::from_secs(5)),
                Outcome::Status(200)
            ));
        }
    });
}
