//! dn-httpd: HTTP/1.1 on the DockNet libOS, serving content compiled in by makefsdata.
//!
//! Keep-alive and pipelining (requests answered in order, one response at a time per
//! connection), GET and HEAD, Accept-Encoding (br, gzip), If-None-Match → 304, single
//! byte ranges → 206/416, and 400/404/413/414/431/505 for bad requests (then the
//! connection is closed); limits on head size, idle and slow connections, and the number
//! of connections.
//!
//! Any other method (POST, PUT, DELETE, …) gets `405 Method Not Allowed` with
//! `Allow: GET, HEAD`, whatever its body's size, and the connection stays open: the body
//! (Content-Length, or chunked) is read and thrown away as it arrives, without buffering
//! it, and the request after it is served. Exceptions: faulty framing (Transfer-Encoding
//! that does not end in chunked, with Content-Length, or on HTTP/1.0; two different
//! Content-Lengths) is 400 and close; a body announced with `Expect: 100-continue` is
//! answered 405 with `Connection: close` (the client has not sent it and need not); a
//! chunked body found broken while it is skipped closes the connection.

mod http;

use std::time::{Duration, Instant};

use clap::Parser;
use docknet::runtime::AppResult;
use docknet::{Control, Engine, SocketId, TcpMap};
use http::{BodySkip, Limits, Method, Parse, Request};

#[allow(dead_code, clippy::all)]
mod site {
    include!(concat!(env!("OUT_DIR"), "/site.rs"));
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dn-httpd",
    version,
    about = "HTTP/1.1 server on the DockNet libOS; the site is compiled in (makefsdata).\n\nThe pipe is found through DOCKNET_PIPE (default /run/docknet/pipe)."
)]
struct Cli {
    /// TCP port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Accept queue depth: connections that may wait (in handshake or established) before
    /// the server takes them; connection requests beyond it wait and are then dropped
    /// (clients retry), never reset.
    #[arg(long, default_value_t = 1024)]
    backlog: usize,
    /// Most open connections; more are answered 503 and closed.
    #[arg(long, default_value_t = 4096)]
    max_conns: usize,
    /// Close connections idle for this long (seconds).
    #[arg(long, default_value_t = 30)]
    idle_timeout_s: u64,
    /// Answer 408 and close when a request head takes longer than this (seconds).
    #[arg(long, default_value_t = 10)]
    header_timeout_s: u64,
    /// Busy work per request, in microseconds, to mimic processing (the paper's web cluster).
    #[arg(long, default_value_t = 0)]
    work_us: u64,
    /// TCP receive buffer per connection, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    rx_buffer: usize,
    /// TCP send buffer per connection, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    tx_buffer: usize,
}

/// A body after a head of its own is sent without copying (`Engine::write_static`) only
/// above this size; below it, head and body share segments. (Small files' usual responses
/// are pre-built whole: no head of their own.)
const STATIC_BODY_MIN: usize = 16 * 1024;

/// One client connection.
struct Conn {
    id: SocketId,
    /// Received bytes not yet parsed (at most `limits.max_head` + one read).
    inbuf: Vec<u8>,
    /// Response being sent: head bytes, then `body`.
    head: Vec<u8>,
    head_sent: usize,
    body: &'static [u8],
    body_sent: usize,
    /// Close after the current response (and after `skip`, if set).
    close_after: bool,
    /// The body of a refused (405) request, still being read and thrown away.
    skip: Option<BodySkip>,
    last_active: Instant,
    /// When the first byte of an unfinished request head arrived.
    head_started: Option<Instant>,
}

impl Conn {
    fn sending(&self) -> bool {
        self.head_sent < self.head.len() || self.body_sent < self.body.len()
    }
}

/// How many ready connections ahead of the one served its state is prefetched.
const CONN_PREFETCH_AHEAD: usize = 2;

fn main() {
    let cli = Cli::parse();
    let (rx, tx) = (cli.rx_buffer, cli.tx_buffer);
    std::process::exit(docknet::runtime::start(
        "dn-httpd",
        |cfg| {
            cfg.tcp_rx_buffer = rx;
            cfg.tcp_tx_buffer = tx;
        },
        |e| serve(e, &cli),
    ));
}

fn serve(engine: &mut Engine, cli: &Cli) -> AppResult {
    let listener = engine
        .listen(cli.port, cli.backlog)
        .map_err(|e| format!("cannot listen on port {}: {e}", cli.port))?;
    println!(
        "dn-httpd: listening on {}:{} ({} files)",
        engine.local_ip(),
        cli.port,
        site::FILES.len()
    );
    let limits = Limits::default();
    let idle = Duration::from_secs(cli.idle_timeout_s);
    let header_timeout = Duration::from_secs(cli.header_timeout_s);
    let work = Duration::from_micros(cli.work_us);
    // Each round visits only the connections the engine lists as ready (and new ones),
    // so a round costs the same at 10 connections as at 10,000.
    let mut conns: TcpMap<Conn> = TcpMap::new();
    let mut ready: Vec<SocketId> = Vec::new();
    let mut scratch = Scratch::new();
    let mut last_sweep = Instant::now();
    engine.run(|e| {
        let now = Instant::now();
        while let Some(id) = e.accept(listener) {
            if conns.len() >= cli.max_conns {
                let _ = e.write(id, &error_response(503, true));
                let _ = e.close(id);
                continue;
            }
            let mut c = Conn {
                id,
                inbuf: Vec::with_capacity(1024),
                head: Vec::with_capacity(512),
                head_sent: 0,
                body: &[],
                body_sent: 0,
                close_after: false,
                skip: None,
                last_active: now,
                head_started: None,
            };
            // At once: its first request may have come with the handshake, before the
            // engine could list it as ready.
            if step(e, &mut c, &limits, work, now, &mut scratch) {
                conns.insert(id, c);
            }
        }
        e.take_ready(&mut ready);
        for (i, &id) in ready.iter().enumerate() {
            // At 10,000 connections a connection's state is out of the cache by its turn.
            if let Some(&ahead) = ready.get(i + CONN_PREFETCH_AHEAD) {
                conns.prefetch(ahead);
            }
            let Some(c) = conns.get_mut(id) else {
                continue;
            };
            if !step(e, c, &limits, work, now, &mut scratch) {
                conns.remove(id);
            }
        }
        ready.clear();
        if now.duration_since(last_sweep) > Duration::from_millis(250) {
            last_sweep = now;
            conns.retain(|_, c| {
                // A request head that does not complete in time (only while we wait for
                // one: a pipelined request waiting behind a response is not slow).
                if !c.sending()
                    && c.head_started
                        .is_some_and(|t| now.duration_since(t) > header_timeout)
                {
                    let _ = e.write(c.id, &error_response(408, true));
                    let _ = e.close(c.id);
                    return false;
                }
                // Idle: no bytes moved either way for `idle` (a client that stops reading
                // a response counts too, so it cannot hold its buffers forever).
                if now.duration_since(c.last_active) > idle {
                    let _ = e.close(c.id);
                    return false;
                }
                true
            });
        }
        if !conns.is_empty() {
            e.wake_at(now + Duration::from_millis(250));
        }
        Control::Continue
    });
    Ok(())
}

/// Buffers shared by all connections, so that serving a request touches few cache lines
/// that belong to its connection alone (at 10,000 connections those are cold).
struct Scratch {
    /// Received bytes on their way to a connection's `inbuf` (never zeroed again).
    read: Vec<u8>,
    /// A response head, built here and written at once; only what the socket does not
    /// take is copied to the connection's own `head`.
    head: Vec<u8>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            read: vec![0; 4096],
            head: Vec::with_capacity(512),
        }
    }
}

/// Build the response to `req` in `scratch.head` (swapped in as `c.head` while `respond`
/// runs, so the connection's own buffer is not touched).
fn respond_in_scratch(c: &mut Conn, req: &Request, work: Duration, scratch: &mut Vec<u8>) {
    if !work.is_zero() {
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    std::mem::swap(&mut c.head, scratch);
    respond(c, req);
    std::mem::swap(&mut c.head, scratch);
}

/// Write the head `respond_in_scratch` built; what does not fit waits in `c.head`.
/// False if the connection is gone.
fn send_scratch_head(e: &mut Engine, c: &mut Conn, scratch: &mut Vec<u8>, now: Instant) -> bool {
    c.head.clear();
    c.head_sent = 0;
    if scratch.is_empty() {
        return true; // a pre-built response: all of it is in `c.body`
    }
    let written = e.write(c.id, scratch);
    let ok = match written {
        Ok(n) => {
            // Usually all of it: then nothing of the connection's own buffer is touched.
            c.head.extend_from_slice(&scratch[n..]);
            if n > 0 {
                c.last_active = now;
            }
            true
        }
        Err(_) => false,
    };
    scratch.clear();
    ok
}

/// Advance one connection: send what is pending, then read and answer the next request,
/// until it waits for the peer (room in the send buffer, or more bytes). Returns false
/// once the connection is finished (closed by us or the peer).
fn step(
    e: &mut Engine,
    c: &mut Conn,
    limits: &Limits,
    work: Duration,
    now: Instant,
    scratch: &mut Scratch,
) -> bool {
    loop {
        // 1. Send the current response.
        if c.sending() {
            if c.head_sent < c.head.len() {
                match e.write(c.id, &c.head[c.head_sent..]) {
                    Ok(n) => {
                        c.head_sent += n;
                        if n > 0 {
                            c.last_active = now;
                        }
                    }
                    Err(_) => return false,
                }
            }
            if c.head_sent == c.head.len() && c.body_sent < c.body.len() {
                // Bodies are compiled in: the socket can send them from where they lie.
                // A segment does not span copied and static bytes, so a small body after
                // a copied head is copied too (one segment, not two).
                let rest = &c.body[c.body_sent..];
                let written = if c.head.is_empty() || c.body.len() > STATIC_BODY_MIN {
                    e.write_static(c.id, rest)
                } else {
                    e.write(c.id, rest)
                };
                match written {
                    Ok(n) => {
                        c.body_sent += n;
                        if n > 0 {
                            c.last_active = now;
                        }
                    }
                    Err(_) => return false,
                }
            }
            if c.sending() {
                return true; // send buffer full: continue next round
            }
            c.last_active = now;
            if c.close_after && c.skip.is_none() {
                let _ = e.close(c.id);
                return false;
            }
        }
        // 2. Throw away the body of a refused request, so the next request is found:
        // first what is buffered, then straight out of the socket's receive buffer.
        if let Some(skip) = &mut c.skip {
            let skipped = if c.inbuf.is_empty() {
                match e.recv_with(c.id, |data| match skip.skip(data) {
                    Ok(n) => (n, Ok(n)),
                    Err(bad) => (0, Err(bad)),
                }) {
                    Ok(r) => r,
                    Err(_) => {
                        // The peer closed mid-body.
                        let _ = e.close(c.id);
                        return false;
                    }
                }
            } else {
                skip.skip(&c.inbuf).inspect(|&n| {
                    c.inbuf.drain(..n);
                })
            };
            let Ok(n) = skipped else {
                // Broken chunked framing: where the next request starts is unknown.
                let _ = e.close(c.id);
                return false;
            };
            if n > 0 {
                c.last_active = now;
            }
            if skip.done() {
                c.skip = None;
                if c.close_after {
                    let _ = e.close(c.id);
                    return false;
                }
            } else if n == 0 {
                return true; // wait for more of the body
            }
            continue;
        }
        // 3. Parse a buffered request (pipelining) before reading more.
        let inbuf = std::mem::take(&mut c.inbuf);
        let parsed = http::parse(&inbuf, limits);
        let mut built = false;
        let used = match parsed {
            Parse::Done { req, len } => {
                respond_in_scratch(c, &req, work, &mut scratch.head);
                built = true;
                Some(len)
            }
            Parse::NotAllowed {
                len,
                body,
                keep_alive,
                http11,
                expect_continue,
            } => {
                // A client that sent `Expect: 100-continue` may be holding the body back
                // until it hears from us: we cannot know whether it will follow, so close.
                let held_back = expect_continue && body != http::Body::None;
                c.close_after = !keep_alive || held_back;
                c.skip = if held_back { None } else { BodySkip::new(body) };
                not_allowed(c, !http11);
                Some(len)
            }
            Parse::Error(status) => {
                c.head = error_response(status, true);
                c.head_sent = 0;
                c.body = &[];
                c.body_sent = 0;
                c.close_after = true;
                Some(inbuf.len())
            }
            Parse::Incomplete => None,
        };
        c.inbuf = inbuf;
        if let Some(len) = used {
            c.inbuf.drain(..len);
            c.head_started = None;
            c.last_active = now;
            if built && !send_scratch_head(e, c, &mut scratch.head, now) {
                return false;
            }
            continue;
        }
        // A partial head is waiting for more bytes: the header timeout runs from now on.
        if !c.inbuf.is_empty() && c.head_started.is_none() {
            c.head_started = Some(now);
        }
        // 4. Read more. With nothing buffered (the usual case), a whole request is parsed
        // where it lies in the socket's receive buffer and answered from there; anything
        // else (a partial or refused request, an error) is copied to `inbuf` and handled
        // above.
        if c.inbuf.is_empty() {
            let head = &mut scratch.head;
            let answered = e.recv_with(c.id, |data| match http::parse(data, limits) {
                Parse::Done { req, len } => {
                    respond_in_scratch(c, &req, work, head);
                    (len, true)
                }
                _ => (0, false),
            });
            match answered {
                Ok(true) => {
                    c.head_started = None;
                    c.last_active = now;
                    if !send_scratch_head(e, c, &mut scratch.head, now) {
                        return false;
                    }
                    continue;
                }
                Ok(false) => {}
                Err(_) => {
                    let _ = e.close(c.id);
                    return false;
                }
            }
        }
        let buf = &mut scratch.read;
        match e.read(c.id, buf) {
            Ok(0) => return true,
            Ok(n) => {
                if c.inbuf.is_empty() {
                    c.head_started = Some(now);
                }
                c.inbuf.extend_from_slice(&buf[..n]);
                c.last_active = now;
            }
            Err(_) => {
                let _ = e.close(c.id);
                return false;
            }
        }
    }
}

/// A short text response for an error status.
fn error_response(status: u16, close: bool) -> Vec<u8> {
    let body = format!("{status} {}\n", http::reason(status));
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        http::reason(status),
        body.len()
    );
    h.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "\r\n"
    });
    h.push_str(&body);
    h.into_bytes()
}

/// The body of a 405.
const NOT_ALLOWED_BODY: &[u8] = b"405 Method Not Allowed\n";

/// Queue the 405 for a method we do not serve, honouring `c.close_after`.
fn not_allowed(c: &mut Conn, http10: bool) {
    not_allowed_head(&mut c.head, c.close_after, http10);
    c.head_sent = 0;
    c.body = NOT_ALLOWED_BODY;
    c.body_sent = 0;
}

/// The head of a 405 into `h` (cleared first), from constant pieces: no allocation once
/// `h` has grown to fit. HTTP/1.0 clients that stay need the keep-alive line.
fn not_allowed_head(h: &mut Vec<u8>, close: bool, http10: bool) {
    h.clear();
    h.extend_from_slice(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: ");
    h.extend_from_slice(http::ALLOW.as_bytes());
    h.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n");
    if close {
        h.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        h.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
}

fn connection_line(h: &mut Vec<u8>, req: &Request, close: bool) {
    if close {
        h.extend_from_slice(b"Connection: close\r\n");
    } else if !req.http11 {
        h.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// The whole response makefsdata built in for `v`, when it is exactly what `respond`
/// would assemble: a GET (not HEAD) on a connection that stays open, over HTTP/1.1 (no
/// `Connection` line), of a body small enough to have one. Sent as it is, without a head
/// to build or copy.
fn prebuilt(
    v: &site::Variant,
    req: &Request,
    close_after: bool,
    head_only: bool,
) -> Option<&'static [u8]> {
    let plain = !head_only && !close_after && req.http11;
    (plain && !v.response.is_empty()).then_some(v.response)
}

/// Build the response to `req` into the connection's output.
fn respond(c: &mut Conn, req: &Request) {
    c.head.clear();
    c.head_sent = 0;
    c.body = &[];
    c.body_sent = 0;
    c.close_after = !req.keep_alive;
    let head_only = req.method == Method::Head;
    let Some(file) = site::lookup(req.path) else {
        if site::is_dir(req.path) {
            let loc = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {}/\r\nContent-Length: 0\r\n",
                req.path
            );
            c.head.extend_from_slice(loc.as_bytes());
            connection_line(&mut c.head, req, c.close_after);
            c.head.extend_from_slice(b"\r\n");
            return;
        }
        match site::NOT_FOUND {
            Some(nf) => {
                let v = nf.select(req.accepts_gzip, req.accepts_br);
                if let Some(whole) = prebuilt(v, req, c.close_after, head_only) {
                    c.body = whole;
                    return;
                }
                c.head.extend_from_slice(v.header);
                connection_line(&mut c.head, req, c.close_after);
                c.head.extend_from_slice(b"\r\n");
                if !head_only {
                    c.body = v.body;
                }
            }
            None => {
                c.head = error_response(404, c.close_after);
                if !c.close_after && !req.http11 {
                    // error_response ends the head; add the keep-alive line HTTP/1.0 needs.
                    let at = c
                        .head
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 2);
                    c.head
                        .splice(at..at, b"Connection: keep-alive\r\n".iter().copied());
                }
            }
        }
        return;
    };
    let v = file.select(req.accepts_gzip, req.accepts_br);
    if req
        .if_none_match
        .is_some_and(|inm| http::etag_matches(inm, v.etag))
    {
        let h = format!(
            "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nCache-Control: {}\r\nLast-Modified: {}\r\n",
            v.etag, file.cache_control, file.last_modified
        );
        c.head.extend_from_slice(h.as_bytes());
        if file.gzip.is_some() || file.br.is_some() {
            c.head.extend_from_slice(b"Vary: Accept-Encoding\r\n");
        }
        connection_line(&mut c.head, req, c.close_after);
        c.head.extend_from_slice(b"\r\n");
        return;
    }
    // Ranges apply to the identity representation; If-Range must match its ETag.
    let range = req.range.filter(|_| {
        req.if_range
            .is_none_or(|ir| http::etag_matches(ir, file.identity.etag))
    });
    if let Some(r) = range {
        let body = file.identity.body;
        let len = body.len() as u64;
        match r.resolve(len) {
            Some((a, b)) => {
                let h = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: {}\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{len}\r\nETag: {}\r\nLast-Modified: {}\r\nAccept-Ranges: bytes\r\n",
                    file.content_type,
                    b - a + 1,
                    file.identity.etag,
                    file.last_modified
                );
                c.head.extend_from_slice(h.as_bytes());
                connection_line(&mut c.head, req, c.close_after);
                c.head.extend_from_slice(b"\r\n");
                if !head_only {
                    c.body = &body[a as usize..=b as usize];
                }
            }
            None => {
                let h = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"
                );
                c.head.extend_from_slice(h.as_bytes());
                connection_line(&mut c.head, req, c.close_after);
                c.head.extend_from_slice(b"\r\n");
            }
        }
        return;
    }
    if let Some(whole) = prebuilt(v, req, c.close_after, head_only) {
        c.body = whole;
        return;
    }
    c.head.extend_from_slice(v.header);
    if file.status == 200 {
        // makefsdata's pre-built responses carry this line too (`full_response`).
        c.head.extend_from_slice(b"Accept-Ranges: bytes\r\n");
    }
    connection_line(&mut c.head, req, c.close_after);
    c.head.extend_from_slice(b"\r\n");
    if !head_only {
        c.body = v.body;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_405_is_well_formed() {
        for (close, http10, conn) in [
            (false, false, None),
            (true, false, Some("close")),
            (true, true, Some("close")),
            (false, true, Some("keep-alive")),
        ] {
            let mut h = Vec::new();
            not_allowed_head(&mut h, close, http10);
            let text = std::str::from_utf8(&h).expect("ASCII");
            assert!(
                text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
                "{text}"
            );
            assert!(text.ends_with("\r\n\r\n"), "{text}");
            let header = |name: &str| {
                text.split("\r\n")
                    .skip(1)
                    .filter_map(|l| l.split_once(": "))
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            assert_eq!(header("allow"), Some("GET, HEAD"));
            assert_eq!(
                header("content-length"),
                Some(NOT_ALLOWED_BODY.len().to_string().as_str())
            );
            assert_eq!(
                header("connection"),
                conn,
                "close {close}, HTTP/1.0 {http10}"
            );
        }
        assert_eq!(http::reason(405), "Method Not Allowed");
        assert!(NOT_ALLOWED_BODY.starts_with(b"405 Method Not Allowed"));
    }
}
