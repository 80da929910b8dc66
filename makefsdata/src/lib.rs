//! `makefsdata`: compile a directory of static web content into a Rust module.
//!
//! Every file becomes an entry with its body, precompressed gzip (and, with the default
//! `brotli` feature, brotli) variants kept only when strictly smaller, and a pre-built
//! HTTP/1.1 response header for each variant. The generated module needs no
//! dependencies. See `README.md` for the shape of the generated module.
//!
//! Use from a `build.rs`:
//!
//! ```no_run
//! // build.rs
//! let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("site.rs");
//! makefsdata::build("site", &out).unwrap();
//! ```
//!
//! and in the crate: `mod site { include!(concat!(env!("OUT_DIR"), "/site.rs")); }`.
//!
//! Output is deterministic: the same input gives the same bytes. `Last-Modified` comes
//! from each file's mtime unless `SOURCE_DATE_EPOCH` is set, in which case it replaces
//! every mtime (reproducible builds).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

mod codegen;
pub mod date;
mod mime;

pub use date::http_date;
pub use mime::{mime_for, Mime, OCTET_STREAM};

/// `Cache-Control` for HTML pages by default: revalidate every time (cheap with ETags).
pub const DEFAULT_HTML_CACHE_CONTROL: &str = "no-cache";
/// `Cache-Control` for other assets by default. File names are not fingerprinted, so
/// assets are not `immutable`; an hour bounds how long a stale copy can live.
pub const DEFAULT_ASSET_CACHE_CONTROL: &str = "public, max-age=3600";
/// Name of the not-found page at the top of the site.
pub const NOT_FOUND_PAGE: &str = "404.html";
/// Name of a directory's index page.
pub const INDEX_PAGE: &str = "index.html";

/// What went wrong, and on which file.
#[derive(Debug)]
pub enum Error {
    /// An I/O operation (`op`, e.g. "read") failed on `path`.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The site root is not a directory.
    NotADirectory(PathBuf),
    /// A file or directory name is not valid UTF-8.
    NonUtf8Path(PathBuf),
    /// A directory is reached twice through symbolic links.
    SymlinkLoop(PathBuf),
    /// `SOURCE_DATE_EPOCH` is set but is not a non-negative integer.
    BadSourceDateEpoch(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            Error::NotADirectory(p) => write!(f, "{}: not a directory", p.display()),
            Error::NonUtf8Path(p) => {
                write!(f, "{}: file name is not valid UTF-8", p.display())
            }
            Error::SymlinkLoop(p) => {
                write!(f, "{}: directory reached twice (symlink loop)", p.display())
            }
            Error::BadSourceDateEpoch(v) => write!(
                f,
                "SOURCE_DATE_EPOCH={v:?} is not a non-negative integer (seconds since 1970)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// How a site is scanned and compressed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Include files and directories whose name starts with `.` (default: skip them).
    pub include_hidden: bool,
    /// Make gzip variants (default: yes).
    pub gzip: bool,
    /// Make brotli variants (default: yes when the `brotli` feature is on).
    pub brotli: bool,
    /// If set, every file's `Last-Modified` is this time (seconds since 1970) instead of
    /// its mtime. [`Options::from_env`] takes it from `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<u64>,
    /// `Cache-Control` for `text/html` files.
    pub html_cache_control: String,
    /// `Cache-Control` for everything else.
    pub asset_cache_control: String,
}

impl Default for Options {
    /// Defaults, without looking at the environment (`source_date_epoch` is `None`).
    fn default() -> Self {
        Options {
            include_hidden: false,
            gzip: true,
            brotli: cfg!(feature = "brotli"),
            source_date_epoch: None,
            html_cache_control: DEFAULT_HTML_CACHE_CONTROL.into(),
            asset_cache_control: DEFAULT_ASSET_CACHE_CONTROL.into(),
        }
    }
}

impl Options {
    /// Defaults, with `source_date_epoch` from the `SOURCE_DATE_EPOCH` environment
    /// variable (unset or empty: use mtimes).
    pub fn from_env() -> Result<Options, Error> {
        let mut o = Options::default();
        if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
            let s = v.to_string_lossy();
            let t = s.trim();
            if !t.is_empty() {
                o.source_date_epoch = Some(
                    t.parse::<u64>()
                        .map_err(|_| Error::BadSourceDateEpoch(s.to_string()))?,
                );
            }
        }
        Ok(o)
    }
}

/// One representation of a file: identity, gzip or br.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// `Content-Encoding` token: "identity", "gzip" or "br".
    pub encoding: &'static str,
    pub body: Vec<u8>,
    /// Strong ETag including its quotes, e.g. `"3f2a…"`, `"3f2a…-gz"`.
    pub etag: String,
    /// Response header: status line and header lines, each ending in CRLF, WITHOUT the
    /// final empty line.
    pub header: Vec<u8>,
}

/// A file of the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// URL path, starting with `/`, e.g. `/docs/index.html`.
    pub path: String,
    /// HTTP status code of the headers (200, or 404 for the not-found page).
    pub status: u16,
    pub content_type: &'static str,
    /// Seconds since 1970 (mtime, or `SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// IMF-fixdate of `mtime`.
    pub last_modified: String,
    pub cache_control: String,
    /// The file is a directory index (`index.html`), also served at its directory's path.
    pub is_dir_index: bool,
    pub identity: Variant,
    pub gzip: Option<Variant>,
    pub br: Option<Variant>,
}

impl Entry {
    /// All variants present, identity first.
    pub fn variants(&self) -> impl Iterator<Item = &Variant> {
        std::iter::once(&self.identity)
            .chain(self.gzip.as_ref())
            .chain(self.br.as_ref())
    }
}

/// Totals for a summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: usize,
    pub bytes: u64,
    pub gzip_files: usize,
    pub gzip_bytes: u64,
    pub br_files: usize,
    pub br_bytes: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files, {} bytes; gzip: {} files, {} bytes; br: {} files, {} bytes",
            self.files, self.bytes, self.gzip_files, self.gzip_bytes, self.br_files, self.br_bytes
        )
    }
}

/// A scanned site, ready to be written as Rust.
#[derive(Clone, Debug)]
pub struct Site {
    files: Vec<Entry>,
    not_found: Option<Entry>,
    inputs: Vec<PathBuf>,
}

impl Site {
    /// Scans `dir` with [`Options::from_env`].
    pub fn scan(dir: impl AsRef<Path>) -> Result<Site, Error> {
        Site::scan_with(dir, &Options::from_env()?)
    }

    /// Scans `dir` with the given options.
    pub fn scan_with(dir: impl AsRef<Path>, opts: &Options) -> Result<Site, Error> {
        let dir = dir.as_ref();
        let meta = fs::metadata(dir).map_err(io_err(dir, "open"))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(dir.to_path_buf()));
        }
        let mut found = BTreeMap::new();
        let mut inputs = Vec::new();
        let mut seen = BTreeSet::new();
        walk(dir, "", opts, &mut found, &mut inputs, &mut seen)?;

        let mut files = Vec::with_capacity(found.len());
        let mut not_found = None;
        for (url, path) in found {
            let body = fs::read(&path).map_err(io_err(&path, "read"))?;
            let mtime = match opts.source_date_epoch {
                Some(t) => t,
                None => {
                    let m = fs::metadata(&path).map_err(io_err(&path, "stat"))?;
                    let t = m.modified().map_err(io_err(&path, "read the mtime of"))?;
                    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
                }
            };
            let entry = make_entry(url, body, mtime, opts);
            if entry.path == format!("/{NOT_FOUND_PAGE}") {
                not_found = Some(not_found_entry(&entry));
            }
            files.push(entry);
        }
        Ok(Site {
            files,
            not_found,
            inputs,
        })
    }

    /// The files, sorted by path (byte order).
    pub fn files(&self) -> &[Entry] {
        &self.files
    }

    /// The not-found page (`/404.html` with status 404), if the site has one.
    pub fn not_found(&self) -> Option<&Entry> {
        self.not_found.as_ref()
    }

    /// Every directory and file read (for `cargo:rerun-if-changed`), in walk order.
    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    /// Totals over the files.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for e in &self.files {
            s.files += 1;
            s.bytes += e.identity.body.len() as u64;
            if let Some(g) = &e.gzip {
                s.gzip_files += 1;
                s.gzip_bytes += g.body.len() as u64;
            }
            if let Some(b) = &e.br {
                s.br_files += 1;
                s.br_bytes += b.body.len() as u64;
            }
        }
        s
    }

    /// Writes a self-contained module: bodies as byte-string literals.
    pub fn write_rust(&self, out: &mut impl Write) -> io::Result<()> {
        codegen::write(self, out, None::<(&mut Vec<u8>, &str)>)
    }

    /// Writes a module whose bodies live in `blob`, a file the module pulls in with
    /// `include_bytes!(blob_name)`; `blob_name` is relative to the module's own file, so
    /// write both into the same directory. Keeps the `.rs` small for large sites.
    pub fn write_rust_with_blob(
        &self,
        out: &mut impl Write,
        blob: &mut impl Write,
        blob_name: &str,
    ) -> io::Result<()> {
        codegen::write(self, out, Some((blob, blob_name)))
    }

    /// Writes `out_rs` and, beside it, its blob (`out_rs` with extension `.bin`).
    /// Files whose content is unchanged are not rewritten. Returns the blob's path.
    pub fn write_files(&self, out_rs: impl AsRef<Path>) -> Result<PathBuf, Error> {
        let out_rs = out_rs.as_ref();
        let blob_path = out_rs.with_extension("bin");
        let blob_name = blob_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::NonUtf8Path(blob_path.clone()))?
            .to_string();
        let mut rs = Vec::new();
        let mut blob = Vec::new();
        self.write_rust_with_blob(&mut rs, &mut blob, &blob_name)
            .map_err(io_err(out_rs, "generate"))?;
        write_if_changed(&blob_path, &blob)?;
        write_if_changed(out_rs, &rs)?;
        Ok(blob_path)
    }
}

fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), Error> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent, "create directory"))?;
    }
    fs::write(path, data).map_err(io_err(path, "write"))
}

/// For `build.rs`: scans `dir` (honouring `SOURCE_DATE_EPOCH`), writes `out_rs` and its
/// blob (see [`Site::write_files`]), and prints `cargo:rerun-if-changed=` for `dir` and
/// every directory and file in it, plus `cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH`.
pub fn build(dir: impl AsRef<Path>, out_rs: impl AsRef<Path>) -> Result<Stats, Error> {
    build_with(dir, out_rs, &Options::from_env()?)
}

/// [`build`] with explicit options.
pub fn build_with(
    dir: impl AsRef<Path>,
    out_rs: impl AsRef<Path>,
    opts: &Options,
) -> Result<Stats, Error> {
    let dir = dir.as_ref();
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed={}", dir.display());
    let site = Site::scan_with(dir, opts)?;
    for p in site.inputs() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    site.write_files(out_rs)?;
    Ok(site.stats())
}

fn walk(
    dir: &Path,
    url_prefix: &str,
    opts: &Options,
    found: &mut BTreeMap<String, PathBuf>,
    inputs: &mut Vec<PathBuf>,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<(), Error> {
    let canon = fs::canonicalize(dir).map_err(io_err(dir, "resolve"))?;
    if !seen.insert(canon) {
        return Err(Error::SymlinkLoop(dir.to_path_buf()));
    }
    inputs.push(dir.to_path_buf());
    let mut names = Vec::new();
    for ent in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let ent = ent.map_err(io_err(dir, "list"))?;
        names.push(ent.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(Error::NonUtf8Path(path));
        };
        if name.starts_with('.') && !opts.include_hidden {
            continue;
        }
        // Follows symbolic links.
        let meta = fs::metadata(&path).map_err(io_err(&path, "stat"))?;
        let url = format!("{url_prefix}/{name}");
        if meta.is_dir() {
            walk(&path, &url, opts, found, inputs, seen)?;
        } else if meta.is_file() {
            inputs.push(path.clone());
            found.insert(url, path);
        }
        // Sockets, FIFOs, devices: skipped.
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn make_entry(path: String, body: Vec<u8>, mtime: u64, opts: &Options) -> Entry {
    use sha2::Digest;
    let mime = mime_for(&path);
    let is_html = mime.content_type.starts_with("text/html");
    let cache_control = if is_html {
        opts.html_cache_control.clone()
    } else {
        opts.asset_cache_control.clone()
    };
    let tag = hex(&sha2::Sha256::digest(&body)[..16]);
    let last_modified = http_date(mtime);
    let is_dir_index = path.rsplit('/').next() == Some(INDEX_PAGE);

    let gzip_body = (opts.gzip && mime.compressible)
        .then(|| gzip(&body))
        .filter(|z| z.len() < body.len());
    let br_body = (opts.brotli && mime.compressible)
        .then(|| brotli(&body))
        .flatten()
        .filter(|z| z.len() < body.len());
    let negotiated = gzip_body.is_some() || br_body.is_some();

    let mk = |encoding: &'static str, body: Vec<u8>, etag: String| {
        let header = header_bytes(&HeaderFields {
            status: 200,
            content_type: mime.content_type,
            len: body.len(),
            etag: Some(&etag),
            last_modified: Some(&last_modified),
            cache_control: &cache_control,
            encoding,
            vary: negotiated,
        });
        Variant {
            encoding,
            body,
            etag,
            header,
        }
    };
    let identity = mk("identity", body, format!("\"{tag}\""));
    let gzip = gzip_body.map(|b| mk("gzip", b, format!("\"{tag}-gz\"")));
    let br = br_body.map(|b| mk("br", b, format!("\"{tag}-br\"")));
    Entry {
        path,
        status: 200,
        content_type: mime.content_type,
        mtime,
        last_modified,
        cache_control,
        is_dir_index,
        identity,
        gzip,
        br,
    }
}

/// The not-found page: same bodies, status 404, `Cache-Control: no-cache`, and no
/// ETag/Last-Modified (a 404 must not be answered with 304).
fn not_found_entry(page: &Entry) -> Entry {
    let mut e = page.clone();
    e.status = 404;
    e.cache_control = "no-cache".into();
    e.last_modified = String::new();
    e.is_dir_index = false;
    let negotiated = e.gzip.is_some() || e.br.is_some();
    for v in [Some(&mut e.identity), e.gzip.as_mut(), e.br.as_mut()]
        .into_iter()
        .flatten()
    {
        v.etag = String::new();
        v.header = header_bytes(&HeaderFields {
            status: 404,
            content_type: page.content_type,
            len: v.body.len(),
            etag: None,
            last_modified: None,
            cache_control: "no-cache",
            encoding: v.encoding,
            vary: negotiated,
        });
    }
    e
}

/// Bodies up to this size also get a whole response built in ([`full_response`]): for
/// them a separate head would be a segment of its own or a copy; a larger body's head is
/// a small share of its segments.
pub const RESPONSE_MAX_BODY: usize = 16 * 1024;

/// The whole response to a GET on a persistent HTTP/1.1 connection, as dn-httpd sends
/// it: `v.header`, `Accept-Ranges: bytes` if `status` is 200 (bodies are in memory, and
/// dn-httpd serves single byte ranges of them), the empty line, then the body. `None`
/// for a body over [`RESPONSE_MAX_BODY`]. The generated module holds it as
/// `Variant::response`, so the server can send it without building or copying a head.
pub fn full_response(status: u16, v: &Variant) -> Option<Vec<u8>> {
    if v.body.len() > RESPONSE_MAX_BODY {
        return None;
    }
    let mut r = Vec::with_capacity(v.header.len() + 24 + v.body.len());
    r.extend_from_slice(&v.header);
    if status == 200 {
        r.extend_from_slice(b"Accept-Ranges: bytes\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(&v.body);
    Some(r)
}

struct HeaderFields<'a> {
    status: u16,
    content_type: &'a str,
    len: usize,
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
    cache_control: &'a str,
    encoding: &'a str,
    vary: bool,
}

fn header_bytes(h: &HeaderFields<'_>) -> Vec<u8> {
    let reason = match h.status {
        200 => "OK",
        404 => "Not Found",
        _ => "",
    };
    let mut s = format!("HTTP/1.1 {} {reason}\r\n", h.status);
    s += &format!("Content-Type: {}\r\n", h.content_type);
    s += &format!("Content-Length: {}\r\n", h.len);
    if let Some(t) = h.etag {
        s += &format!("ETag: {t}\r\n");
    }
    if let Some(t) = h.last_modified {
        s += &format!("Last-Modified: {t}\r\n");
    }
    s += &format!("Cache-Control: {}\r\n", h.cache_control);
    if h.encoding != "identity" {
        s += &format!("Content-Encoding: {}\r\n", h.encoding);
    }
    if h.vary {
        s += "Vary: Accept-Encoding\r\n";
    }
    s.into_bytes()
}

/// Deterministic gzip at the best level: no file name, mtime 0, OS "unknown".
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("write to Vec");
    enc.finish().expect("write to Vec")
}

#[cfg(feature = "brotli")]
fn brotli(data: &[u8]) -> Option<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 22,
        size_hint: data.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("write to Vec");
    Some(out)
}

#[cfg(not(feature = "brotli"))]
fn brotli(_data: &[u8]) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests;
