//! docknetd restarts without dropping a connection (the tenant-safety issue): SIGTERM
//! leaves pipes, fast channels and services in place; a docknetd started on the same run
//! directory re-adopts them with their settings, and TCP through the master survives the
//! gap (retransmission covers it). `docknetctl shutdown --remove-all` removes everything.

use std::io::Read;
use std::time::Duration;

use docknet_tests::{counter, Daemon};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// What `pipe ls` / `fc ls` say, minus what may change across a restart (pids).
fn settings(v: &[Value], keys: &[&str]) -> Vec<Vec<Value>> {
    v.iter()
        .map(|p| keys.iter().map(|k| p[*k].clone()).collect())
        .collect()
}

#[test]
fn an_echo_through_the_master_survives_a_restart_and_settings_are_kept() {
    let mut d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    // b's limit stretches the transfer below over ~1.5 s, so the restart falls inside it
    // (and shows the limit survives the restart).
    d.create_pipe("b", "10.88.0.3/16", &["--rate-mbps", "1000"]);
    d.create_pipe("nat", "10.88.0.10/16", &["--forwarder"]);
    d.create_pipe("x", "10.88.0.4/16", &[]);
    d.create_pipe("y", "10.88.0.5/16", &[]);
    d.ctl_ok(&["fc", "create", "x", "y"]);
    d.ctl_ok(&["fc", "create", "nat", "x", "--forward"]);
    let pipe_keys = ["name", "ip", "mac", "mtu", "rate_mbps", "forwarder", "dir"];
    let fc_keys = ["a", "b", "mtu", "forward", "path"];
    let (pipes_before, fcs_before) = (
        settings(&d.list("pipe"), &pipe_keys),
        settings(&d.list("fc"), &fc_keys),
    );

    let mut server = d.echo_server("a", 7);
    let mut fc_server = d.echo_server("x", 7);
    // 12 x 16 MiB echoed at 1 Gbit/s: ~1.6 s.
    let mut client = d.echo_client_in_background("b", "10.88.0.2:7", 16 << 20, 12);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        client.guard.alive(),
        "the transfer ended before the restart: {}",
        client.guard.log_tail()
    );
    d.restart(&[]);

    let (st, json, log) = client.finish(Duration::from_secs(120));
    assert!(
        st.is_some_and(|s| s.success()),
        "16 MiB x 12 echo across a docknetd restart failed ({st:?}):\n{json}\n{log}\ndocknetd log:\n{}",
        d.log_tail()
    );
    eprintln!("[restart] echo across the restart: {}", json.trim());
    // The new daemon carried part of it.
    let stats = d.stats(Some("b"));
    assert!(counter(&stats, "b", "tx_bytes") > 0, "{stats}");
    assert!(
        server.alive() && fc_server.alive(),
        "a service died in the restart"
    );

    assert_eq!(settings(&d.list("pipe"), &pipe_keys), pipes_before);
    assert_eq!(settings(&d.list("fc"), &fc_keys), fcs_before);
    let human = d.ctl_ok(&["pipe", "ls"]);
    assert!(human.contains("1000"), "rate limit lost:\n{human}");

    // The fast channel goes on bypassing the master.
    let before = d.stats(None);
    d.echo_ok("y", "10.88.0.4:7", MIB, 16, Duration::from_secs(60));
    let after = d.stats(None);
    let through_master = counter(&after, "y", "tx_bytes") - counter(&before, "y", "tx_bytes");
    assert!(
        through_master < MIB as u64,
        "after the restart the fast channel is not used: the master carried {through_master} B"
    );
    // And through the master again.
    d.echo_ok("b", "10.88.0.2:7", MIB, 4, Duration::from_secs(60));
}

/// A tenant that rewrites its pipe header while no docknetd runs (here: its address)
/// does not get that address: the new docknetd sees the header disagree with its state
/// file and makes the pipe anew; every other pipe is re-adopted as it was.
#[test]
fn a_header_rewritten_during_the_restart_is_not_trusted() {
    let mut d = Daemon::start();
    d.create_pipe("h1", "10.88.0.2/16", &[]);
    d.create_pipe("h2", "10.88.0.3/16", &[]);
    d.create_pipe("t", "10.88.0.6/16", &[]);
    let _server = d.echo_server("h1", 7);
    let file = d.pipe_dir("t").join("pipe.map");
    d.restart_with(&[], || {
        // Claim h1's address in the header.
        let at = core::mem::offset_of!(docknet::abi::PipeHeader, ipv4);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[at..at + 4].copy_from_slice(&[10, 88, 0, 2]);
        std::fs::write(&file, &bytes).unwrap();
    });
    let t = d.pipe_entry("t");
    assert_eq!(t["ip"], "10.88.0.6/16", "{t}");
    assert!(
        d.log_tail().contains("cannot re-adopt"),
        "the new docknetd should say why it made t anew:\n{}",
        d.log_tail()
    );
    d.echo_ok("h2", "10.88.0.2:7", 65536, 8, Duration::from_secs(60));
}

/// `docknetctl shutdown --remove-all` stops every service (its pipe is removed) and
/// leaves nothing behind; plain `shutdown` keeps them, like SIGTERM.
#[test]
fn shutdown_keeps_or_removes_as_asked() {
    let mut d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    let mut server = d.echo_server("a", 7);
    let out = d.ctl_ok(&["shutdown"]);
    assert!(out.contains("left for the next docknetd"), "{out}");
    assert!(server.alive(), "plain shutdown stopped the service");
    assert!(d.pipe_dir("a").join("pipe.map").exists());
    d.restart(&[]); // the process already exited: restart() just starts anew
    assert_eq!(d.list("pipe").len(), 1);

    let out = d.ctl_ok(&["shutdown", "--remove-all"]);
    assert!(out.contains("every pipe removed"), "{out}");
    let st = server.wait_timeout(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.code() == Some(1)),
        "the service should stop (exit 1) when its pipe is removed: {st:?} {}",
        server.log_tail()
    );
    assert!(
        !d.run_dir.join("pipes").exists(),
        "the run directory was not cleaned up"
    );
    let err = d.ctl_err(&["pipe", "ls"]);
    assert!(err.contains("not running"), "{err}");
}

/// Through the TAP backend: a kernel TCP stream to a service survives the restart (the
/// TAP is persistent, so the host keeps its address and routes; the new docknetd opens
/// the same TAP), and the host reaches the service afterwards. Needs root.
#[test]
fn a_kernel_stream_through_the_tap_survives_a_restart() {
    use docknet_tests::nic::{self, Backend, Site, ECHO_PORT, PIPE_IP};
    let _serial = nic::serial();
    if !nic::need_root("a_kernel_stream_through_the_tap_survives_a_restart") {
        return;
    }
    let mut site = Site::start(Backend::Tap);
    let _echo = site.echo_service();
    let to = format!("{PIPE_IP}:{ECHO_PORT}");
    let mut c = site
        .client_ns()
        .command(docknet_tests::bin("docknet-bench"));
    c.args([
        "kernel-echo-client",
        "--to",
        &to,
        "--size",
        "1048576",
        "--count",
        "600",
        "--json",
    ])
    .stdout(std::process::Stdio::piped());
    let (mut client, stdout) = docknet_tests::ChildGuard::spawn(
        &mut c,
        "kernel-echo-client",
        Some(site.daemon.run_dir.join("kernel-echo-client.log")),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(client.alive(), "the kernel stream ended before the restart");
    let tap = site.iface.clone();
    let index_before = site.host.ip_show(&["-o", "link", "show", "dev", &tap]);
    site.daemon.restart(&[]);
    let st = client.wait_timeout(Duration::from_secs(120));
    let mut out = String::new();
    if let (Some(_), Some(mut o)) = (st, stdout) {
        let _ = o.read_to_string(&mut out);
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "the kernel's 600 MiB echo through the TAP did not survive the restart ({st:?}): {out} {}\ndocknetd log:\n{}",
        client.log_tail(),
        site.daemon.log_tail()
    );
    eprintln!("[restart tap] {}", out.trim());
    let index_after = site.host.ip_show(&["-o", "link", "show", "dev", &tap]);
    assert_eq!(
        index_before.split(':').next(),
        index_after.split(':').next(),
        "the TAP was re-created, not re-opened:\n{index_before}\n{index_after}"
    );
    site.kernel_echo(65536, 10, Duration::from_secs(30));
}
