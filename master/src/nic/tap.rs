//! TAP backend: a virtual interface whose other side is the host kernel.
//!
//! The master reads frames the kernel sends to the TAP and writes frames for the kernel.
//! TAP has no batched I/O without GSO, so this backend costs one `read`/`write` syscall
//! per frame: it is the embedded default for demos and for reaching services with curl
//! or a browser, not the fast path (that is `af-packet` or `dpdk`).
//!
//! The kernel side gets the pipes' gateway addresses (see [`add_address`]), so the host
//! routes each pipe subnet to the TAP.

use std::os::fd::RawFd;

use super::{set_up_and_mtu, Fd, Nic, NicStats};

/// `_IOW('T', 202, int)`: attach the fd to a (new) TUN/TAP interface.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// The master's MAC on the TAP link (the kernel side has its own).
pub const TAP_MAC: [u8; 6] = [0x02, 0x44, 0x4e, 0x00, 0x00, 0x02];

/// A TAP interface owned by the master. It is persistent (`TUNSETPERSIST`) while pipes
/// exist, so it survives the master's restart or crash with its addresses and routes; a
/// stop that removes every pipe removes it too.
pub struct TapNic {
    fd: Fd,
    ifname: String,
    label: String,
    max_frame: usize,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    stats: NicStats,
}

impl TapNic {
    /// Create (or attach to) TAP interface `name`, set its MTU to `mtu`, and bring it up.
    pub fn open(name: &str, mtu: u32) -> Result<TapNic, String> {
        let path = c"/dev/net/tun";
        // SAFETY: open(2) with a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "tap {name}: cannot open /dev/net/tun: {}",
                std::io::Error::last_os_error()
            ));
        }
        let fd = Fd(fd);
        let mut req = super::ifreq(name)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF with a valid ifreq on the tun fd.
        if unsafe { libc::ioctl(fd.0, TUNSETIFF, &mut req) } < 0 {
            return Err(format!(
                "tap {name}: TUNSETIFF failed: {} (needs CAP_NET_ADMIN)",
                std::io::Error::last_os_error()
            ));
        }
        set_up_and_mtu(name, Some(mtu)).map_err(|e| format!("tap {name}: {e}"))?;
        set_persist(fd.0, name, true);
        let max_frame = mtu as usize + 14;
        Ok(TapNic {
            fd,
            ifname: name.to_string(),
            label: format!("tap:{name}"),
            max_frame,
            rx_buf: vec![0; max_frame.max(65536)],
            tx_buf: vec![0; max_frame],
            stats: NicStats::default(),
        })
    }

    /// The kernel-side interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

/// Give the kernel side of TAP `name` the address `cidr` (e.g. a pipe subnet's gateway,
/// `10.88.0.1/16`), so the host routes that subnet to the TAP. Runs `ip` (iproute2): this
/// is the control path, once per subnet.
pub fn add_address(name: &str, cidr: &str) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["addr", "replace", cidr, "dev", name])
        .output()
        .map_err(|e| {
            format!("tap {name}: cannot run `ip addr replace {cidr}`: {e} (is iproute2 installed?)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "tap {name}: `ip addr replace {cidr} dev {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// TUNSETPERSIST on `fd` (a failure is logged: the TAP then just lives as long as we do).
fn set_persist(fd: libc::c_int, name: &str, keep: bool) {
    // SAFETY: TUNSETPERSIST takes an integer argument on a tun fd.
    if unsafe { libc::ioctl(fd, TUNSETPERSIST, keep as libc::c_ulong) } < 0 {
        log::warn!(
            "tap {name}: TUNSETPERSIST {}: {}",
            keep as u8,
            std::io::Error::last_os_error()
        );
    }
}

impl Nic for TapNic {
    fn name(&self) -> &str {
        &self.label
    }

    fn set_persistent(&mut self, keep: bool) {
        set_persist(self.fd.0, &self.ifname, keep);
    }

    fn mac(&self) -> [u8; 6] {
        TAP_MAC
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            // SAFETY: read(2) into our own buffer of rx_buf.len() bytes.
            let r = unsafe {
                libc::read(
                    self.fd.0,
                    self.rx_buf.as_mut_ptr().cast(),
                    self.rx_buf.len(),
                )
            };
            if r <= 0 {
                break;
            }
            let len = r as usize;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            f(&self.rx_buf[..len]);
            n += 1;
        }
        n
    }

    fn tx(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.max_frame {
            self.stats.tx_dropped += 1;
            return false;
        }
        fill(&mut self.tx_buf[..len]);
        // SAFETY: write(2) of `len` initialised bytes from our own buffer.
        let w = unsafe { libc::write(self.fd.0, self.tx_buf.as_ptr().cast(), len) };
        if w == len as isize {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += len as u64;
            true
        } else {
            self.stats.tx_dropped += 1;
            false
        }
    }

    fn flush_tx(&mut self) {}

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.0)
    }

    fn stats(&self) -> NicStats {
        self.stats
    }
}
