//! NIC backends: how the master reaches the world outside the host.
//!
//! A [`Nic`] moves Ethernet frames in batches between the data-path thread and a link:
//! - [`tap`]: a TAP interface, so the host kernel (curl, ping, a browser) reaches services.
//! - [`af_packet`]: an existing interface through TPACKET_V3 mmap rings (RX and TX).
//! - `dpdk` (cargo feature `dpdk`): any DPDK poll-mode driver.
//!
//! The switch owns one `Nic`. It takes received frames with [`Nic::rx_burst`] (the frame
//! is only borrowed for the call: the switch copies it into a pipe), writes egress frames
//! straight into the NIC's buffers with [`Nic::tx`], and pushes them out once per round
//! with [`Nic::flush_tx`]. Nothing here allocates per frame.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

pub mod af_packet;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod tap;

/// Counters kept by a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the backend could not queue for sending (ring full, oversize, OS error).
    pub tx_dropped: u64,
    /// Frames the link lost before we saw them, when the backend can tell (ring overruns).
    pub rx_dropped: u64,
}

/// What a backend knows about the checksums of a received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CsumState {
    /// Nothing known: verify in software.
    #[default]
    Unknown,
    /// Sent by the local kernel with the L4 checksum left for the device to fill
    /// (`CHECKSUM_PARTIAL`; the field holds the pseudo-header sum). The data never crossed
    /// a real wire: trust it, do not verify (the IPv4 header checksum is filled).
    Partial,
    /// Verified by the kernel or the hardware (`CHECKSUM_UNNECESSARY`).
    Valid,
}

/// Offload metadata of a received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    pub csum: CsumState,
    /// Non-zero for a TCP/IPv4 GSO super-frame (longer than the link MTU): the segment size
    /// it would be cut into. Such frames always come with `csum` [`CsumState::Partial`].
    pub gso_size: u16,
}

/// Offload requests for a frame to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxMeta {
    /// Cut this TCP/IPv4 frame into segments of this many payload bytes (TSO/GSO); the
    /// frame may then be up to [`Nic::gso_max_frame`] long. Needs `csum_partial`.
    pub gso_size: Option<u16>,
    /// Let the link fill the L4 checksum: (`csum_start`, `csum_offset`) from the start of
    /// the frame; the checksum field must hold the folded pseudo-header sum, not
    /// complemented ([`crate::csum::pseudo_partial`]).
    pub csum_partial: Option<(u16, u16)>,
}

/// A link the master sends and receives Ethernet frames on.
///
/// The offload-aware entry points ([`rx_burst_meta`](Nic::rx_burst_meta),
/// [`tx_meta`](Nic::tx_meta)) default to the plain ones, so a backend without offloads
/// (tap, dpdk) implements only those; a backend with offloads overrides them, and its plain
/// [`rx_burst`](Nic::rx_burst) / [`tx`](Nic::tx) still behave as for a link without any
/// (checksums completed, frames up to [`max_frame`](Nic::max_frame)).
pub trait Nic: Send {
    /// For logs and stats, e.g. `tap:dn0`, `af-packet:veth1`.
    fn name(&self) -> &str;

    /// The master's MAC on this link: source of egress frames and of ARP answers.
    fn mac(&self) -> [u8; 6];

    /// Largest frame (Ethernet header + IP MTU, no FCS) the link carries.
    fn max_frame(&self) -> usize;

    /// Hand up to `max` received frames to `f`, oldest first; returns how many. Never
    /// blocks. The slice is valid only during the call.
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize;

    /// Queue one frame of `len` bytes: `fill` writes it into the backend's buffer (exactly
    /// `len` bytes). Returns false, without calling `fill`, if there is no room or `len`
    /// exceeds [`max_frame`](Nic::max_frame); the frame is then dropped and counted.
    fn tx(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool;

    /// Like [`rx_burst`](Nic::rx_burst), with each frame's offload metadata. A frame may
    /// then be up to [`gso_max_frame`](Nic::gso_max_frame) long (a GSO super-frame) and
    /// its L4 checksum may be left unfilled ([`CsumState::Partial`]).
    fn rx_burst_meta(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> usize {
        self.rx_burst(max, &mut |frame| f(frame, RxMeta::default()))
    }

    /// Like [`tx`](Nic::tx), with offload requests. A backend without offloads takes only
    /// `TxMeta::default()`: anything else returns false without calling `fill` (callers ask
    /// only for what [`gso_max_frame`](Nic::gso_max_frame) and
    /// [`tx_csum_offload`](Nic::tx_csum_offload) promise).
    fn tx_meta(&mut self, len: usize, meta: TxMeta, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if meta == TxMeta::default() {
            self.tx(len, fill)
        } else {
            false
        }
    }

    /// Largest frame [`tx_meta`](Nic::tx_meta) takes with `gso_size` set and
    /// [`rx_burst_meta`](Nic::rx_burst_meta) may hand up; [`max_frame`](Nic::max_frame)
    /// for a backend without GSO.
    fn gso_max_frame(&self) -> usize {
        self.max_frame()
    }

    /// Whether [`tx_meta`](Nic::tx_meta) takes `csum_partial` (the link fills L4 checksums).
    fn tx_csum_offload(&self) -> bool {
        false
    }

    /// Send everything queued since the last flush (one kick per batch where possible).
    fn flush_tx(&mut self);

    /// Whether the link outlives this process (a TAP the next docknetd re-opens, so the
    /// host's addresses and routes through it, and its TCP connections, survive a
    /// restart). Only backends that create their interface act on it.
    fn set_persistent(&mut self, _keep: bool) {}

    /// A file descriptor that polls readable when frames wait, so an idle master can sleep;
    /// `None` for polling backends (the master then sleeps in short slices).
    fn rx_fd(&self) -> Option<RawFd>;

    /// Ask the hardware to steer frames for `ip` to their own queue (DPDK rte_flow).
    /// Returns true if a rule was installed; the software flow director is used otherwise.
    fn steer(&mut self, _ip: Ipv4Addr) -> bool {
        false
    }

    /// Remove a rule made by [`steer`](Nic::steer).
    fn unsteer(&mut self, _ip: Ipv4Addr) {}

    /// The backend's counters.
    fn stats(&self) -> NicStats;
}

/// A parsed `--nic` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicSpec {
    None,
    Tap(String),
    AfPacket(String),
    Dpdk(String),
}

impl NicSpec {
    /// Parse `none`, `tap:NAME`, `af-packet:IFACE` or `dpdk:'EAL ARGS'`.
    pub fn parse(s: &str) -> Result<NicSpec, String> {
        let bad_name = |n: &str| {
            n.is_empty() || n.len() > 15 || n.contains('/') || n.chars().any(char::is_whitespace)
        };
        match s.split_once(':') {
            None if s == "none" => Ok(NicSpec::None),
            Some(("tap", n)) if !bad_name(n) => Ok(NicSpec::Tap(n.to_string())),
            Some(("af-packet", n)) if !bad_name(n) => Ok(NicSpec::AfPacket(n.to_string())),
            Some(("dpdk", args)) if !args.trim().is_empty() => Ok(NicSpec::Dpdk(args.to_string())),
            Some(("tap" | "af-packet", n)) => Err(format!("--nic {s}: bad interface name {n:?} (1-15 characters, no '/' or spaces)")),
            Some(("dpdk", _)) => Err(format!("--nic {s}: give the EAL arguments, e.g. dpdk:'--no-huge --no-pci --vdev=net_af_packet0,iface=veth0'")),
            _ => Err(format!("--nic {s}: unknown NIC backend (expected none, tap:NAME, af-packet:IFACE or dpdk:'EAL ARGS')")),
        }
    }
}

/// Open the backend `spec` names (`None` for `--nic none`). `mtu` is the IP MTU a TAP is
/// created with; existing interfaces (af-packet, dpdk) keep theirs.
pub fn open(spec: &NicSpec, mtu: u32) -> Result<Option<Box<dyn Nic>>, String> {
    match spec {
        NicSpec::None => Ok(None),
        NicSpec::Tap(name) => Ok(Some(Box::new(tap::TapNic::open(name, mtu)?))),
        NicSpec::AfPacket(name) => Ok(Some(Box::new(af_packet::AfPacketNic::open(name)?))),
        #[cfg(feature = "dpdk")]
        NicSpec::Dpdk(args) => Ok(Some(Box::new(dpdk::DpdkNic::open_with_mtu(args, None)?))),
        #[cfg(not(feature = "dpdk"))]
        NicSpec::Dpdk(_) => Err(
            "--nic dpdk: this docknetd was built without the `dpdk` cargo feature (cargo build --release --features docknet-master/dpdk; needs libdpdk-dev)".into(),
        ),
    }
}

/// Read an interface's MAC address (SIOCGIFHWADDR) and MTU (SIOCGIFMTU).
pub fn iface_mac_mtu(name: &str) -> Result<([u8; 6], u32), String> {
    let fd = socket_fd()?;
    let mut req = ifreq(name)?;
    // SAFETY: ioctl on a valid socket with a properly sized, NUL-terminated ifreq.
    let r = unsafe { libc::ioctl(fd.0, libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(format!(
            "interface {name}: cannot read its MAC: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    // SAFETY: as above, for SIOCGIFMTU (fills ifru_mtu).
    let r = unsafe { libc::ioctl(fd.0, libc::SIOCGIFMTU, &mut req) };
    if r < 0 {
        return Err(format!(
            "interface {name}: cannot read its MTU: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: SIOCGIFMTU filled ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    Ok((mac, mtu))
}

/// An owned fd closed on drop.
pub struct Fd(pub RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the fd and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// A datagram socket for interface ioctls.
pub fn socket_fd() -> Result<Fd, String> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    Ok(Fd(fd))
}

/// An `ifreq` with its name set.
pub fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!("bad interface name {name:?}"));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

/// Set an interface up (IFF_UP) and its MTU.
pub fn set_up_and_mtu(name: &str, mtu: Option<u32>) -> Result<(), String> {
    let fd = socket_fd()?;
    if let Some(mtu) = mtu {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        // SAFETY: ioctl with a valid ifreq.
        if unsafe { libc::ioctl(fd.0, libc::SIOCSIFMTU, &req) } < 0 {
            return Err(format!(
                "interface {name}: cannot set MTU {mtu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut req = ifreq(name)?;
    // SAFETY: ioctl with a valid ifreq; SIOCGIFFLAGS fills ifru_flags.
    if unsafe { libc::ioctl(fd.0, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "interface {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: reading the flags member just filled by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: ioctl with a valid ifreq.
    if unsafe { libc::ioctl(fd.0, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!(
            "interface {name}: cannot set it up: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Wakes a sleeping data path when a NIC's fd turns readable: the data path can sleep on
/// futexes (the pipes' doorbells) but not on an fd, so a helper thread polls the fd while
/// the data path sleeps and rings the data path's control doorbell.
pub struct NicWaker {
    shared: std::sync::Arc<WakerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WakerShared {
    /// 1 while the data path sleeps (futex word).
    armed: std::sync::atomic::AtomicU32,
    stop: std::sync::atomic::AtomicBool,
}

fn futex_private(
    word: &std::sync::atomic::AtomicU32,
    op: libc::c_int,
    val: u32,
    timeout: Option<&libc::timespec>,
) {
    let ts = timeout.map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: futex on a live, aligned u32 of this process; the kernel only reads `ts`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            ts,
            0usize,
            0u32,
        );
    }
}

impl NicWaker {
    /// Start the helper thread for `fd`; it rings `bell` when the fd has input while armed.
    pub fn start(fd: RawFd, bell: std::sync::Arc<docknet_pipe::abi::Doorbell>) -> NicWaker {
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(WakerShared {
            armed: std::sync::atomic::AtomicU32::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("docknetd-nicwake".into())
            .spawn(move || {
                let tick = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                while !sh.stop.load(Ordering::Acquire) {
                    if sh.armed.load(Ordering::Acquire) == 0 {
                        futex_private(&sh.armed, libc::FUTEX_WAIT, 0, Some(&tick));
                        continue;
                    }
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: poll on one valid pollfd; the fd outlives this thread (the
                    // NIC is dropped only after `stop` + join in Drop).
                    let r = unsafe { libc::poll(&mut pfd, 1, 100) };
                    if r > 0 && sh.armed.swap(0, Ordering::AcqRel) == 1 {
                        bell.ring();
                    }
                }
            })
            .expect("spawn the NIC waker thread");
        NicWaker {
            shared,
            thread: Some(thread),
        }
    }

    /// The data path is about to sleep: watch the fd.
    pub fn arm(&self) {
        self.shared
            .armed
            .store(1, std::sync::atomic::Ordering::Release);
        futex_private(&self.shared.armed, libc::FUTEX_WAKE, 1, None);
    }

    /// The data path is awake: stop watching.
    pub fn disarm(&self) {
        self.shared
            .armed
            .store(0, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for NicWaker {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        futex_private(&self.shared.armed, libc::FUTEX_WAKE, 1, None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nic_specs() {
        assert_eq!(NicSpec::parse("none"), Ok(NicSpec::None));
        assert_eq!(NicSpec::parse("tap:dn0"), Ok(NicSpec::Tap("dn0".into())));
        assert_eq!(
            NicSpec::parse("af-packet:veth1"),
            Ok(NicSpec::AfPacket("veth1".into()))
        );
        assert_eq!(
            NicSpec::parse("dpdk:--no-huge --no-pci"),
            Ok(NicSpec::Dpdk("--no-huge --no-pci".into()))
        );
        assert!(NicSpec::parse("tap:").is_err());
        assert!(NicSpec::parse("tap:a/b").is_err());
        assert!(NicSpec::parse("tap:waytoolonginterfacename").is_err());
        assert!(NicSpec::parse("dpdk:").is_err());
        assert!(NicSpec::parse("ovs:br0").is_err());
        assert!(NicSpec::parse("nonex").is_err());
    }
}
