//! Harness for the dn-httpd tests (issue 4): the sample site's files, dn-httpd on a TAP
//! topology, curl from the kernel side, raw TCP exchanges from inside a network
//! namespace, HTTP response parsing, gunzip, and a small PNG decoder for screenshots.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::nic::{Backend, Netns, Site, PIPE, PIPE_IP};
use crate::{run_with_timeout, wait_for_line, ChildGuard};

/// dn-httpd's port in these tests.
pub const PORT: u16 = 80;

/// The site compiled into dn-httpd (makefsdata's sample site).
pub fn site_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("makefsdata")
        .join("sample-site")
}

/// Every file of the sample site as `(URL path, file)`, sorted, plus the directory
/// indexes (`/` → index.html, `/docs/` → docs/index.html).
pub fn site_files() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(&p, &format!("{prefix}{name}/"), out);
            } else {
                if name == "index.html" {
                    out.push((prefix.to_string(), p.clone()));
                }
                out.push((format!("{prefix}{name}"), p));
            }
        }
    }
    let mut v = Vec::new();
    walk(&site_dir(), "/", &mut v);
    assert!(
        v.len() >= 8,
        "the sample site looks incomplete: {v:?} (in {})",
        site_dir().display()
    );
    v
}

/// The bytes of a sample-site file by its path relative to the site (`style.css`).
pub fn site_file(rel: &str) -> Vec<u8> {
    let p = site_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// dn-httpd on a TAP topology

/// docknetd with a TAP in a namespace, pipe [`PIPE`] and (optionally) dn-httpd on it.
pub struct HttpdSite {
    /// Dropped first: dn-httpd leaves before its daemon.
    pub httpd: Option<ChildGuard>,
    pub site: Site,
}

impl HttpdSite {
    /// The topology (no service yet).
    pub fn topology() -> HttpdSite {
        HttpdSite {
            httpd: None,
            site: Site::start(Backend::Tap),
        }
    }

    /// The topology and `dn-httpd --port 80 EXTRA…` listening on the pipe.
    pub fn start(extra: &[&str]) -> HttpdSite {
        let mut s = Self::topology();
        let port = PORT.to_string();
        let mut args = vec!["--port", &port];
        args.extend_from_slice(extra);
        let (mut g, stdout) = s.site.daemon.spawn_service(PIPE, "dn-httpd", &args);
        if let Err(e) = wait_for_line(stdout, "listening", Duration::from_secs(20)) {
            let alive = g.alive();
            panic!(
                "dn-httpd {args:?} not listening: {e}\n(alive: {alive})\nits stderr:\n{}\ndocknetd log:\n{}",
                g.log_tail(),
                s.site.daemon.log_tail()
            );
        }
        s.httpd = Some(g);
        s
    }

    /// Where kernel clients run (the namespace holding the TAP).
    pub fn ns(&self) -> &Netns {
        self.site.client_ns()
    }

    /// `http://10.88.0.2PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{PIPE_IP}{path}")
    }

    /// The service's address.
    pub fn addr(&self) -> SocketAddr {
        format!("{PIPE_IP}:{PORT}").parse().expect("socket address")
    }

    /// True while dn-httpd runs.
    pub fn httpd_alive(&mut self) -> bool {
        self.httpd.as_mut().is_some_and(|g| g.alive())
    }

    /// dn-httpd's and docknetd's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "dn-httpd stderr:\n{}\ndocknetd log:\n{}",
            self.httpd
                .as_ref()
                .map(|g| g.log_tail())
                .unwrap_or_default(),
            self.site.daemon.log_tail()
        )
    }
}

// ---------------------------------------------------------------------------------------
// curl

/// `curl -sS --connect-timeout 5 --max-time 15 ARGS…` inside `ns`, to completion.
pub fn curl_raw(ns: &Netns, args: &[&str]) -> Output {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "--connect-timeout", "5", "--max-time", "15"])
        .args(args);
    match run_with_timeout(&mut cmd, Duration::from_secs(25)) {
        Ok(o) => o,
        Err((e, o)) => panic!(
            "{e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// `curl -i ARGS…` inside `ns` (asserting curl succeeded), parsed: the status, headers
/// and whatever body curl wrote (decoded if `--compressed` was given).
pub fn curl_i(ns: &Netns, args: &[&str]) -> Response {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    let out = curl_raw(ns, &all);
    assert!(
        out.status.success(),
        "curl {all:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (resp, _) = parse_head(&out.stdout)
        .unwrap_or_else(|| panic!("curl {all:?}: no HTTP head in {:?}", lossy(&out.stdout)));
    let head_len = find(&out.stdout, b"\r\n\r\n").expect("head end") + 4;
    Response {
        body: out.stdout[head_len..].to_vec(),
        ..resp
    }
}

// ---------------------------------------------------------------------------------------
// HTTP responses

/// A parsed HTTP response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head as text, for failure messages.
    pub fn head_text(&self) -> String {
        let mut s = self.status_line.clone();
        for (k, v) in &self.headers {
            s.push_str(&format!("\n{k}: {v}"));
        }
        s
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as text with escapes (for messages), cut to 600 characters.
pub fn lossy(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 600 {
        format!("{}… ({} bytes)", &s[..600], b.len())
    } else {
        s
    }
}

/// Parse a response head at the start of `buf`: the response (no body) and the head's
/// length including the blank line; `None` if the head is incomplete or not HTTP.
pub fn parse_head(buf: &[u8]) -> Option<(Response, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?.to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Some((
        Response {
            status_line,
            status,
            headers,
            body: Vec::new(),
        },
        end + 4,
    ))
}

/// Parse one complete response (body by Content-Length; none for 1xx/204/304 or when
/// `head_only`); returns it and the bytes used, or `None` if incomplete.
pub fn parse_response(buf: &[u8], head_only: bool) -> Option<(Response, usize)> {
    let (mut r, head_len) = parse_head(buf)?;
    let no_body = head_only || r.status == 304 || r.status == 204 || r.status < 200;
    let len: usize = if no_body {
        0
    } else {
        r.header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    if buf.len() < head_len + len {
        return None;
    }
    r.body = buf[head_len..head_len + len].to_vec();
    Some((r, head_len + len))
}

// ---------------------------------------------------------------------------------------
// Raw TCP from inside a namespace

/// A TCP connection to `addr` made from inside namespace `ns`: a short-lived thread
/// enters the namespace (setns affects only the calling thread) and connects; the
/// socket stays in that namespace and is usable from any thread afterwards.
pub fn connect_in(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let path = ns.path().to_path_buf();
    std::thread::spawn(move || -> io::Result<TcpStream> {
        let nsf = File::open(&path)?;
        // SAFETY: `nsf` is an open namespace file; setns only changes this thread's
        // network namespace, and the thread ends right after connecting.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        TcpStream::connect_timeout(&addr, timeout)
    })
    .join()
    .map_err(|_| io::Error::other("connect thread panicked"))?
}

/// What a raw exchange got back.
#[derive(Debug, Default)]
pub struct Reply {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The complete responses parsed from `bytes`, in order.
    pub responses: Vec<Response>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl Reply {
    /// Status codes of the responses.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Read from `s` until `want` responses are complete and (if `until_close`) the server
/// closed, or until `timeout`. `head_only` as in [`parse_response`].
pub fn read_reply(
    s: &mut TcpStream,
    want: usize,
    until_close: bool,
    head_only: bool,
    timeout: Duration,
) -> Reply {
    let deadline = Instant::now() + timeout;
    let mut r = Reply::default();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut used = 0;
        r.responses.clear();
        while let Some((resp, n)) = parse_response(&r.bytes[used..], head_only) {
            r.responses.push(resp);
            used += n;
        }
        if r.responses.len() >= want && !until_close {
            return r;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return r;
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut buf) {
            Ok(0) => {
                r.closed = true;
                // Parse once more below, then stop.
                let mut used = 0;
                r.responses.clear();
                while let Some((resp, n)) = parse_response(&r.bytes[used..], head_only) {
                    r.responses.push(resp);
                    used += n;
                }
                return r;
            }
            Ok(n) => r.bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return r;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                r.closed = true;
                return r;
            }
        }
    }
}

/// Connect from `ns`, send `request` in one write, and read `want` responses (and until
/// the server closes, if `until_close`), within `timeout`.
pub fn exchange(
    ns: &Netns,
    addr: SocketAddr,
    request: &[u8],
    want: usize,
    until_close: bool,
    timeout: Duration,
) -> Reply {
    let mut s = connect_in(ns, addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr} from {}: {e}", ns.name()));
    let _ = s.set_nodelay(true);
    // The server may answer and close before it read everything (e.g. 414/431): a
    // failed write is fine, the reply still counts.
    let _ = s.write_all(request);
    read_reply(&mut s, want, until_close, false, timeout)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Gunzip `data` (panics with a message if it is not valid gzip).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not valid gzip ({e}): {}", lossy(data)));
    out
}

/// A decoded 8-bit RGB or RGBA PNG (non-interlaced): width, height and pixels (RGBA).
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<[u8; 4]>,
}

/// Decode a PNG as Chromium writes screenshots (8-bit RGB/RGBA, no interlace).
pub fn decode_png(data: &[u8]) -> Result<Png, String> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !data.starts_with(SIG) {
        return Err("no PNG signature".into());
    }
    let mut pos = SIG.len();
    let (mut width, mut height, mut ctype) = (0u32, 0u32, 0u8);
    let mut idat = Vec::new();
    let mut seen_ihdr = false;
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &data[pos + 4..pos + 8];
        let body = data.get(pos + 8..pos + 8 + len).ok_or("truncated chunk")?;
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                let (depth, interlace) = (body[8], body[12]);
                ctype = body[9];
                if depth != 8 || !(ctype == 2 || ctype == 6) || interlace != 0 {
                    return Err(format!(
                        "unsupported PNG: depth {depth}, colour type {ctype}, interlace {interlace}"
                    ));
                }
                seen_ihdr = true;
            }
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    if !seen_ihdr {
        return Err("no IHDR".into());
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("bad IDAT: {e}"))?;
    let bpp = if ctype == 6 { 4 } else { 3 };
    let stride = width as usize * bpp;
    if raw.len() != (stride + 1) * height as usize {
        return Err(format!(
            "IDAT holds {} bytes, expected {}",
            raw.len(),
            (stride + 1) * height as usize
        ));
    }
    let mut prev = vec![0u8; stride];
    let mut rgba = Vec::with_capacity(width as usize * height as usize);
    for row in raw.chunks(stride + 1) {
        let (filter, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= bpp { cur[i - bpp] as i16 } else { 0 };
            let b = prev[i] as i16;
            let c = if i >= bpp { prev[i - bpp] as i16 } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => return Err(format!("bad filter type {f}")),
            };
            cur[i] = line[i].wrapping_add(pred as u8);
        }
        for px in cur.chunks(bpp) {
            rgba.push([px[0], px[1], px[2], if bpp == 4 { px[3] } else { 255 }]);
        }
        prev = cur;
    }
    Ok(Png {
        width,
        height,
        rgba,
    })
}
