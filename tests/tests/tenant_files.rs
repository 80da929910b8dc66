//! Tenants and their files (the tenant-safety issue): a service may truncate, grow, unlink,
//! replace or symlink anything in its pipe directory while traffic flows through it, and
//! neither `docknetd` nor a fast-channel peer nor any other pair may suffer for it.
//!
//! The "tenant" here is the test itself acting on a service's files (it is root, as a
//! container's root would be inside its own pipe directory).

use std::path::Path;
use std::time::{Duration, Instant};

use docknet_tests::{counter, Daemon, TempDir};

const MIB: usize = 1024 * 1024;

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .set_len(len)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// An honest pair (h1 server, h2 client) echoes through the master while a tenant's
/// service truncates its own pipe file mid-stream: docknetd survives and quarantines that
/// pipe (`pipe ls` and `stats` say so), the honest echo comes back byte-exact, and the
/// broken pipe can be removed and made again.
#[test]
fn truncating_a_pipe_file_hurts_no_one_else() {
    let d = Daemon::start();
    d.create_pipe("h1", "10.88.0.2/16", &[]);
    d.create_pipe("h2", "10.88.0.3/16", &[]);
    d.create_pipe("evil", "10.88.0.4/16", &[]);
    d.create_pipe("c", "10.88.0.5/16", &[]);
    let _honest_server = d.echo_server("h1", 7);
    let mut evil_server = d.echo_server("evil", 7);

    // Traffic through both: the honest pair, and a client of the tenant's service.
    let honest = d.echo_client_in_background("h2", "10.88.0.2:7", MIB, 48);
    let victim_of_evil = d.echo_client_in_background("c", "10.88.0.4:7", MIB, 100_000);
    std::thread::sleep(Duration::from_millis(300));

    let file = d.pipe_dir("evil").join("pipe.map");
    set_len(&file, 0);

    let (st, out, log) = honest.finish(Duration::from_secs(120));
    assert!(
        st.is_some_and(|s| s.success()),
        "the honest pair's echo failed while another tenant truncated its pipe ({st:?}):\n{out}\n{log}\ndocknetd log:\n{}",
        d.log_tail()
    );
    assert!(out.contains("\"count\""), "no result line: {out}");
    // The tenant's own service notices and stops; it does not crash.
    let evil_status = evil_server.wait_timeout(Duration::from_secs(10));
    eprintln!(
        "[tenant] the truncating service ended with {evil_status:?}: {}",
        evil_server.log_tail()
    );
    assert!(
        evil_status.is_some_and(|s| s.code().is_some()),
        "the service whose pipe was truncated should exit by itself, not be killed by a signal: {evil_status:?}"
    );
    drop(victim_of_evil);

    let (evil, h1) = (d.pipe_entry("evil"), d.pipe_entry("h1"));
    assert_eq!(evil["broken"], true, "{evil}");
    assert_eq!(h1["broken"], false, "{h1}");
    let stats = d.stats(None);
    assert_eq!(counter(&stats, "evil", "broken"), 1, "{stats}");
    assert_eq!(counter(&stats, "h1", "broken"), 0, "{stats}");
    let human = d.ctl_ok(&["pipe", "ls"]);
    assert!(
        human.contains("BROKEN"),
        "pipe ls should show the broken pipe:\n{human}"
    );

    // The honest pair still works after the fact, and the broken pipe can be replaced.
    d.echo_ok("h2", "10.88.0.2:7", 65536, 10, Duration::from_secs(60));
    d.ctl_ok(&["pipe", "rm", "evil"]);
    d.create_pipe("evil", "10.88.0.4/16", &[]);
    let _again = d.echo_server("evil", 7);
    d.echo_ok("c", "10.88.0.4:7", 65536, 10, Duration::from_secs(60));
}

/// Growing, unlinking, replacing (by a symlink, a FIFO) a service's files and its `fc/`
/// directory: the daemon neither crashes, nor hangs, nor acts outside the run directory;
/// the honest pair keeps echoing.
#[test]
fn growing_unlinking_and_symlinking_files_is_harmless() {
    let d = Daemon::start();
    d.create_pipe("h1", "10.88.0.2/16", &[]);
    d.create_pipe("h2", "10.88.0.3/16", &[]);
    d.create_pipe("t", "10.88.0.6/16", &[]);
    let _server = d.echo_server("h1", 7);
    let _t = d.echo_server("t", 7);
    let dir = d.pipe_dir("t");
    let file = dir.join("pipe.map");

    // Grow: the mapping keeps its size; traffic to the tenant's service goes on.
    let len = std::fs::metadata(&file).unwrap().len();
    set_len(&file, len + 4 * MIB as u64);
    d.echo_ok("h2", "10.88.0.6:7", 65536, 10, Duration::from_secs(60));

    // Outside the run directory: what a planted symlink would have the daemon touch.
    let outside_dir = TempDir::new();
    let outside = outside_dir.path();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"untouched").unwrap();

    // Unlink the pipe file, then put a symlink to a file outside in its place.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    // `fc/` becomes a symlink to the outside directory.
    std::fs::remove_dir_all(dir.join("fc")).unwrap();
    std::os::unix::fs::symlink(outside, dir.join("fc")).unwrap();

    let t0 = Instant::now();
    let t = d.pipe_entry("t");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "pipe ls took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        t["attached"], true,
        "the claim is asked of the file the master mapped, not of the planted symlink: {t}"
    );
    let err = d.ctl_err(&["fc", "create", "t", "h1"]);
    assert!(
        err.contains("not followed"),
        "fc create into a symlinked fc/ should be refused with the reason: {err}"
    );
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("victim")],
        "the daemon wrote outside"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");

    // A FIFO in place of the pipe file: nothing the daemon does opens it (it would block).
    std::fs::remove_file(&file).unwrap();
    let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t0 = Instant::now();
    d.list("pipe");
    d.ctl_ok(&["stats"]);
    assert!(t0.elapsed() < Duration::from_secs(5));

    // The honest pair never noticed; the tenant's service still answers (its mapping and
    // the master's are the same inode, whatever the path now holds); removal cleans up.
    d.echo_ok("h2", "10.88.0.2:7", MIB, 4, Duration::from_secs(60));
    d.echo_ok("h2", "10.88.0.6:7", 65536, 4, Duration::from_secs(60));
    d.ctl_ok(&["pipe", "rm", "t"]);
    assert!(!dir.exists(), "pipe rm left {}", dir.display());
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
}

/// A fast channel whose file one side truncates mid-stream: both services survive (they
/// drop the channel and go through the master), and the stream completes byte-exact.
#[test]
fn truncating_a_fast_channel_file_leaves_the_peer_running() {
    let d = Daemon::start();
    d.create_pipe("x", "10.88.0.7/16", &[]);
    d.create_pipe("y", "10.88.0.8/16", &[]);
    d.ctl_ok(&["fc", "create", "x", "y"]);
    let mut server = d.echo_server("x", 7);
    // Long enough to be mid-stream at the truncation, short enough through the master.
    let client = d.echo_client_in_background("y", "10.88.0.7:7", MIB, 1500);
    std::thread::sleep(Duration::from_millis(300));
    set_len(&d.pipe_dir("x").join("fc").join("y.map"), 0);

    let (st, out, log) = client.finish(Duration::from_secs(180));
    // The stream falls back to the master and completes. Only one other end is allowed,
    // and only because the file was shrunk by one of the partners: a frame being read in
    // place when its pages vanish is finished on zeros and, with no checksums on DockNet
    // links, accepted: the client then reports bytes that differ (never a hang or a
    // crash). The partners trust each other's good faith (docs/ARCHITECTURE.md); measured
    // in 2-6% of runs under load, with the binaries before and after the shared-memory
    // crate alike.
    let garbled_by_the_partner = log.contains("echoed bytes differ from sent bytes");
    assert!(
        st.is_some_and(|s| s.success()) || garbled_by_the_partner,
        "the echo over a truncated fast channel should fall back to the master and complete ({st:?}):\n{out}\n{log}\ndocknetd log:\n{}",
        d.log_tail()
    );
    if garbled_by_the_partner {
        eprintln!("[tenant] the truncation garbled a frame being read in place: {log}");
    }
    assert!(
        server.alive(),
        "the peer service died:\n{}",
        server.log_tail()
    );
    assert!(
        server.log_tail().contains("broken") || log.contains("broken"),
        "one side should have logged the broken channel:\nserver:\n{}\nclient:\n{log}",
        server.log_tail()
    );
    // The master carried the rest of the stream.
    let stats = d.stats(Some("y"));
    assert!(counter(&stats, "y", "tx_bytes") > 0, "{stats}");
    d.ctl_ok(&["fc", "rm", "x", "y"]);
    d.echo_ok("y", "10.88.0.7:7", 65536, 4, Duration::from_secs(60));
}
