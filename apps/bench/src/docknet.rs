//! Driving the DockNet binaries: `docknetd`, `docknetctl`, `dn-echo`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use docknet_master::control::{self, Request, SOCKET_NAME};
use serde_json::Value;

use crate::cleanup::DirGuard;
use crate::proc::{run_with_timeout, ChildGuard};

/// Paths of the DockNet binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub docknetd: PathBuf,
    pub docknetctl: PathBuf,
    pub dn_echo: PathBuf,
}

/// Looks in `dir` (or, if `None`, next to our own executable).
pub fn find_bins(dir: Option<&Path>) -> Result<Bins, String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate own executable: {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("own executable has no parent directory")?,
    };
    let find = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{name} not found in {} (build the workspace, or pass --bin-dir)",
                dir.display()
            ))
        }
    };
    Ok(Bins {
        docknetd: find("docknetd")?,
        docknetctl: find("docknetctl")?,
        dn_echo: find("dn-echo")?,
    })
}

impl Bins {
    /// Another binary of the workspace next to `docknetd` (`dn-nat`, `dn-loadgen`).
    pub fn sibling(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.docknetd.with_file_name(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{name} not found in {} (build the workspace, or pass --bin-dir)",
                p.parent()
                    .map_or(String::new(), |d| d.display().to_string())
            ))
        }
    }
}

/// The control socket of a `docknetd` whose run directory is `run_dir`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// Sends one request to the `docknetd` listening on `sock` (5 s timeout) and returns the
/// `data` of its answer. Spoken directly: a `docknetctl` process per request would be
/// too slow for millisecond samples.
pub fn request_at(sock: &Path, req: &Request) -> Result<Value, String> {
    control::request(sock, req, Duration::from_secs(5)).map_err(|e| match e {
        control::ClientError::Remote(e) => format!("docknetd: {e}"),
        control::ClientError::Unreachable(e) => e,
    })
}

/// A running `docknetd` with its private run directory.
/// Field order matters: the daemon is stopped before the directory is removed.
pub struct Daemon {
    proc: ChildGuard,
    pub run: DirGuard,
    pub bins: Bins,
}

impl Daemon {
    /// Starts `docknetd --run-dir RUN --nic none` and waits until its control
    /// socket answers `pipe ls`.
    pub fn start(
        bins: &Bins,
        run_dir: PathBuf,
        keep: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        Self::start_with(
            bins,
            run_dir,
            keep,
            timeout,
            &["--nic", "none"],
            None,
            "docknetd",
        )
    }

    /// Starts `docknetd --run-dir RUN ARGS...` (e.g. `--nic tap:X`), inside network namespace
    /// `netns` if given (`nsenter --net=/run/netns/NS docknetd ...`: only the
    /// network namespace, so the tmpfs docknetd mounts on RUN/pipes stays
    /// visible to services in our mount namespace; `ip netns exec` would
    /// also unshare the mount namespace and hide it). `name` labels the
    /// process in logs and errors. Waits until the control socket answers.
    pub fn start_with(
        bins: &Bins,
        run_dir: PathBuf,
        keep: bool,
        timeout: Duration,
        args: &[&str],
        netns: Option<&str>,
        name: &str,
    ) -> Result<Self, String> {
        let run = DirGuard::create(run_dir, keep).map_err(|e| format!("creating run dir: {e}"))?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(&bins.docknetd);
                c
            }
            None => Command::new(&bins.docknetd),
        };
        cmd.arg("--run-dir").arg(&run.path).args(args);
        let proc = ChildGuard::spawn(name, cmd)?;
        let mut d = Daemon {
            proc,
            run,
            bins: bins.clone(),
        };
        let sock = d.socket_path();
        let deadline = Instant::now() + timeout;
        let mut last = String::from("control socket not created yet");
        loop {
            if let Some(status) = d.proc.exited() {
                // Let the stderr reader catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "{name} exited ({status}) during start-up; stderr: {}",
                    d.proc.stderr_tail.digest()
                ));
            }
            if sock.exists() {
                match d.ctl(&["pipe", "ls"]) {
                    Ok(_) => break,
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} not ready within {timeout:?}: {last}; stderr: {}",
                    d.proc.stderr_tail.digest()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log::info!("{name} ready (run dir {})", d.run.path.display());
        Ok(d)
    }

    /// Runs `docknetctl --run-dir RUN ARGS...`; returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        self.ctl_timeout(args, Duration::from_secs(10))
    }

    /// [`Daemon::ctl`] for a command that may take up to `timeout` (`cluster up`).
    pub fn ctl_timeout(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new(&self.bins.docknetctl);
        cmd.arg("--run-dir").arg(&self.run.path).args(args);
        let out = run_with_timeout("docknetctl", cmd, timeout)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(format!(
                "`docknetctl {}` failed ({}): {}",
                args.join(" "),
                out.status,
                out.stderr_tail
            ))
        }
    }

    /// Its control socket.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.run.path)
    }

    /// Sends one request on its control socket; returns the answer's `data`.
    pub fn request(&self, req: &Request) -> Result<Value, String> {
        request_at(&self.socket_path(), req)
    }

    /// The directory of pipe `name` (what `DOCKNET_PIPE` points at).
    pub fn pipe_dir(&self, name: &str) -> PathBuf {
        self.run.path.join("pipes").join(name)
    }

    /// Daemon stderr so far (for error reports).
    pub fn stderr_tail(&self) -> String {
        self.proc.stderr_tail.digest()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `Some(status)` if the daemon died.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.exited()
    }
}
