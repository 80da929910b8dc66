//! Running a cluster's processes: start one as its user in a session of its own, tell
//! whether it still runs (also one started by an earlier docknetd, which is not our
//! child), stop it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// How to start one process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment besides a minimal `PATH` (nothing is inherited from docknetd).
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    /// Standard output and error are appended here.
    pub log: PathBuf,
}

/// A running (or once running) process.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22): a pid reused
    /// by another process after ours died does not match.
    pub start_time: u64,
    /// Set when we started it (then `try_wait` reaps it); `None` when adopted.
    child: Option<Child>,
}

/// Start time of `pid`, or `None` if it is gone (or a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: parse after
    // the last ')'. Fields from there: 3 state, ..., 22 starttime.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Proc {
    /// Start `l`. The child gets a session of its own (a Ctrl-C or a hang-up aimed at
    /// docknetd's terminal does not reach it; it outlives docknetd), an empty signal
    /// mask (docknetd blocks the signals it waits for), `/dev/null` as input.
    pub fn spawn(l: &Launch) -> std::io::Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log)?;
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir("/")
            .uid(l.uid)
            .gid(l.gid);
        // SAFETY: only async-signal-safe calls (setsid, sigemptyset, sigprocmask) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok(Proc {
            pid,
            start_time: start_time(pid).unwrap_or(0),
            child: Some(child),
        })
    }

    /// A process an earlier docknetd started, if it still runs as recorded.
    pub fn adopt(pid: u32, recorded_start: u64) -> Option<Proc> {
        (pid != 0 && start_time(pid)? == recorded_start).then_some(Proc {
            pid,
            start_time: recorded_start,
            child: None,
        })
    }

    /// True while it runs (a child that ended is reaped here).
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => start_time(self.pid) == Some(self.start_time),
        }
    }

    /// Send `sig` if it still runs.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.alive() {
            // SAFETY: kill(2) on the pid we started or verified by its start time.
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then SIGKILL after `grace` if it has not ended.
    pub fn stop(&mut self, grace: std::time::Duration) {
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while self.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.signal(libc::SIGKILL);
        if let Some(c) = &mut self.child {
            let _ = c.wait();
        }
    }
}
