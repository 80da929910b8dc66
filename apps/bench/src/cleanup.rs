//! Cleanup on every exit path.
//!
//! Resources (child processes, network namespaces, temp dirs, clusters run by a
//! docknetd) are owned by guards that release them on `Drop`. Each guard also registers its resource
//! here, so that a SIGINT/SIGTERM/SIGHUP — handled by a dedicated thread that
//! `sigwait`s for them — can release everything still held before exiting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A resource to release.
#[derive(Debug, Clone)]
pub enum Resource {
    Process(u32),
    Netns(String),
    Dir(PathBuf),
    /// A cluster the docknetd of run dir `run` supervises: its processes are not our
    /// children (docknetd starts them in sessions of their own, and they outlive it).
    Cluster {
        docknetctl: PathBuf,
        run: PathBuf,
        name: String,
    },
}

static REGISTRY: Mutex<Vec<(u64, Resource)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// True once a signal started the final cleanup; the process is about to exit.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Registers a resource; returns a handle for [`unregister`].
pub fn register(res: Resource) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock().push((id, res));
    id
}

/// Forgets a resource (its guard released it).
pub fn unregister(id: u64) {
    lock().retain(|(i, _)| *i != id);
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, Resource)>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends SIGTERM, waits up to `grace` for the process to go away, then SIGKILL.
/// Only for processes we did not `wait` for elsewhere (the signal path); guards
/// use `Child::wait` instead.
fn terminate_pid(pid: u32, grace: Duration) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of a child we spawned (positive, never 0 or -1,
    // so it cannot address a process group) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < grace {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid pointer to a local int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid || r < 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: as above; reaps the killed child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Releases everything still registered: clusters first (while their docknetd still
/// runs), then processes, namespaces and dirs.
pub fn release_all() {
    let items: Vec<Resource> = lock().drain(..).map(|(_, r)| r).collect();
    for r in &items {
        if let Resource::Cluster {
            docknetctl,
            run,
            name,
        } = r
        {
            if let Err(e) = stop_cluster(docknetctl, run, name) {
                eprintln!("docknet-bench: {e}");
            }
        }
    }
    for r in &items {
        if let Resource::Process(pid) = r {
            terminate_pid(*pid, Duration::from_millis(500));
        }
    }
    for r in &items {
        if let Resource::Netns(name) = r {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    for r in &items {
        if let Resource::Dir(path) = r {
            let _ = remove_tree(path);
        }
    }
}

/// `docknetctl --run-dir RUN cluster down NAME` (at most 30 s). If that fails (docknetd
/// died, say), SIGKILL to every process still attached to a pipe of RUN: the members and
/// the NAT left behind, found by their `DOCKNET_PIPE`, which names a pipe of this bench's
/// private run directory, so only processes started for this run match.
pub fn stop_cluster(
    docknetctl: &std::path::Path,
    run: &std::path::Path,
    name: &str,
) -> Result<(), String> {
    let mut cmd = std::process::Command::new(docknetctl);
    cmd.arg("--run-dir")
        .arg(run)
        .args(["cluster", "down", name])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    unblock_signals_in_child(&mut cmd);
    let result = match cmd.spawn() {
        Ok(mut child) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(s)) if s.success() => break Ok(()),
                    Ok(Some(s)) => {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            use std::io::Read;
                            let _ = e.read_to_string(&mut err);
                        }
                        break Err(format!("cluster down {name}: {s}: {}", err.trim()));
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!("cluster down {name}: no answer within 30 s"));
                    }
                }
            }
        }
        Err(e) => Err(format!("cluster down {name}: {e}")),
    };
    if result.is_err() {
        let n = kill_pipe_users(run);
        if n > 0 {
            log::warn!(
                "cluster {name}: killed {n} process(es) still attached to pipes of {}",
                run.display()
            );
        }
    }
    result
}

/// SIGKILLs every process whose environment has `DOCKNET_PIPE=RUN/pipes/...`; returns
/// how many.
fn kill_pipe_users(run: &std::path::Path) -> usize {
    let mut want = b"DOCKNET_PIPE=".to_vec();
    want.extend_from_slice(run.join("pipes").as_os_str().as_encoded_bytes());
    want.push(b'/');
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v.starts_with(&want)) {
            if let Ok(p) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) on a positive pid (never 0 or -1, so never a group).
                unsafe { libc::kill(p, libc::SIGKILL) };
                n += 1;
            }
        }
    }
    n
}

/// Remove a DockNet run directory tree. A docknetd stopped with pipes in place (SIGTERM
/// keeps them for the next docknetd) leaves its tmpfs mounted on `pipes/`: detach it
/// first, or the removal fails on the mount point.
fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    if let Ok(c) = std::ffi::CString::new(path.join("pipes").as_os_str().as_encoded_bytes()) {
        // SAFETY: a NUL-terminated path; umount2 fails harmlessly when nothing is mounted.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    std::fs::remove_dir_all(path)
}

/// Blocks SIGINT/SIGTERM/SIGHUP in the calling thread (and so in every thread
/// spawned after this call) and starts a thread that waits for them, releases
/// all registered resources and exits with 128+signal.
///
/// Must be called first thing in `main`, before any other thread exists.
/// The mask is inherited by children: spawn them with
/// [`unblock_signals_in_child`] so they still see these signals.
pub fn install_signal_thread() {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset/sigaddset
    // initialize it; pthread_sigmask only changes the calling thread's mask and
    // is given valid pointers (old mask not requested).
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialized sigset_t; `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            SHUTTING_DOWN.store(true, Ordering::SeqCst);
            eprintln!("docknet-bench: caught signal {sig}, cleaning up");
            release_all();
            std::process::exit(128 + sig);
        })
        .expect("spawn signal thread");
}

/// Removes a directory tree on drop (and on a signal).
pub struct DirGuard {
    pub path: PathBuf,
    id: u64,
    keep: bool,
}

impl DirGuard {
    pub fn create(path: PathBuf, keep: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(&path)?;
        let id = if keep {
            0
        } else {
            register(Resource::Dir(path.clone()))
        };
        Ok(DirGuard { path, id, keep })
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.keep {
            log::info!("keeping {}", self.path.display());
            return;
        }
        unregister(self.id);
        match remove_tree(&self.path) {
            Ok(()) => {}
            // docknetd removes its run dir itself on a clean shutdown.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing {}: {e}", self.path.display()),
        }
    }
}

/// Makes `cmd`'s child start with an empty signal mask. Needed because the
/// mask is inherited across fork/exec, and [`install_signal_thread`] blocks
/// SIGINT/SIGTERM/SIGHUP in every thread of this process: without this a
/// child would never see the SIGTERM we send it.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // sigemptyset and pthread_sigmask (sigprocmask), which are async-signal-safe;
    // it touches no locks, allocates nothing and uses only its own stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
