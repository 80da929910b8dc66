//! Pipe files: creating one (the master) and attaching to one (a service).

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::abi::*;
use crate::channel::{ChannelFaults, ChannelReceiver, ChannelSender};
use crate::claim::{self, Claim};
use crate::shm::SharedMap;

/// File name of the pipe inside its directory.
pub const PIPE_FILE: &str = "pipe.map";
/// Directory (inside a pipe directory) holding its fast-channel files.
pub const FC_DIR: &str = "fc";

/// What a pipe is, as the master configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeConfig {
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// IP MTU.
    pub mtu: u32,
    /// Buffers per direction (the small ones when `nlarge` is not 0).
    pub nbufs: u32,
    /// Large buffers per direction, for frames above [`SMALL_POOL_MTU`]
    /// ([`ChannelGeometry::two_pools`]); 0: every buffer holds a frame of `mtu`.
    pub nlarge: u32,
    /// [`pipe_flags`] bits.
    pub flags: u32,
}

/// Why a pipe (or fast-channel) file could not be used.
#[derive(Debug)]
pub enum AttachError {
    /// The file could not be opened or mapped.
    Open { path: PathBuf, err: io::Error },
    /// The file is shorter than its header or than it says it is.
    Truncated { path: PathBuf, len: usize },
    /// Not a DockNet file (wrong magic).
    BadMagic { path: PathBuf },
    /// Made by an incompatible version.
    Version { path: PathBuf, found: u32 },
    /// A header field is out of range.
    BadField {
        path: PathBuf,
        field: &'static str,
        why: String,
    },
    /// The claim (a file lock, [`crate::claim`]) could not be taken or tested.
    Lock { path: PathBuf, err: io::Error },
    /// Another live process holds its claim ([`crate::claim`]).
    AlreadyAttached { path: PathBuf, pid: u32 },
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::Open { path, err } => write!(f, "cannot open {}: {err}", path.display()),
            AttachError::Truncated { path, len } => {
                write!(f, "{} is truncated ({len} bytes)", path.display())
            }
            AttachError::BadMagic { path } => {
                write!(f, "{} is not a DockNet shared file", path.display())
            }
            AttachError::Version { path, found } => write!(
                f,
                "{} has ABI version {found}, this program speaks version {ABI_VERSION}",
                path.display()
            ),
            AttachError::BadField { path, field, why } => {
                write!(f, "{}: header field {field}: {why}", path.display())
            }
            AttachError::Lock { path, err } => {
                write!(f, "cannot lock {} to claim it: {err}", path.display())
            }
            AttachError::AlreadyAttached { path, pid } => {
                write!(f, "{} is in use by another running process", path.display())?;
                match *pid {
                    0 => Ok(()),
                    p if pid_alive(p) => write!(f, " (pid {p})"),
                    p => write!(
                        f,
                        " (it recorded pid {p}, not visible here: another pid namespace)"
                    ),
                }
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// True if a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    pid != 0
        && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Read a plain (non-atomic) header field once. The peer could change it at any time; we
/// copy it out and validate the copy.
macro_rules! read_field {
    ($hdr:expr, $field:ident) => {
        // SAFETY: `$hdr` points at a header inside a live mapping (bounds checked by
        // `ptr_at`); read_volatile copies the field out once.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$hdr).$field)) }
    };
}
pub(crate) use read_field;

pub(crate) fn check_magic_version(map: &SharedMap, magic: u64) -> Result<(), AttachError> {
    let path = map.path().to_path_buf();
    if map.len() < HEADER_SIZE {
        return Err(AttachError::Truncated {
            path,
            len: map.len(),
        });
    }
    let m = map.ptr_at::<u64>(0).ok_or(AttachError::Truncated {
        path: path.clone(),
        len: map.len(),
    })?;
    // SAFETY: in bounds (ptr_at), read once.
    if unsafe { core::ptr::read_volatile(m) } != magic {
        return Err(AttachError::BadMagic { path });
    }
    let v = map.ptr_at::<u32>(8).ok_or(AttachError::Truncated {
        path: path.clone(),
        len: map.len(),
    })?;
    // SAFETY: as above.
    let version = unsafe { core::ptr::read_volatile(v) };
    if version != ABI_VERSION {
        return Err(AttachError::Version {
            path,
            found: version,
        });
    }
    Ok(())
}

pub(crate) fn check_layout(
    map: &SharedMap,
    which: &'static str,
    l: &ChannelLayout,
) -> Result<(), AttachError> {
    l.validate(map.len() as u64)
        .map_err(|e| AttachError::BadField {
            path: map.path().to_path_buf(),
            field: which,
            why: e.to_string(),
        })
}

/// A pipe's identity as read (and validated) from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeInfo {
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub flags: u32,
    pub rx: ChannelLayout,
    pub tx: ChannelLayout,
}

/// Read and validate the header of a mapped pipe file.
pub fn read_pipe_info(map: &SharedMap) -> Result<PipeInfo, AttachError> {
    check_magic_version(map, PIPE_MAGIC)?;
    let hdr = map
        .ptr_at::<PipeHeader>(0)
        .expect("header fits: checked above");
    let path = || map.path().to_path_buf();
    let info = PipeInfo {
        mac: read_field!(hdr, mac),
        ipv4: Ipv4Addr::from(read_field!(hdr, ipv4)),
        prefix_len: read_field!(hdr, prefix_len),
        gateway: Ipv4Addr::from(read_field!(hdr, gateway)),
        mtu: read_field!(hdr, mtu),
        flags: read_field!(hdr, flags),
        rx: read_field!(hdr, rx),
        tx: read_field!(hdr, tx),
    };
    if info.prefix_len == 0 || info.prefix_len > 30 {
        return Err(AttachError::BadField {
            path: path(),
            field: "prefix_len",
            why: format!("{} not in 1..=30", info.prefix_len),
        });
    }
    if !(MIN_MTU..=MAX_MTU).contains(&info.mtu) {
        return Err(AttachError::BadField {
            path: path(),
            field: "mtu",
            why: format!("{} not in {MIN_MTU}..={MAX_MTU}", info.mtu),
        });
    }
    if info.mac[0] & 1 != 0 {
        return Err(AttachError::BadField {
            path: path(),
            field: "mac",
            why: "multicast address".into(),
        });
    }
    check_layout(map, "rx", &info.rx)?;
    check_layout(map, "tx", &info.tx)?;
    for l in [&info.rx, &info.tx] {
        if (l.max_frame() as usize) < info.mtu as usize + ETH_HEADER_LEN {
            return Err(AttachError::BadField {
                path: path(),
                field: "buf_size",
                why: format!(
                    "the largest buffer, {} bytes, is below MTU {} + 14",
                    l.max_frame(),
                    info.mtu
                ),
            });
        }
    }
    // The two channels must not overlap each other either.
    if info.rx.overlaps(&info.tx) {
        return Err(AttachError::BadField {
            path: path(),
            field: "tx",
            why: "overlaps rx".into(),
        });
    }
    Ok(info)
}

/// Create a pipe file at `dir/pipe.map` (and `dir/fc/`). The directory must exist.
pub fn create_pipe_file(dir: &Path, cfg: &PipeConfig) -> io::Result<SharedMap> {
    let geo = ChannelGeometry::two_pools(cfg.mtu, cfg.nbufs, cfg.nlarge);
    let (rx, off) = geo.layout_at(HEADER_SIZE);
    let (tx, end) = geo.layout_at(off);
    std::fs::create_dir_all(dir.join(FC_DIR))?;
    let map = SharedMap::create(&dir.join(PIPE_FILE), end)?;
    let hdr = map
        .ptr_at::<PipeHeader>(0)
        .expect("file is larger than the header");
    // SAFETY: the file was just created by us and nobody else has mapped it yet; the
    // header lies inside the mapping (ptr_at). Fields are written through raw pointers.
    unsafe {
        use core::ptr::addr_of_mut;
        addr_of_mut!((*hdr).version).write(ABI_VERSION);
        addr_of_mut!((*hdr).header_size).write(HEADER_SIZE as u32);
        addr_of_mut!((*hdr).file_size).write(end as u64);
        addr_of_mut!((*hdr).mac).write(cfg.mac);
        addr_of_mut!((*hdr).prefix_len).write(cfg.prefix_len);
        addr_of_mut!((*hdr).ipv4).write(cfg.ipv4.octets());
        addr_of_mut!((*hdr).gateway).write(cfg.gateway.octets());
        addr_of_mut!((*hdr).mtu).write(cfg.mtu);
        addr_of_mut!((*hdr).flags).write(cfg.flags);
        addr_of_mut!((*hdr).rx).write(rx);
        addr_of_mut!((*hdr).tx).write(tx);
        // Magic last, after a fence: a reader that sees it sees a complete header.
        std::sync::atomic::fence(Ordering::Release);
        addr_of_mut!((*hdr).magic).write_volatile(PIPE_MAGIC);
    }
    Ok(map)
}

fn header(map: &SharedMap) -> *mut PipeHeader {
    map.ptr_at::<PipeHeader>(0).expect("validated header")
}

/// The master's end of a pipe: it sends on `rx` and receives on `tx`.
pub struct MasterPipeEnd {
    pub info: PipeInfo,
    pub rx: ChannelSender,
    pub tx: ChannelReceiver,
    pub faults: Arc<ChannelFaults>,
    map: Arc<SharedMap>,
}

impl MasterPipeEnd {
    /// Wrap a pipe file the master created (its header is re-validated anyway).
    pub fn new(map: SharedMap) -> Result<Self, AttachError> {
        let info = read_pipe_info(&map)?;
        let map = Arc::new(map);
        let hdr = header(&map);
        let faults = Arc::new(ChannelFaults::default());
        // SAFETY: `map` is kept alive in the returned struct (Arc) for as long as the channel
        // ends; the bells are inside its header.
        let (rx, tx) = unsafe {
            (
                ChannelSender::new(
                    &map,
                    &info.rx,
                    core::ptr::addr_of!((*hdr).service_bell),
                    faults.clone(),
                ),
                // Returning TX buffers wakes a service that sleeps waiting for them.
                ChannelReceiver::new(
                    &map,
                    &info.tx,
                    core::ptr::addr_of!((*hdr).service_bell),
                    faults.clone(),
                ),
            )
        };
        let bad = |field| AttachError::BadField {
            path: map.path().to_path_buf(),
            field,
            why: "out of file".into(),
        };
        Ok(MasterPipeEnd {
            rx: rx.ok_or_else(|| bad("rx"))?,
            tx: tx.ok_or_else(|| bad("tx"))?,
            info,
            faults,
            map,
        })
    }

    /// Take over a pipe file an earlier master created and served (a restarted
    /// `docknetd`): as [`MasterPipeEnd::new`], then the RX channel's buffers are sorted into
    /// lent and free from what the rings show ([`ChannelSender::adopt`]); the TX channel
    /// resumes at the consumer index the old master published (frames it took but had not
    /// released are switched again: a duplicate segment at worst).
    pub fn adopt(map: SharedMap) -> Result<Self, AttachError> {
        let mut end = Self::new(map)?;
        end.rx.adopt();
        Ok(end)
    }

    /// The doorbell the master sleeps on for this pipe.
    pub fn master_bell(&self) -> *const Doorbell {
        // SAFETY: header is inside the live mapping.
        unsafe { core::ptr::addr_of!((*header(&self.map)).master_bell) }
    }

    /// [`master_bell`](Self::master_bell) as a handle that keeps the pipe mapped.
    pub fn master_bell_handle(&self) -> crate::doorbell::BellHandle {
        // SAFETY: the bell is in the header of this very mapping.
        unsafe { crate::doorbell::BellHandle::in_map(self.map.clone(), self.master_bell()) }
    }

    /// Pid of the attached service, 0 if none (untrusted value; only for display/policy).
    pub fn attached_pid(&self) -> u32 {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).attached_pid }.load(Ordering::Relaxed)
    }

    /// The mapped file.
    pub fn map(&self) -> &SharedMap {
        &self.map
    }

    /// True once the service shrank its pipe file under us (a SIGBUS was caught): the
    /// mapping is private zeros now; the pipe must be quarantined ([`crate::sigbus`]).
    pub fn is_broken(&self) -> bool {
        self.map.is_broken()
    }

    /// A handle for the control thread: header atomics only, safe to use while the data
    /// path owns this end.
    pub fn control(&self) -> PipeControl {
        PipeControl {
            map: self.map.clone(),
        }
    }
}

/// The control plane's view of a pipe header (attach state, fast-channel generation).
#[derive(Clone)]
pub struct PipeControl {
    map: Arc<SharedMap>,
}

impl PipeControl {
    /// The control handle of a pipe file mapped by someone other than its master end (a
    /// tool, a test); the header is validated first.
    pub fn from_map(map: SharedMap) -> Result<Self, AttachError> {
        read_pipe_info(&map)?;
        Ok(PipeControl { map: Arc::new(map) })
    }

    /// Pid of the attached service, 0 if none (written by the service: display only).
    pub fn attached_pid(&self) -> u32 {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).attached_pid }.load(Ordering::Relaxed)
    }

    /// Tell the attached service that its fast channels changed, and wake it.
    pub fn bump_fc_generation(&self) {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).fc_generation }.fetch_add(1, Ordering::Release);
        // SAFETY: bell in the live mapping.
        unsafe { crate::doorbell::ring(core::ptr::addr_of!((*header(&self.map)).service_bell)) };
    }

    /// Publish which fast-channel peers may send this pipe's service frames with foreign
    /// source addresses ([`crate::abi::PipeHeader::fc_forwarders`]); at most
    /// [`crate::abi::MAX_FC_FORWARDERS`] (the rest are ignored). Call before
    /// [`PipeControl::bump_fc_generation`].
    pub fn set_fc_forwarders(&self, peers: &[Ipv4Addr]) {
        let hdr = header(&self.map);
        for i in 0..crate::abi::MAX_FC_FORWARDERS {
            let v = peers.get(i).map_or(0, |ip| u32::from_be_bytes(ip.octets()));
            // SAFETY: header in the live mapping; atomic field.
            unsafe { &(*hdr).fc_forwarders[i] }.store(v, Ordering::Release);
        }
    }

    /// True if a live process holds the pipe's claim ([`crate::claim`]), asked of the
    /// file the master mapped, never of whatever is at its path now.
    pub fn is_claimed(&self) -> std::io::Result<bool> {
        crate::claim::is_claimed_file(self.map.file(), crate::claim::PIPE_SLOT)
    }

    /// True once the pipe file was shrunk under the master ([`MasterPipeEnd::is_broken`]).
    pub fn is_broken(&self) -> bool {
        self.map.is_broken()
    }

    /// Mark the pipe removed and wake the service, which then stops using it.
    pub fn close(&self) {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).closed }.store(1, Ordering::Release);
        // SAFETY: bell in the live mapping.
        unsafe { crate::doorbell::ring(core::ptr::addr_of!((*header(&self.map)).service_bell)) };
    }
}

/// A service's end of its pipe: it receives on `rx` and sends on `tx`.
pub struct ServicePipeEnd {
    pub info: PipeInfo,
    pub rx: ChannelReceiver,
    pub tx: ChannelSender,
    pub faults: Arc<ChannelFaults>,
    pub dir: PathBuf,
    map: Arc<SharedMap>,
    /// Held while attached; the kernel drops it if we die ([`crate::claim`]).
    _claim: Claim,
}

impl ServicePipeEnd {
    /// Attach to the pipe in directory `dir` (its `pipe.map`), claiming it for this process.
    pub fn attach(dir: &Path) -> Result<Self, AttachError> {
        let path = dir.join(PIPE_FILE);
        let map = SharedMap::open(&path).map_err(|err| AttachError::Open {
            path: path.clone(),
            err,
        })?;
        let info = read_pipe_info(&map)?;
        let hdr = header(&map);
        // SAFETY: header in the live mapping; atomic field.
        let attached = unsafe { &(*hdr).attached_pid };
        let me = std::process::id();
        let map = Arc::new(map);
        let faults = Arc::new(ChannelFaults::default());
        // SAFETY: `map` lives in the returned struct as long as the channel ends.
        let (rx, tx) = unsafe {
            (
                ChannelReceiver::new(&map, &info.rx, core::ptr::null(), faults.clone()),
                ChannelSender::new(
                    &map,
                    &info.tx,
                    core::ptr::addr_of!((*hdr).master_bell),
                    faults.clone(),
                ),
            )
        };
        let bad = |field| AttachError::BadField {
            path: path.clone(),
            field,
            why: "out of file".into(),
        };
        let (mut rx, mut tx) = (rx.ok_or_else(|| bad("rx"))?, tx.ok_or_else(|| bad("tx"))?);
        let claim = match claim::try_claim(&path, claim::PIPE_SLOT) {
            Ok(Some(c)) => c,
            Ok(None) => {
                let pid = attached.load(Ordering::Acquire);
                return Err(AttachError::AlreadyAttached { path, pid });
            }
            Err(err) => return Err(AttachError::Lock { path, err }),
        };
        // We hold the claim, so any pid still recorded is a process that died attached.
        let prev = attached.swap(me, Ordering::AcqRel);
        if prev != 0 && prev != me {
            log::info!(
                "{}: taking over from pid {prev}, which exited without detaching",
                path.display()
            );
        }
        // A previous service may have left frames and returned buffers behind.
        let stale = rx.drain();
        if !tx.resync(std::time::Duration::from_millis(500)) {
            log::warn!(
                "{}: the master did not drain the TX ring; is docknetd running?",
                path.display()
            );
        }
        if stale > 0 {
            log::debug!("{}: dropped {stale} stale frames", path.display());
        }
        Ok(ServicePipeEnd {
            rx,
            tx,
            info,
            faults,
            dir: dir.to_path_buf(),
            map,
            _claim: claim,
        })
    }

    /// The doorbell this service sleeps on for its pipe.
    pub fn service_bell(&self) -> *const Doorbell {
        // SAFETY: header in the live mapping.
        unsafe { core::ptr::addr_of!((*header(&self.map)).service_bell) }
    }

    /// True once the master removed the pipe.
    pub fn is_closed(&self) -> bool {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).closed }.load(Ordering::Acquire) != 0
    }

    /// The fast-channel peers the master lets send us frames with foreign source
    /// addresses (copied out of the header; zeros skipped).
    pub fn fc_forwarders(&self) -> Vec<Ipv4Addr> {
        let hdr = header(&self.map);
        (0..crate::abi::MAX_FC_FORWARDERS)
            // SAFETY: header in the live mapping; atomic field.
            .map(|i| unsafe { &(*hdr).fc_forwarders[i] }.load(Ordering::Acquire))
            .filter(|&v| v != 0)
            .map(|v| Ipv4Addr::from(v.to_be_bytes()))
            .collect()
    }

    /// True once the pipe file was shrunk under this service (a SIGBUS was caught; the
    /// mapping is private zeros and reaches no one).
    pub fn is_broken(&self) -> bool {
        self.map.is_broken()
    }

    /// The master's current fast-channel generation for this pipe.
    pub fn fc_generation(&self) -> u32 {
        // SAFETY: header in the live mapping; atomic field.
        unsafe { &(*header(&self.map)).fc_generation }.load(Ordering::Acquire)
    }
}

impl Drop for ServicePipeEnd {
    fn drop(&mut self) {
        // A clean exit leaves the pipe attachable again. (Buffers lent to the master are
        // not tracked across attachments, so a re-attached service starts from the
        // indices it finds; see ARCHITECTURE.md.)
        // SAFETY: header in the live mapping; atomic field.
        let _ = unsafe { &(*header(&self.map)).attached_pid }.compare_exchange(
            std::process::id(),
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}
