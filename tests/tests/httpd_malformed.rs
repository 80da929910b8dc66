//! dn-httpd (issue 4) against a corpus of malformed and hostile requests, sent as raw
//! bytes over TCP from the host kernel (a socket made inside the TAP's namespace): each
//! gets the right status (or a closed connection), slow senders are cut off after the
//! header timeout, and the server keeps serving other clients throughout.
//! Needs root (network namespaces, TAP); prints why and passes otherwise.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use docknet_tests::httpd::{connect_in, curl_i, exchange, lossy, read_reply, site_file, HttpdSite};
use docknet_tests::nic;

/// The header timeout dn-httpd runs with here.
const HEADER_TIMEOUT_S: u64 = 2;

/// One case: a name, the bytes (sent in one write), the acceptable statuses, and
/// whether the server must close the connection after answering.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: &'static [u16],
    close: bool,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, want: &'static [u16], close: bool) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        want,
        close,
    }
}

fn corpus() -> Vec<Case> {
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let many_headers = {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
        for i in 0..200 {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s
    };
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(3000));
    // A request line longer than the whole head limit, never terminated.
    let endless_uri = format!("GET /{}", "u".repeat(10 * 1024));
    vec![
        case("method only", "GET\r\n\r\n", &[400], true),
        case("two tokens", "GET /\r\n\r\n", &[400], true),
        case("bad version token", "GET / FOO\r\n\r\n", &[400], true),
        case(
            "four tokens",
            "GET / HTTP/1.1 x\r\nHost: t\r\n\r\n",
            &[400],
            true,
        ),
        // Methods are case-sensitive: "get" is not GET (an unknown method: 400 or 405).
        case(
            "lowercase method",
            "get / HTTP/1.1\r\nHost: t\r\n\r\n",
            &[400, 405],
            true,
        ),
        case("empty line garbage", "\x01\x02\x03\r\n\r\n", &[400], true),
        // Methods we do not serve: 405, and the connection stays open (tests/httpd.rs
        // sends bodies and pipelined requests after them).
        case(
            "POST",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            &[405],
            false,
        ),
        case(
            "DELETE",
            "DELETE / HTTP/1.1\r\nHost: t\r\n\r\n",
            &[405],
            false,
        ),
        // ... but a body whose end cannot be told for sure is 400 and close.
        case(
            "POST, Transfer-Encoding not chunked",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxyz",
            &[400],
            true,
        ),
        case(
            "POST, chunked and Content-Length",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            &[400],
            true,
        ),
        case(
            "POST, two Content-Lengths",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            &[400],
            true,
        ),
        case(
            "POST, chunked on HTTP/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
            true,
        ),
        case(
            "HTTP/2.0",
            "GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            &[505],
            true,
        ),
        case("HTTP/3", "GET / HTTP/3\r\nHost: t\r\n\r\n", &[505], true),
        case("no Host on 1.1", "GET / HTTP/1.1\r\n\r\n", &[400], true),
        case(
            "space before colon",
            "GET / HTTP/1.1\r\nHost : t\r\n\r\n",
            &[400],
            true,
        ),
        case(
            "header without colon",
            "GET / HTTP/1.1\r\nHost: t\r\nbroken\r\n\r\n",
            &[400],
            true,
        ),
        case("huge header (9 KiB)", big_header, &[431], true),
        case("200 headers", many_headers, &[431], true),
        case("URI of 3000 bytes", long_uri, &[414], true),
        case(
            "unterminated 10 KiB request line",
            endless_uri,
            &[414],
            true,
        ),
        case(
            "Content-Length body",
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
            &[413],
            true,
        ),
        case(
            "chunked body",
            "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[413],
            true,
        ),
        case(
            "bad Content-Length",
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
            &[400],
            true,
        ),
        case(
            "NUL in path",
            &b"GET /a\0b HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            &[400],
            true,
        ),
        case(
            "NUL in header",
            &b"GET / HTTP/1.1\r\nHost: t\0\r\n\r\n"[..],
            &[400],
            true,
        ),
        case("NUL before head end", &b"GET / HT\0"[..], &[400], true),
        case(
            "dot-dot path",
            "GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
            &[400, 404],
            true,
        ),
        case(
            "absolute-form junk",
            "GET http://x/ HTTP/1.1\r\nHost: t\r\n\r\n",
            &[400, 404],
            true,
        ),
    ]
}

#[test]
fn httpd_rejects_malformed_requests_and_keeps_serving() {
    let _serial = nic::serial();
    if !nic::need_root("httpd_rejects_malformed_requests_and_keeps_serving") {
        return;
    }
    let ht = HEADER_TIMEOUT_S.to_string();
    let mut s = HttpdSite::start(&["--header-timeout-s", &ht]);
    let ns = s.ns();
    let addr = s.addr();
    let index = site_file("index.html");
    let ok = |label: &str| {
        let r = curl_i(ns, &[&s.url("/")]);
        assert_eq!(r.status, 200, "after {label}: {}", r.head_text());
        assert!(r.body == index, "after {label}: index.html differs");
    };

    for c in corpus() {
        let start = Instant::now();
        let r = exchange(ns, addr, &c.bytes, 1, c.close, Duration::from_secs(5));
        let got = r.statuses();
        assert!(
            got.len() == 1 && c.want.contains(&got[0]),
            "{}: sent {}\nwanted one of {:?}, got {:?} (closed: {})\nreceived: {}\n{}",
            c.name,
            lossy(&c.bytes),
            c.want,
            got,
            r.closed,
            lossy(&r.bytes),
            s.logs()
        );
        if c.close {
            assert!(
                r.closed,
                "{}: the server should close after {}, it kept the connection open",
                c.name, got[0]
            );
        }
        eprintln!(
            "[malformed] {:<34} → {} (closed: {}, {:.0?})",
            c.name,
            r.responses[0].status_line,
            r.closed,
            start.elapsed()
        );
    }
    ok("the corpus");

    // Ranges: bad syntax is ignored (200, full body); past the end is 416.
    let css = site_file("style.css");
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "items=0-5",
        "bytes=0-1,4-5",
        "bytes=",
    ] {
        let req = format!(
            "GET /style.css HTTP/1.1\r\nHost: t\r\nRange: {range}\r\nConnection: close\r\n\r\n"
        );
        let r = exchange(ns, addr, req.as_bytes(), 1, true, Duration::from_secs(5));
        assert_eq!(r.statuses(), [200], "Range: {range}: {}", lossy(&r.bytes));
        assert!(
            r.responses[0].body == css,
            "Range: {range}: not the full body"
        );
        eprintln!("[malformed] Range: {range:<26} → 200, full body");
    }
    let r = exchange(
        ns,
        addr,
        b"GET /style.css HTTP/1.1\r\nHost: t\r\nRange: bytes=999999-\r\n\r\n",
        1,
        false,
        Duration::from_secs(5),
    );
    assert_eq!(r.statuses(), [416], "{}", lossy(&r.bytes));
    assert_eq!(
        r.responses[0].header("content-range"),
        Some(format!("bytes */{}", css.len()).as_str())
    );
    eprintln!("[malformed] Range: bytes=999999-            → 416");

    // Pipelining: two GETs in one write → two responses, in order.
    let r = exchange(
        ns,
        addr,
        b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        2,
        true,
        Duration::from_secs(5),
    );
    assert_eq!(r.statuses(), [200, 200], "pipelined: {}", lossy(&r.bytes));
    assert!(
        r.responses[0].body == site_file("data.json"),
        "1st pipelined body"
    );
    assert!(r.responses[1].body == css, "2nd pipelined body");
    assert!(
        r.closed,
        "Connection: close on the 2nd request should close"
    );
    // A good request followed by a bad one in the same write: 200, then 400 and close.
    let r = exchange(
        ns,
        addr,
        b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\nGET / FOO\r\n\r\n",
        2,
        true,
        Duration::from_secs(5),
    );
    assert_eq!(r.statuses(), [200, 400], "good+bad: {}", lossy(&r.bytes));
    assert!(r.closed);
    // HTTP/1.0 without Host is fine and closes by default.
    let r = exchange(
        ns,
        addr,
        b"GET /data.json HTTP/1.0\r\n\r\n",
        1,
        true,
        Duration::from_secs(5),
    );
    assert_eq!(r.statuses(), [200], "HTTP/1.0: {}", lossy(&r.bytes));
    assert!(r.closed, "HTTP/1.0 without keep-alive should close");
    eprintln!("[malformed] pipelining, good+bad, HTTP/1.0: ok");

    // Slow senders: a partial head, then silence; and one byte every 300 ms. Both must
    // be answered 408 (or closed) after the header timeout, while other clients are
    // served.
    let mut silent = connect_in(ns, addr, Duration::from_secs(5)).expect("connect");
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .expect("write partial head");
    let mut drip = connect_in(ns, addr, Duration::from_secs(5)).expect("connect");
    let drip_thread = std::thread::spawn(move || {
        let head =
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let start = Instant::now();
        let mut sent = 0;
        let mut got = Vec::new();
        let mut closed = false;
        let mut cut_at = None;
        // One byte, then wait up to 300 ms for an answer; stop once the server answered
        // or closed (or after the timeout plus a margin).
        let _ = drip.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = [0u8; 4096];
        for b in head.iter() {
            if drip.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            sent += 1;
            match drip.read(&mut buf) {
                Ok(0) => closed = true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => closed = true,
            }
            if closed || !got.is_empty() {
                cut_at = Some(start.elapsed());
                break;
            }
            if start.elapsed() > Duration::from_secs(HEADER_TIMEOUT_S + 6) {
                break;
            }
        }
        let mut r = read_reply(&mut drip, 1, true, false, Duration::from_secs(3));
        got.extend_from_slice(&r.bytes);
        r.bytes = got;
        r.closed |= closed;
        r.responses = docknet_tests::httpd::parse_response(&r.bytes, false)
            .map(|(x, _)| vec![x])
            .unwrap_or_default();
        (sent, r, cut_at)
    });
    let start = Instant::now();
    // Meanwhile: other clients get 200, several times during the timeout.
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(HEADER_TIMEOUT_S) {
        ok("a slow sender connected");
        served += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = read_reply(
        &mut silent,
        1,
        true,
        false,
        Duration::from_secs(HEADER_TIMEOUT_S + 5),
    );
    let waited = start.elapsed();
    assert!(
        r.closed && (r.responses.is_empty() || r.statuses() == [408]),
        "silent slow sender: expected 408 or a close, got {:?} (closed: {}) after {waited:?}: {}",
        r.statuses(),
        r.closed,
        lossy(&r.bytes)
    );
    assert!(
        waited >= Duration::from_millis(HEADER_TIMEOUT_S * 1000 - 300),
        "silent slow sender cut off after only {waited:?}"
    );
    eprintln!(
        "[malformed] silent slow sender → {:?} after {waited:.1?} ({served} other requests served meanwhile)",
        r.responses.first().map(|r| r.status_line.clone())
    );
    let (sent, r, took) = drip_thread.join().expect("drip thread");
    assert!(
        r.closed && (r.responses.is_empty() || r.statuses() == [408]),
        "dripping sender: expected 408 or a close, got {:?} after {sent} bytes ({took:?}): {}",
        r.statuses(),
        lossy(&r.bytes)
    );
    let took = took.unwrap_or_else(|| panic!("dripping sender never cut off ({sent} bytes sent)"));
    assert!(
        took < Duration::from_secs(HEADER_TIMEOUT_S + 2),
        "dripping sender cut off only after {took:?}"
    );
    eprintln!(
        "[malformed] dripping slow sender → {:?} after {sent} bytes, {took:.1?}",
        r.responses.first().map(|r| r.status_line.clone())
    );

    // Many half-open heads at once do not block others either.
    let mut idle: Vec<_> = (0..32)
        .map(|_| {
            let mut c = connect_in(ns, addr, Duration::from_secs(5)).expect("connect");
            c.write_all(b"GET / HT").expect("write");
            c
        })
        .collect();
    ok("32 half-open heads");
    for c in &mut idle {
        let r = read_reply(c, 1, true, false, Duration::from_secs(HEADER_TIMEOUT_S + 5));
        assert!(r.closed, "a half-open head was never cut off");
    }
    drop(idle);

    ok("everything");
    assert!(s.httpd_alive(), "dn-httpd exited:\n{}", s.logs());
}
