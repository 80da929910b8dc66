//! Harness for DockNet-rs system tests: builds the workspace's binaries once per test
//! process, starts `docknetd` in a private run directory, runs `docknetctl` and services
//! with timeouts, and cleans everything up on every exit path (guards with `Drop`).
//! [`nic`] adds network namespaces, veth links, raw sockets and hand-built frames;
//! [`pods`] runc "pods" with pipes from `docknet-cni`. The test kit of the workspace:
//! `docknet-master`'s integration tests use it too (a dev-dependency; this crate must
//! never depend on `docknet-master`).
//!
//! Set `DOCKNET_BIN_DIR` to a directory holding already-built `docknetd`, `docknetctl` and
//! `dn-echo` to skip the build step ([`set_bin_dir`] does so from code).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cluster;
pub mod httpd;
pub mod image;
pub mod nic;
pub mod pods;

/// Counters `docknetctl stats --json` reports per pipe.
pub const COUNTERS: &[&str] = &[
    "tx_frames",
    "tx_bytes",
    "rx_frames",
    "rx_bytes",
    "bad_frame",
    "arp_unknown",
    "spoofed",
    "no_route",
    "not_attached",
    "rx_full",
    "unsupported",
    "bad_desc",
    "bad_return",
    "ring_corrupt",
    "arp_replies",
    "too_big",
    "throttled",
];

/// Default timeout for a `docknetctl` command.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Locating (and building) the binaries under test

/// Where the binaries under test are, once chosen ([`bin_dir`], [`set_bin_dir`]).
static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Take the binaries from `dir` instead of finding or building them: for the integration
/// tests of a package whose binaries cargo has already built (e.g. the parent directory
/// of `env!("CARGO_BIN_EXE_docknetd")`). Call it before anything starts a binary; it
/// wins over `DOCKNET_BIN_DIR`. Panics if another directory was chosen already.
pub fn set_bin_dir(dir: &Path) {
    let chosen = BIN_DIR.get_or_init(|| dir.to_path_buf());
    assert_eq!(
        chosen,
        dir,
        "the binaries' directory was already chosen as {}",
        chosen.display()
    );
}

/// The directory holding the workspace's binaries: the one given to [`set_bin_dir`], else
/// `DOCKNET_BIN_DIR`, else built on first use with the same profile as this test binary.
pub fn bin_dir() -> &'static Path {
    BIN_DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("DOCKNET_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // Integration tests live in TARGET/PROFILE/deps/NAME-HASH.
        let deps = exe.parent().expect("test exe has a parent dir");
        let profile_dir = if deps.file_name() == Some(OsStr::new("deps")) {
            deps.parent().expect("deps has a parent").to_path_buf()
        } else {
            deps.to_path_buf()
        };
        let profile = profile_dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("debug")
            .to_string();
        let target_dir = profile_dir
            .parent()
            .expect("profile dir has a parent")
            .to_path_buf();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--workspace")
            .arg("--bins")
            .arg("--manifest-path")
            .arg(&manifest);
        cmd.arg("--target-dir").arg(&target_dir);
        if cfg!(feature = "dpdk") {
            // The DPDK NIC backend (tests in nic_dpdk.rs).
            cmd.args(["--features", "docknet-master/dpdk"]);
        }
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.arg("--profile").arg(other);
            }
        }
        eprintln!("[harness] building binaries: {cmd:?}");
        let out = cmd.stdin(Stdio::null()).output().expect("run cargo build");
        if !out.status.success() {
            panic!(
                "cargo build --bins failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        profile_dir
    })
}

/// Path of a workspace binary (`docknetd`, `docknetctl`, `dn-echo`, …).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "binary {} not found (did the build produce it?)",
        p.display()
    );
    p
}

/// True when running as root (CI runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True if the test can run as root; otherwise prints `skipping TEST: needs root (WHY)`.
pub fn need_root(test: &str, why: &str) -> bool {
    if is_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root ({why})");
        false
    }
}

/// A unique scratch path `/tmp/dntest-<pid>-<counter>` (not created).
pub fn unique_tmp() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/tmp/dntest-{}-{n}", std::process::id()))
}

/// A scratch directory [`unique_tmp`] (created), removed with its contents on drop,
/// whether the test passed or not.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = unique_tmp();
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// Run a command to completion with a timeout; on timeout the child is killed and the
/// output so far is returned with an `Err`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, (String, Output)> {
    run_with_input(cmd, None, timeout)
}

/// [`run_with_timeout`] with `input` written to the child's standard input (then closed);
/// `None` gives it a null one.
pub fn run_with_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, (String, Output)> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written from a thread: a child that does not read its stdin cannot block us.
        let input = input.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let out_reader = drain(child.stdout.take().expect("piped stdout"));
    let err_reader = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break (st, false);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if timed_out {
        Err((format!("{desc} timed out after {timeout:?}"), out))
    } else {
        Ok(out)
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Wait until a line containing `pat` appears on `stdout` (e.g. a child's piped stdout).
/// Keeps draining the stream in the background afterwards so the child never blocks on
/// a full pipe. Returns the matching line, or an error with everything read so far.
pub fn wait_for_line<R: Read + Send + 'static>(
    stdout: R,
    pat: &str,
    timeout: Duration,
) -> Result<String, String> {
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let pat = pat.to_string();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut found = false;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !found {
                        seen.push_str(&line);
                        if line.contains(&pat) {
                            found = true;
                            let _ = tx.send(Ok(line.trim_end().to_string()));
                        }
                    }
                }
            }
        }
        if !found {
            let _ = tx.send(Err(format!(
                "stream closed before a line containing {pat:?}; output was:\n{seen}"
            )));
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(format!("no line containing the pattern within {timeout:?}")),
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: std::process::Child,
    pub name: String,
    /// Where its stderr goes, if anywhere.
    pub log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawn `cmd` (its stdio as the caller set it, except that stderr goes to `log` if
    /// given) under a guard named `name`; returns the guard and the child's stdout if it
    /// was piped (for [`wait_for_line`]).
    pub fn spawn(
        cmd: &mut Command,
        name: &str,
        log: Option<PathBuf>,
    ) -> (ChildGuard, Option<std::process::ChildStdout>) {
        if let Some(log) = &log {
            cmd.stderr(
                File::create(log).unwrap_or_else(|e| panic!("create log {}: {e}", log.display())),
            );
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take();
        (
            ChildGuard {
                child,
                name: name.to_string(),
                log,
            },
            stdout,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send a signal.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: the child has not been reaped (we hold it un-waited unless `wait*` ran),
        // so the pid still names it; kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Wait for exit with a timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The tail of its stderr log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.log.as_deref().map(log_tail).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let tail = self.log_tail();
            if !tail.is_empty() {
                eprintln!(
                    "--- stderr of {} (pid {}) ---\n{tail}",
                    self.name,
                    self.child.id()
                );
            }
        }
    }
}

/// A `dn-echo client` running in the background ([`Daemon::echo_client_in_background`]).
pub struct BackgroundClient {
    pub guard: ChildGuard,
    stdout: std::process::ChildStdout,
}

impl BackgroundClient {
    /// Wait for it to finish: its exit status (`None` on timeout), stdout, stderr tail.
    pub fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, String, String) {
        let st = self.guard.wait_timeout(timeout);
        let mut out = String::new();
        if st.is_some() {
            let _ = self.stdout.read_to_string(&mut out);
        }
        (st, out, self.guard.log_tail())
    }
}

/// The last 40 lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `utime + stime` of a process in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

// ---------------------------------------------------------------------------------------
// The daemon

/// A running `docknetd` with its own run directory. Dropping it stops the daemon
/// (SIGTERM, then SIGKILL) and removes the run directory and the logs.
pub struct Daemon {
    /// `--run-dir`: `run` inside [`Daemon::log_dir`].
    pub run_dir: PathBuf,
    /// A scratch directory [`unique_tmp`] holding the logs of docknetd and of the
    /// services started here, and the run directory; the logs stay out of the run
    /// directory so docknetd alone decides what is left in it.
    pub log_dir: PathBuf,
    proc: ChildGuard,
    services: AtomicU32,
    /// How it was started (for [`Daemon::restart`]).
    netns: Option<PathBuf>,
    nic: String,
}

impl Daemon {
    /// Start `docknetd --run-dir <unique> --nic none` and wait until it answers.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// As [`Daemon::start`], with extra daemon arguments.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Self::spawn(None, "none", extra)
    }

    /// Start `docknetd --nic NIC` inside the network namespace whose handle is
    /// `netns_path` (e.g. `/run/netns/NAME`), entered with `nsenter --net=…` only: the
    /// daemon stays in our mount namespace, so services started here see its tmpfs.
    pub fn start_in(netns_path: &Path, nic: &str, extra: &[&str]) -> Daemon {
        Self::spawn(Some(netns_path), nic, extra)
    }

    fn spawn(netns_path: Option<&Path>, nic: &str, extra: &[&str]) -> Daemon {
        // Build (or find) the binaries first: a failed build must not leave a run dir.
        bin("docknetd");
        let log_dir = unique_tmp();
        let _ = std::fs::remove_dir_all(&log_dir);
        let run_dir = log_dir.join("run");
        std::fs::create_dir_all(&run_dir).expect("create run dir");
        let proc = Self::spawn_on(&run_dir, &log_dir, netns_path, nic, extra, "docknetd.log");
        let mut d = Daemon {
            run_dir,
            log_dir,
            proc,
            services: AtomicU32::new(0),
            netns: netns_path.map(Path::to_path_buf),
            nic: nic.to_string(),
        };
        d.wait_ready(Duration::from_secs(15));
        d
    }

    /// Stop docknetd with SIGTERM (pipes, fast channels and services stay) and start a
    /// new one on the same run directory, namespace and NIC (plus `extra`), which
    /// re-adopts them. Returns once the new one answers.
    pub fn restart(&mut self, extra: &[&str]) {
        self.restart_with(extra, || {});
    }

    /// [`Daemon::restart`], running `between` while no docknetd runs.
    pub fn restart_with(&mut self, extra: &[&str], between: impl FnOnce()) {
        self.proc.signal(libc::SIGTERM);
        match self.proc.wait_timeout(Duration::from_secs(10)) {
            Some(st) => assert!(
                st.success(),
                "docknetd exited with {st} on SIGTERM:\n{}",
                self.log_tail()
            ),
            None => panic!(
                "docknetd did not stop on SIGTERM within 10 s:\n{}",
                self.log_tail()
            ),
        }
        between();
        let n = self.services.fetch_add(1, Ordering::Relaxed);
        let new = Self::spawn_on(
            &self.run_dir,
            &self.log_dir,
            self.netns.as_deref(),
            &self.nic,
            extra,
            &format!("docknetd-{n}.log"),
        );
        // The old process is reaped; its guard has nothing left to do.
        let _ = std::mem::replace(&mut self.proc, new);
        self.wait_ready(Duration::from_secs(15));
    }

    fn spawn_on(
        run_dir: &Path,
        log_dir: &Path,
        netns_path: Option<&Path>,
        nic: &str,
        extra: &[&str],
        log_name: &str,
    ) -> ChildGuard {
        let docknetd = bin("docknetd");
        let log = log_dir.join(log_name);
        let mut cmd = match netns_path {
            // nsenter execs docknetd (no fork without a PID namespace), so the child's
            // pid is docknetd's and signals reach it directly.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                let mut net = std::ffi::OsString::from("--net=");
                net.push(ns);
                c.arg(net).arg("--").arg(&docknetd);
                c
            }
            None => Command::new(&docknetd),
        };
        cmd.arg("--run-dir")
            .arg(run_dir)
            .arg("--nic")
            .arg(nic)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(log_dir.join("docknetd.out")).expect("create log"));
        ChildGuard::spawn(&mut cmd, "docknetd", Some(log)).0
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let sock = self.socket();
        let start = Instant::now();
        loop {
            if !self.proc.alive() {
                panic!("docknetd exited during start-up:\n{}", self.proc.log_tail());
            }
            if sock.exists() {
                if let Ok(out) = self.try_ctl(&["pipe", "ls"], Duration::from_secs(5)) {
                    if out.status.success() {
                        return;
                    }
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "docknetd not ready within {timeout:?}:\n{}",
                    self.proc.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("docknetd.sock")
    }

    /// The directory of pipe `name`.
    pub fn pipe_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join("pipes").join(name)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// True while docknetd runs.
    pub fn alive(&mut self) -> bool {
        self.proc.alive()
    }

    /// Wait up to `timeout` for docknetd to exit by itself (after a `shutdown` request,
    /// say): its exit status, `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }

    /// The tail of docknetd's stderr.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Run `docknetctl --run-dir DIR ARGS…`, or say why it could not run (a hang).
    pub fn try_ctl(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        let mut cmd = Command::new(bin("docknetctl"));
        cmd.arg("--run-dir").arg(&self.run_dir).args(args);
        run_with_timeout(&mut cmd, timeout).map_err(|(e, _)| e)
    }

    /// Run `docknetctl --run-dir DIR ARGS…` (panics if it hangs).
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.try_ctl(args, CTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\ndocknetd log:\n{}", self.log_tail()))
    }

    /// Run `docknetctl`, assert success, return its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "docknetctl {args:?} failed ({}): {}{}\ndocknetd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `docknetctl`, assert it fails with exactly one line on stderr; return that line.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "docknetctl {args:?} should have failed but succeeded: stdout {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "docknetctl {args:?}: expected one error line on stderr, got {stderr:?}"
        );
        assert!(
            !stderr.contains("panicked"),
            "docknetctl {args:?} panicked: {stderr}"
        );
        lines[0].to_string()
    }

    /// `pipe create NAME --ip IP` (+ extra args); returns the printed pipe directory.
    pub fn create_pipe(&self, name: &str, ip: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["pipe", "create", name, "--ip", ip];
        args.extend_from_slice(extra);
        let out = self.ctl_ok(&args);
        let dir = self.pipe_dir(name);
        assert!(
            out.trim().is_empty() || out.trim() == dir.to_string_lossy(),
            "pipe create printed {out:?}, expected {}",
            dir.display()
        );
        assert!(
            dir.join("pipe.map").exists(),
            "{}/pipe.map missing after pipe create",
            dir.display()
        );
        dir
    }

    /// `stats [NAME] --json`, parsed.
    pub fn stats(&self, name: Option<&str>) -> Value {
        let mut args = vec!["stats"];
        args.extend(name);
        args.push("--json");
        let out = self.ctl_ok(&args);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("stats --json is not JSON ({e}): {out}"))
    }

    /// Start a service (e.g. `dn-echo server --port 7`) attached to pipe `pipe`; its
    /// stdout is returned for [`wait_for_line`], its stderr goes to a log in the run dir.
    pub fn spawn_service(
        &self,
        pipe: &str,
        bin_name: &str,
        args: &[&str],
    ) -> (ChildGuard, std::process::ChildStdout) {
        self.spawn_service_env(pipe, bin_name, args, &[])
    }

    /// As [`Daemon::spawn_service`], with extra environment variables.
    pub fn spawn_service_env(
        &self,
        pipe: &str,
        bin_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (ChildGuard, std::process::ChildStdout) {
        let n = self.services.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir.join(format!("{bin_name}-{pipe}-{n}.log"));
        let mut cmd = Command::new(bin(bin_name));
        cmd.args(args)
            .env("DOCKNET_PIPE", self.pipe_dir(pipe))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let (guard, stdout) =
            ChildGuard::spawn(&mut cmd, &format!("{bin_name} on {pipe}"), Some(log));
        (guard, stdout.expect("piped stdout"))
    }

    /// Start `dn-echo server --port PORT` on `pipe` and wait until it is listening.
    pub fn echo_server(&self, pipe: &str, port: u16) -> ChildGuard {
        let port = port.to_string();
        let (mut g, stdout) = self.spawn_service(pipe, "dn-echo", &["server", "--port", &port]);
        if let Err(e) = wait_for_line(stdout, "listening", Duration::from_secs(20)) {
            let alive = g.alive();
            panic!(
                "dn-echo server on {pipe} not listening: {e}\n(alive: {alive})\nits stderr:\n{}\ndocknetd log:\n{}",
                g.log_tail(),
                self.log_tail()
            );
        }
        g
    }

    /// `dn-echo client --to TO --size SIZE --count COUNT --json` on `pipe`, left running.
    pub fn echo_client_in_background(
        &self,
        pipe: &str,
        to: &str,
        size: usize,
        count: usize,
    ) -> BackgroundClient {
        let (size, count) = (size.to_string(), count.to_string());
        let (guard, stdout) = self.spawn_service(
            pipe,
            "dn-echo",
            &[
                "client", "--to", to, "--size", &size, "--count", &count, "--json",
            ],
        );
        BackgroundClient { guard, stdout }
    }

    /// `docknetctl WHAT ls --json` (`pipe` or `fc`), parsed.
    pub fn list(&self, what: &str) -> Vec<Value> {
        let out = self.ctl_ok(&[what, "ls", "--json"]);
        serde_json::from_str::<Value>(out.trim())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("{what} ls --json is not a JSON array: {out}"))
    }

    /// The `pipe ls --json` entry of pipe `name` (panics with the list if it has none).
    pub fn pipe_entry(&self, name: &str) -> Value {
        let ls = self.list("pipe");
        ls.iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no pipe {name} in pipe ls: {ls:?}"))
    }

    /// Run `dn-echo client ARGS…` on `pipe` to completion (with a timeout).
    pub fn echo_client(&self, pipe: &str, args: &[&str], timeout: Duration) -> Output {
        let mut all = vec!["client"];
        all.extend_from_slice(args);
        self.run_on(pipe, "dn-echo", &all, timeout)
    }

    /// Run workspace binary `bin_name ARGS…` on `pipe` to completion (panics, with its
    /// output and docknetd's log, if it outlasts `timeout`).
    pub fn run_on(&self, pipe: &str, bin_name: &str, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = Command::new(bin(bin_name));
        cmd.args(args).env("DOCKNET_PIPE", self.pipe_dir(pipe));
        match run_with_timeout(&mut cmd, timeout) {
            Ok(out) => out,
            Err((e, out)) => panic!(
                "{e}\nstdout: {}\nstderr: {}\ndocknetd log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ),
        }
    }

    /// Run an echo client and assert it verified everything (exit 0). Returns stdout.
    pub fn echo_ok(
        &self,
        pipe: &str,
        to: &str,
        size: usize,
        count: usize,
        timeout: Duration,
    ) -> String {
        let (size_s, count_s) = (size.to_string(), count.to_string());
        let args = ["--to", to, "--size", &size_s, "--count", &count_s];
        let start = Instant::now();
        let out = self.echo_client(pipe, &args, timeout);
        assert!(
            out.status.success(),
            "dn-echo client {args:?} on {pipe} failed ({}):\nstdout: {}\nstderr: {}\ndocknetd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        eprintln!(
            "[echo] {size} B x {count} from {pipe} to {to}: ok in {:.2?}",
            start.elapsed()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            // SIGTERM alone leaves the pipes (and the tmpfs) for a restarted docknetd.
            let _ = self.try_ctl(&["shutdown", "--remove-all"], Duration::from_secs(10));
            let _ = self.proc.wait_timeout(Duration::from_secs(5));
        }
        if let Ok(None) = self.proc.child.try_wait() {
            self.proc.signal(libc::SIGTERM);
            if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
                eprintln!("[harness] docknetd did not stop on SIGTERM within 5 s; killing it");
                let _ = self.proc.child.kill();
                let _ = self.proc.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- docknetd log ({}) ---\n{}",
                self.log_dir.display(),
                self.proc.log_tail()
            );
        }
        // If docknetd died without cleaning up, it may have left a tmpfs mounted.
        let pipes = self.run_dir.join("pipes");
        if is_root() && is_mountpoint(&pipes) {
            if let Ok(c) = std::ffi::CString::new(pipes.as_os_str().as_encoded_bytes()) {
                // SAFETY: `c` is a valid NUL-terminated path; umount2 has no memory
                // preconditions beyond that.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// True if `p` is listed as a mount point in /proc/self/mountinfo.
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*p))
}

// ---------------------------------------------------------------------------------------
// Stats

/// The stats object of pipe `pipe` inside a `stats --json` document: the value under a
/// key named `pipe`, or an object in an array whose `"name"` is `pipe` (searched
/// recursively, so any nesting works).
pub fn pipe_stats<'a>(v: &'a Value, pipe: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(pipe) {
                if x.is_object() {
                    return Some(x);
                }
            }
            if m.get("name").and_then(Value::as_str) == Some(pipe) {
                return Some(v);
            }
            m.values().find_map(|x| pipe_stats(x, pipe))
        }
        Value::Array(a) => a.iter().find_map(|x| pipe_stats(x, pipe)),
        _ => None,
    }
}

/// Sum of every numeric value under key `counter` anywhere inside `v`; `None` if the
/// counter does not appear at all.
pub fn counter_in(v: &Value, counter: &str) -> Option<u64> {
    fn walk(v: &Value, counter: &str, acc: &mut Option<u64>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == counter {
                        if let Some(n) = x.as_u64() {
                            *acc = Some(acc.unwrap_or(0) + n);
                            continue;
                        }
                    }
                    walk(x, counter, acc);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, counter, acc)),
            _ => {}
        }
    }
    let mut acc = None;
    walk(v, counter, &mut acc);
    acc
}

/// Counter `counter` of pipe `pipe` in a stats document; panics with the document if the
/// pipe or counter is missing.
pub fn counter(v: &Value, pipe: &str, counter: &str) -> u64 {
    let p = pipe_stats(v, pipe).unwrap_or_else(|| panic!("no stats for pipe {pipe} in {v}"));
    counter_in(p, counter).unwrap_or_else(|| panic!("no counter {counter} for pipe {pipe} in {p}"))
}

// ---------------------------------------------------------------------------------------
// Randomness

/// xorshift64* — a small seeded PRNG so failures are reproducible without extra crates.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_at_any_nesting() {
        let flat: Value =
            serde_json::json!({"a": {"tx_frames": 3, "bad_desc": 1}, "b": {"tx_frames": 5}});
        assert_eq!(counter(&flat, "a", "tx_frames"), 3);
        assert_eq!(counter(&flat, "b", "tx_frames"), 5);
        let nested: Value = serde_json::json!({"pipes": {"a": {"counters": {"tx_frames": 3}, "faults": {"tx": {"bad_desc": 2}, "rx": {"bad_desc": 1}}}}});
        assert_eq!(counter(&nested, "a", "tx_frames"), 3);
        assert_eq!(counter(&nested, "a", "bad_desc"), 3);
        let list: Value = serde_json::json!({"pipes": [{"name": "a", "tx_frames": 7}, {"name": "b", "tx_frames": 9}]});
        assert_eq!(counter(&list, "b", "tx_frames"), 9);
        assert!(pipe_stats(&list, "c").is_none());
        assert_eq!(counter_in(&flat, "nope"), None);
    }

    #[test]
    fn proc_stat_parses_for_self() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn xorshift_is_deterministic() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!(a.below(10) < 10);
    }

    #[test]
    fn wait_for_line_finds_and_times_out() {
        let data: &'static [u8] = b"starting\nserver listening on 10.0.0.1:7\nmore\n";
        assert_eq!(
            wait_for_line(data, "listening", Duration::from_secs(1)).unwrap(),
            "server listening on 10.0.0.1:7"
        );
        assert!(
            wait_for_line(&b"nothing here\n"[..], "listening", Duration::from_secs(1)).is_err()
        );
    }
}
