//! Bad commands get a one-line error and a non-zero exit; the daemon survives them, and
//! survives garbage written straight into its control socket. A pipe whose service was
//! SIGKILLed can be removed and created again.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use docknet_tests::Daemon;
use serde_json::Value;

/// Every string (keys and values) in a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

fn assert_pipes(d: &Daemon, want: &[&str], not: &[&str]) {
    let out = d.ctl_ok(&["pipe", "ls", "--json"]);
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("pipe ls --json is not JSON ({e}): {out}"));
    let mut s = Vec::new();
    strings(&v, &mut s);
    for w in want {
        assert!(
            s.iter().any(|x| x == w),
            "pipe ls --json lacks pipe {w}: {out}"
        );
    }
    for n in not {
        assert!(
            !s.iter().any(|x| x == n),
            "pipe ls --json lists pipe {n} that should not exist: {out}"
        );
    }
}

/// Send `bytes` on a fresh control connection and read the first reply line.
fn raw_request(d: &Daemon, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(d.socket()).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).expect("write control socket");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.contains(&b'\n') {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no reply to {:?} within 5 s: {e}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn control_errors() {
    let mut d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);

    let cases: &[(&str, &[&str])] = &[
        (
            "duplicate pipe name",
            &["pipe", "create", "a", "--ip", "10.88.0.9/16"],
        ),
        (
            "duplicate IP",
            &["pipe", "create", "c", "--ip", "10.88.0.2/16"],
        ),
        ("bad IP", &["pipe", "create", "c", "--ip", "10.88.0.300/16"]),
        ("bad IP", &["pipe", "create", "c", "--ip", "not-an-ip/16"]),
        (
            "bad prefix",
            &["pipe", "create", "c", "--ip", "10.88.0.9/33"],
        ),
        (
            "bad prefix",
            &["pipe", "create", "c", "--ip", "10.88.0.9/x"],
        ),
        (
            "bad MTU",
            &[
                "pipe",
                "create",
                "c",
                "--ip",
                "10.88.0.9/16",
                "--mtu",
                "100",
            ],
        ),
        ("unknown pipe rm", &["pipe", "rm", "nosuch"]),
        ("fc with unknown pipe", &["fc", "create", "a", "nosuch"]),
        ("fc with unknown pipe", &["fc", "create", "nosuch", "b"]),
        ("stats of unknown pipe", &["stats", "nosuch", "--json"]),
        ("rate limit 0", &["rate", "set", "a", "0"]),
        ("rate limit not a number", &["rate", "set", "a", "fast"]),
        ("rate limit too high", &["rate", "set", "a", "1000001"]),
        ("rate of unknown pipe", &["rate", "set", "nosuch", "10"]),
        (
            "pipe with rate limit 0",
            &[
                "pipe",
                "create",
                "c",
                "--ip",
                "10.88.0.9/16",
                "--rate-mbps",
                "0",
            ],
        ),
    ];
    for (what, args) in cases {
        let line = d.ctl_err(args);
        eprintln!("[ctl] {what}: {line}");
        assert!(
            d.alive(),
            "docknetd died on {what} ({args:?}):\n{}",
            d.log_tail()
        );
    }
    assert_pipes(&d, &["a", "b"], &["c", "nosuch"]);

    // Garbage straight into the control socket gets an error reply.
    for garbage in [
        &b"this is not json\n"[..],
        b"{\"cmd\": \"no-such-command\"}\n",
        b"{}\n",
        b"[1,2,\n",
        b"\xff\xfe\x00\n",
    ] {
        let reply = raw_request(&d, garbage);
        eprintln!("[sock] {:?} -> {reply}", String::from_utf8_lossy(garbage));
        assert!(
            !reply.is_empty(),
            "no reply to {:?}",
            String::from_utf8_lossy(garbage)
        );
        assert!(
            reply.to_lowercase().contains("err"),
            "reply to garbage does not report an error: {reply}"
        );
        assert!(
            d.alive(),
            "docknetd died on garbage {:?}:\n{}",
            String::from_utf8_lossy(garbage),
            d.log_tail()
        );
    }
    // A connection that closes at once, and one that sends a megabyte without a newline.
    drop(UnixStream::connect(d.socket()).expect("connect"));
    {
        let mut s = UnixStream::connect(d.socket()).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&vec![b'x'; 1 << 20]);
    }
    assert!(
        d.alive(),
        "docknetd died on a closed / oversized request:\n{}",
        d.log_tail()
    );
    // A client that sends half a request and stalls must not block other clients.
    let mut stalled = UnixStream::connect(d.socket()).expect("connect");
    stalled.write_all(b"{\"cmd\":").expect("write");
    assert_pipes(&d, &["a", "b"], &["c"]);
    drop(stalled);

    // A service attached to a pipe dies by SIGKILL; the pipe can be removed and created
    // again under the same name and address, and works.
    d.create_pipe("k", "10.88.0.20/16", &[]);
    let mut victim = d.echo_server("k", 9);
    victim.signal(libc::SIGKILL);
    assert!(
        victim.wait_timeout(Duration::from_secs(5)).is_some(),
        "SIGKILLed dn-echo did not exit"
    );
    d.ctl_ok(&["pipe", "rm", "k"]);
    assert_pipes(&d, &["a", "b"], &["k"]);
    d.create_pipe("k", "10.88.0.20/16", &[]);
    let _server = d.echo_server("k", 9);
    d.echo_ok("b", "10.88.0.20:9", 1460, 5, Duration::from_secs(60));
    assert!(d.alive(), "docknetd died:\n{}", d.log_tail());
}
