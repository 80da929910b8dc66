//! `docknetd` runtime: run directory and tmpfs, stale-state cleanup, threads, signals.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use docknet_pipe::abi::Doorbell;

use crate::control::{self, Control, LinkInfo, Request, PIPES_DIR, SOCKET_NAME};
use crate::link::LinkStats;
use crate::net;
use crate::nic::{Nic, NicSpec};
use crate::switch::{DpMsg, Switch};

/// `statfs` magic of tmpfs.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What `docknetd` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub run_dir: PathBuf,
    /// NIC backend (`none`, `tap:NAME`, `af-packet:IFACE`, `dpdk:'EAL ARGS'`).
    pub nic: String,
    /// Pin the data-path thread to this CPU.
    pub core: Option<usize>,
    /// How the master ages the neighbours it learns on the NIC's link.
    pub neighbor_timers: crate::link::NeighborTimers,
    /// The group (name or number) that may use the control socket besides root.
    pub group: Option<String>,
    /// The rate limits' fine timer (µs) and coarse timer (ms), checked by [`run`].
    pub rate_timers: (u64, u64),
    /// docknetd's own address on the NIC's link, `A.B.C.D/N` (`--link-ip`): answered in
    /// ARP, the next hop other nodes' routes name. Checked by [`run`].
    pub link_ip: Option<String>,
}

/// Why the daemon could not run; [`DaemonError::code`] is the exit status.
#[derive(Debug)]
pub enum DaemonError {
    /// A command-line value is wrong (`--nic`, `--group`, the rate timers): exit 2.
    Usage(String),
    /// The NIC could not be opened: exit 2.
    Nic(String),
    /// Another docknetd answers on this run directory.
    AlreadyRunning(PathBuf),
    /// A file-system or socket operation failed.
    Io {
        /// What was being done ("creating", "listening on", ...).
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The state file left by an earlier docknetd cannot be used.
    State(crate::state::StateError),
    /// A thread could not be started.
    Thread(&'static str, std::io::Error),
}

impl DaemonError {
    /// The exit status: 2 for bad options, 1 for the rest.
    pub fn code(&self) -> i32 {
        match self {
            DaemonError::Usage(_) | DaemonError::Nic(_) => 2,
            _ => 1,
        }
    }

    fn io(doing: &'static str, path: &Path, source: std::io::Error) -> Self {
        DaemonError::Io {
            doing,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Usage(m) | DaemonError::Nic(m) => f.write_str(m),
            DaemonError::AlreadyRunning(d) => {
                write!(f, "another docknetd is running on {}", d.display())
            }
            DaemonError::Io {
                doing,
                path,
                source,
            } => write!(f, "{doing} {}: {source}", path.display()),
            DaemonError::State(e) => write!(
                f,
                "{e} (move it away to start with no pipes; their services then have to restart)"
            ),
            DaemonError::Thread(which, e) => write!(f, "cannot start the {which} thread: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

fn cpath(p: &Path) -> Result<std::ffi::CString, DaemonError> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        DaemonError::io(
            "using",
            p,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// The filesystem magic of the filesystem holding `p`.
pub fn fs_magic(p: &Path) -> std::io::Result<i64> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// True if `p` is a mount point (its device differs from its parent's).
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(p), p.parent().map(std::fs::metadata))
    else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Mount options of the pipe tmpfs, preferred first. `huge=within_size` backs the pipe
/// and fast-channel files (allocated whole at creation, see `docknet_pipe::shm`) with
/// 2 MiB pages where they fill them, for the same memory: with 4 KiB pages every 64 KiB
/// buffer (a fast channel had 512 of them a direction before the two buffer pools) sits
/// on pages of its own, and at 10,000 connections, every frame in flight, each frame
/// cost both processes a TLB miss (a nested page walk in a VM). A kernel without
/// transparent huge pages for tmpfs refuses the option: then plain pages.
const TMPFS_OPTIONS: [&std::ffi::CStr; 2] = [
    c"size=50%,mode=0755,huge=within_size",
    c"size=50%,mode=0755",
];

/// Mount a tmpfs on `dir`; the options that took (see [`TMPFS_OPTIONS`]).
fn mount_tmpfs(dir: &Path) -> Result<&'static std::ffi::CStr, String> {
    let target = cpath(dir).map_err(|e| e.to_string())?;
    let src = c"docknet";
    let fstype = c"tmpfs";
    let mut last = None;
    for opts in TMPFS_OPTIONS {
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Ok(opts);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err.to_string());
        }
        last = Some(err);
    }
    Err(last.map_or_else(|| "no options".to_string(), |e| e.to_string()))
}

fn unmount(dir: &Path) {
    let Ok(target) = cpath(dir) else { return };
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        log::warn!(
            "cannot unmount {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    } else {
        log::info!("unmounted tmpfs from {}", dir.display());
    }
}

/// Remove every entry under `dir` (leftover pipe directories).
fn clear_dir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Ok(()) => log::info!("removed leftover {}", p.display()),
            Err(e) => log::warn!("cannot remove leftover {}: {e}", p.display()),
        }
    }
}

/// Block SIGINT and SIGTERM in this thread (and every thread spawned later), returning the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the calls only
    // touch the set we pass and this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn pin_to(core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (core < CPU_SETSIZE checked);
    // sched_setaffinity(0, ..) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= libc::CPU_SETSIZE as usize {
            log::warn!("--core {core}: out of range, not pinning");
            return;
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::warn!(
                "cannot pin the data path to core {core}: {}",
                std::io::Error::last_os_error()
            );
        } else {
            log::info!("data path pinned to core {core}");
        }
    }
}

/// Check the `--nic` value. `Err` carries exit code 2 for unknown backends.
pub fn check_nic(nic: &str) -> Result<NicSpec, DaemonError> {
    NicSpec::parse(nic).map_err(DaemonError::Usage)
}

/// Run the daemon until SIGINT/SIGTERM.
pub fn run(opts: Options) -> Result<(), DaemonError> {
    let spec = check_nic(&opts.nic)?;
    let group = opts
        .group
        .as_deref()
        .map(crate::users::group)
        .transpose()
        .map_err(|e| DaemonError::Usage(format!("--group: {e}")))?;
    let (fine_us, coarse_ms) = opts.rate_timers;
    let rate_periods =
        crate::rate::RatePeriods::new(fine_us, coarse_ms).map_err(DaemonError::Usage)?;
    let link_ip = opts
        .link_ip
        .as_deref()
        .map(crate::route::parse_link_addr)
        .transpose()
        .map_err(|e| DaemonError::Usage(format!("--link-ip: {e}")))?;
    if link_ip.is_some() && matches!(spec, NicSpec::None) {
        return Err(DaemonError::Usage(
            "--link-ip needs a NIC (--nic af-packet:IFACE, tap:NAME or dpdk:...): with --nic none there is no link".into(),
        ));
    }
    let run_dir = &opts.run_dir;
    let pipes_dir = run_dir.join(PIPES_DIR);
    let sock = run_dir.join(SOCKET_NAME);
    std::fs::create_dir_all(&pipes_dir)
        .map_err(|e| DaemonError::io("cannot create", &pipes_dir, e))?;

    // Stale state from an earlier daemon.
    let mut stale = false;
    if sock.exists() {
        match control::request(&sock, &Request::Ping, Duration::from_secs(2)) {
            Ok(_) | Err(control::ClientError::Remote(_)) => {
                return Err(DaemonError::AlreadyRunning(run_dir.to_path_buf()));
            }
            Err(control::ClientError::Unreachable(_)) => {
                log::warn!("removing stale control socket {}", sock.display());
                std::fs::remove_file(&sock)
                    .map_err(|e| DaemonError::io("cannot remove the stale", &sock, e))?;
                stale = true;
            }
        }
    }
    // What an earlier docknetd left running here, to re-adopt.
    let saved = crate::state::load(run_dir).map_err(DaemonError::State)?;
    match &saved {
        Some(s) => log::info!(
            "re-adopting {} pipes and {} fast channels left by an earlier docknetd",
            s.pipes.len(),
            s.fcs.len()
        ),
        None => clear_dir(&pipes_dir),
    }

    // tmpfs for the pipe files.
    let mut mounted = false;
    match fs_magic(&pipes_dir) {
        Ok(TMPFS_MAGIC) => {
            if (stale || saved.is_some()) && is_mount_point(&pipes_dir) {
                log::info!(
                    "{} is a tmpfs left by a previous docknetd: reusing it",
                    pipes_dir.display()
                );
                mounted = true;
            } else {
                log::info!("{} is already on tmpfs", pipes_dir.display());
            }
        }
        _ => match mount_tmpfs(&pipes_dir) {
            Ok(opts) => {
                log::info!(
                    "mounted tmpfs on {} ({})",
                    pipes_dir.display(),
                    opts.to_string_lossy()
                );
                mounted = true;
            }
            Err(e) => log::warn!(
                "cannot mount tmpfs on {} ({e}); pipe files stay on the plain filesystem",
                pipes_dir.display()
            ),
        },
    }

    let result = crate::nic::open(&spec, control::DEFAULT_MTU)
        .map_err(DaemonError::Nic)
        .and_then(|nic| {
            serve(
                &opts,
                &sock,
                nic,
                &spec,
                saved,
                (group, rate_periods, link_ip),
            )
        });

    if let Ok(true) = result {
        log::info!(
            "pipes, fast channels and services left in place in {}: a docknetd started on it re-adopts them (docknetctl shutdown --remove-all removes them)",
            run_dir.display()
        );
        return Ok(());
    }
    if mounted {
        unmount(&pipes_dir);
    }
    let _ = std::fs::remove_dir(&pipes_dir);
    let _ = std::fs::remove_dir(run_dir);
    result.map(|_| ())
}

/// Serve until a stop; `Ok(true)` if pipes were left in place for the next docknetd.
fn serve(
    opts: &Options,
    sock: &Path,
    nic: Option<Box<dyn Nic>>,
    spec: &NicSpec,
    saved: Option<crate::state::SavedState>,
    (group, rate_periods, link_ip): (
        Option<u32>,
        crate::rate::RatePeriods,
        Option<(std::net::Ipv4Addr, u8)>,
    ),
) -> Result<bool, DaemonError> {
    let sigs = block_signals();
    let listener =
        UnixListener::bind(sock).map_err(|e| DaemonError::io("cannot listen on", sock, e))?;
    // Root and the daemon's group only (SO_PEERCRED is checked again per connection).
    let c = cpath(sock)?;
    // SAFETY: a NUL-terminated path of the socket we just bound.
    if unsafe {
        libc::chown(c.as_ptr(), 0, group.unwrap_or(0)) != 0 || libc::chmod(c.as_ptr(), 0o660) != 0
    } {
        return Err(DaemonError::io(
            "cannot restrict to root and its group",
            sock,
            std::io::Error::last_os_error(),
        ));
    }

    let bell = Arc::new(Doorbell::new());
    let (dp_tx, dp_rx) = mpsc::channel::<DpMsg>();
    let core = opts.core;
    let timers = opts.neighbor_timers;
    log::info!(
        "rate limits: tokens every {:?}, unspent tokens dropped every {:?}",
        rate_periods.fine(),
        rate_periods.coarse()
    );
    let dp_bell = bell.clone();
    let link = nic.as_ref().map(|n| LinkInfo {
        name: n.name().to_string(),
        tap: match spec {
            NicSpec::Tap(name) => Some(name.clone()),
            _ => None,
        },
        mtu: (n.max_frame() - net::ETH_LEN) as u32,
        pipe_mtu: control::pipe_mtu_for((n.max_frame() - net::ETH_LEN) as u32, n.gso_max_frame()),
        arp_reachable: opts.neighbor_timers.reachable,
        ip: link_ip,
        stats: Arc::new(LinkStats::default()),
    });
    if let Some(l) = &link {
        log::info!(
            "NIC {} up, IP MTU {}, default pipe MTU {}{}",
            l.name,
            l.mtu,
            l.pipe_mtu,
            l.ip.map_or(String::new(), |(a, p)| format!(
                ", link address {a}/{p} (routes possible)"
            ))
        );
    }
    let link_stats = link.as_ref().map(|l| l.stats.clone());
    let dp = std::thread::Builder::new()
        .name("docknetd-dp".into())
        .spawn(move || {
            if let Some(c) = core {
                pin_to(c);
            }
            let sw = Switch::new(dp_rx, dp_bell).with_rate_periods(rate_periods);
            let mut sw = match (nic, link_stats) {
                (Some(nic), Some(stats)) => {
                    let sw = sw.with_nic(nic, stats, timers);
                    match link_ip {
                        Some((a, p)) => sw.with_link_addr(a, p),
                        None => sw,
                    }
                }
                _ => sw,
            };
            sw.run();
        })
        .map_err(|e| DaemonError::Thread("data-path", e))?;

    let mut control = Control::new(&opts.run_dir, dp_tx.clone(), bell.clone());
    control.set_group(group);
    if let Some(l) = link {
        control.set_link(l);
    }
    if let Some(s) = saved {
        control.readopt(s);
    }
    let ctl = Arc::new(Mutex::new(control));
    let stop = Arc::new(AtomicBool::new(false));
    let listen_fd = listener.as_raw_fd();
    let accept = {
        let (ctl, stop) = (ctl.clone(), stop.clone());
        std::thread::Builder::new()
            .name("docknetd-ctl".into())
            .spawn(move || control::serve(listener, ctl, stop))
            .map_err(|e| DaemonError::Thread("control", e))?
    };

    // The cluster supervisor: restarts what died, starts what is due.
    let supervisor = {
        let (ctl, stop) = (ctl.clone(), stop.clone());
        std::thread::Builder::new()
            .name("docknetd-sup".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    control::lock(&ctl).cluster_tick();
                    std::thread::sleep(control::clusters::TICK);
                }
            })
            .map_err(|e| DaemonError::Thread("supervisor", e))?
    };

    log::info!("docknetd: ready on {}", sock.display());
    eprintln!("docknetd: ready on {}", sock.display());

    let mut sig: libc::c_int = 0;
    // SAFETY: `sigs` is an initialised set; sigwait writes the signal number into `sig`.
    while unsafe { libc::sigwait(&sigs, &mut sig) } != 0 {}
    log::info!("docknetd: signal {sig}, shutting down");

    stop.store(true, Ordering::Release);
    // SAFETY: the listener fd is still open (owned by the accept thread, which exits only
    // after this wakes it); shutdown makes a blocked accept return.
    unsafe { libc::shutdown(listen_fd, libc::SHUT_RDWR) };
    // In case shutdown did not wake it: a connection does (the loop then sees `stop`).
    let _ = std::os::unix::net::UnixStream::connect(sock);
    if accept.join().is_err() {
        log::warn!("control thread panicked");
    }
    if supervisor.join().is_err() {
        log::warn!("supervisor thread panicked");
    }
    let keep = {
        let mut c = control::lock(&ctl);
        let remove_all = c.exit_request().unwrap_or(false);
        // Routes alone are worth keeping too: a node whose pods come later keeps them.
        let keep = !remove_all && (c.pipe_count() > 0 || c.route_count() > 0);
        if keep {
            c.detach();
        } else {
            c.shutdown();
        }
        keep
    };
    let _ = dp_tx.send(DpMsg::Shutdown { keep_nic: keep });
    bell.ring();
    if dp.join().is_err() {
        log::warn!("data-path thread panicked");
    }
    let _ = std::fs::remove_file(sock);
    log::info!("docknetd: stopped");
    Ok(keep)
}
