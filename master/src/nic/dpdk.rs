//! DPDK backend: any DPDK poll-mode driver (cargo feature `dpdk`).
//!
//! `--nic dpdk:'EAL ARGS'` hands the arguments to DPDK's EAL and uses the first port it
//! finds, with one RX and one TX queue. Runs without a real NIC or hugepages:
//! `--no-huge --no-pci --vdev=net_af_packet0,iface=veth0`.
//!
//! The data path makes no syscalls of its own and allocates nothing per frame except
//! mbufs from the port's pool: [`rx_burst`](Nic::rx_burst) lends each received mbuf's
//! data to the caller and frees the batch with one bulk call; [`tx`](Nic::tx) takes an
//! mbuf, lets the caller fill it in place and queues it; [`flush_tx`](Nic::flush_tx)
//! hands the batch to the driver in one `rte_eth_tx_burst`.
//!
//! DPDK's EAL can be initialised once per process, so [`DpdkNic::open`] succeeds at most
//! once; dropping the `DpdkNic` stops and closes the port and calls `rte_eal_cleanup`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

use super::{Nic, NicStats};

/// Most frames moved per `rte_eth_rx_burst`/`rte_eth_tx_burst` call.
pub const BURST: usize = 32;
/// Mbufs in the pool: 2^n - 1 suits the pool's ring. With `--no-huge` EAL's memory is
/// small (64 MiB by default): 4095 mbufs of 2 KiB data room take about 10 MiB.
const NB_MBUFS: u32 = 4095;
/// Per-lcore mbuf cache (used on EAL threads; other threads go straight to the ring).
const MBUF_CACHE: u32 = 256;
/// Descriptors requested per queue (adjusted to the driver's limits).
const NB_DESC: u16 = 1024;

/// Set by the first [`DpdkNic::open`]: EAL cannot be initialised twice in a process.
static EAL_USED: AtomicBool = AtomicBool::new(false);

/// A DPDK port owned by the master.
pub struct DpdkNic {
    port: u16,
    label: String,
    mac: [u8; 6],
    max_frame: usize,
    pool: *mut sys::rte_mempool,
    /// The port was configured (so it must be closed) / started (so it must be stopped).
    configured: bool,
    started: bool,
    rx_bufs: [*mut sys::rte_mbuf; BURST],
    tx_pending: [*mut sys::rte_mbuf; BURST],
    tx_lens: [u16; BURST],
    tx_count: usize,
    /// rte_flow rules made by `steer`.
    flows: Vec<(Ipv4Addr, *mut sys::rte_flow)>,
    stats: NicStats,
    /// Received multi-segment frames (dropped: the switch wants one contiguous slice).
    rx_multiseg: u64,
}

// SAFETY: the raw pointers (mempool, mbufs, flows) are owned by this DpdkNic alone and are
// only used through `&mut self` (or, for `stats`, through `&self` on the owning thread,
// since DpdkNic is not Sync). DPDK lets any thread use a port's queue and a mempool as
// long as one thread at a time does so; a non-EAL thread simply bypasses the per-lcore
// mbuf cache.
unsafe impl Send for DpdkNic {}

impl DpdkNic {
    /// Initialise DPDK's EAL with `eal_args` (split like a shell would, minimally: spaces
    /// separate, quotes group, backslash escapes), then configure and start the first port
    /// with one RX and one TX queue, in promiscuous mode, at the driver's default MTU.
    pub fn open(eal_args: &str) -> Result<DpdkNic, String> {
        DpdkNic::open_with_mtu(eal_args, None)
    }

    /// Like [`open`](DpdkNic::open), with the port's IP MTU set to `mtu` (checked by the
    /// driver against its limits).
    pub fn open_with_mtu(eal_args: &str, mtu: Option<u32>) -> Result<DpdkNic, String> {
        let args = split_args(eal_args)?;
        if args.iter().any(|a| a.contains("net_af_packet"))
            && !args.iter().any(|a| a.contains("framecnt="))
        {
            // Its kernel ring drops what does not fit without DPDK counting it; TCP then
            // waits out retransmission timeouts (ARCHITECTURE.md, Departures).
            log::warn!(
                "--nic dpdk: net_af_packet's default ring of 512 frames drops TCP bursts \
                 uncounted; add framecnt=4096 to its --vdev (e.g. \
                 --vdev=net_af_packet0,iface=veth0,framecnt=4096)"
            );
        }
        if EAL_USED.swap(true, Ordering::AcqRel) {
            return Err(
                "--nic dpdk: DPDK's EAL was already initialised in this process; \
                        it can be initialised only once (one DPDK NIC per docknetd)"
                    .into(),
            );
        }
        eal_init(&args)?;
        // From here on, an error drops `nic`, which closes what was set up and calls
        // rte_eal_cleanup.
        let mut nic = DpdkNic {
            port: 0,
            label: String::new(),
            mac: [0; 6],
            max_frame: 0,
            pool: std::ptr::null_mut(),
            configured: false,
            started: false,
            rx_bufs: [std::ptr::null_mut(); BURST],
            tx_pending: [std::ptr::null_mut(); BURST],
            tx_lens: [0; BURST],
            tx_count: 0,
            flows: Vec::new(),
            stats: NicStats::default(),
            rx_multiseg: 0,
        };
        nic.setup_port(mtu)?;
        Ok(nic)
    }

    /// The DPDK port id in use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Like [`steer`](Nic::steer), but says why no rule was installed.
    pub fn try_steer(&mut self, ip: Ipv4Addr) -> Result<(), String> {
        if self.flows.iter().any(|(a, _)| *a == ip) {
            return Ok(());
        }
        let mut attr = sys::rte_flow_attr::default();
        attr.set_ingress(1);
        let mut spec = sys::rte_flow_item_ipv4::default();
        spec.hdr.dst_addr = u32::from(ip).to_be();
        let mut mask = sys::rte_flow_item_ipv4::default();
        mask.hdr.dst_addr = u32::MAX;
        let item = |type_, spec: *const c_void, mask: *const c_void| sys::rte_flow_item {
            type_,
            spec,
            last: std::ptr::null(),
            mask,
        };
        let null = std::ptr::null();
        let pattern = [
            item(sys::RTE_FLOW_ITEM_TYPE_ETH, null, null),
            item(
                sys::RTE_FLOW_ITEM_TYPE_IPV4,
                (&spec as *const sys::rte_flow_item_ipv4).cast(),
                (&mask as *const sys::rte_flow_item_ipv4).cast(),
            ),
            item(sys::RTE_FLOW_ITEM_TYPE_END, null, null),
        ];
        let queue = sys::rte_flow_action_queue { index: 0 };
        let actions = [
            sys::rte_flow_action {
                type_: sys::RTE_FLOW_ACTION_TYPE_QUEUE,
                conf: (&queue as *const sys::rte_flow_action_queue).cast(),
            },
            sys::rte_flow_action {
                type_: sys::RTE_FLOW_ACTION_TYPE_END,
                conf: null,
            },
        ];
        let mut err = sys::rte_flow_error::default();
        // SAFETY: attr, pattern (END-terminated), actions (END-terminated) and the spec,
        // mask and queue they point to live on this stack frame for the whole call; err
        // is a valid out-parameter.
        let r = unsafe {
            sys::rte_flow_validate(
                self.port,
                &attr,
                pattern.as_ptr(),
                actions.as_ptr(),
                &mut err,
            )
        };
        if r != 0 {
            return Err(format!(
                "{}: rte_flow_validate: {}",
                self.label,
                flow_error(&err, r)
            ));
        }
        // SAFETY: as above; the port is started.
        let flow = unsafe {
            sys::rte_flow_create(
                self.port,
                &attr,
                pattern.as_ptr(),
                actions.as_ptr(),
                &mut err,
            )
        };
        if flow.is_null() {
            // SAFETY: reads this thread's rte_errno, set by rte_flow_create.
            let e = unsafe { sys::rte_errno() };
            return Err(format!(
                "{}: rte_flow_create: {}",
                self.label,
                flow_error(&err, -e)
            ));
        }
        self.flows.push((ip, flow));
        Ok(())
    }

    fn setup_port(&mut self, want_mtu: Option<u32>) -> Result<(), String> {
        // SAFETY: EAL is initialised; walks the port list.
        let port = unsafe { sys::rte_eth_first_port() };
        if u32::from(port) >= sys::RTE_MAX_ETHPORTS {
            return Err("--nic dpdk: DPDK found no port; give a device, e.g. \
                        --vdev=net_af_packet0,iface=veth0 (with --no-pci) or a PCI device bound to a DPDK driver"
                .into());
        }
        self.port = port;
        let mut name = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: `name` has the RTE_ETH_NAME_MAX_LEN bytes the call may write.
        let r = unsafe { sys::rte_eth_dev_get_name_by_port(port, name.as_mut_ptr()) };
        self.label = if r == 0 {
            // SAFETY: on success the name is NUL-terminated within the buffer.
            format!(
                "dpdk:{}",
                unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy()
            )
        } else {
            format!("dpdk:port{port}")
        };
        let label = self.label.clone();
        let check = |what: &str, r: c_int| -> Result<(), String> {
            if r < 0 {
                Err(format!("{label}: {what}: {}", strerror(-r)))
            } else {
                Ok(())
            }
        };

        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port and out-parameter.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(port, &mut info)
        })?;
        // All defaults (no offloads, no RSS, MTU 1500) but the MTU asked for.
        let mut conf = sys::rte_eth_conf::default();
        conf.rxmode.mtu = want_mtu.unwrap_or(0);
        // SAFETY: valid port; conf outlives the call (ethdev copies it).
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(port, 1, 1, &conf)
        })?;
        self.configured = true;
        let (mut nb_rx, mut nb_tx) = (NB_DESC, NB_DESC);
        // SAFETY: valid configured port and out-parameters.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut nb_rx, &mut nb_tx)
        })?;

        let mut mtu = 0u16;
        // SAFETY: valid port and out-parameter.
        check("rte_eth_dev_get_mtu", unsafe {
            sys::rte_eth_dev_get_mtu(port, &mut mtu)
        })?;
        let frame = usize::from(mtu) + sys::RTE_ETHER_HDR_LEN as usize;
        let data_room =
            frame.max(sys::RTE_MBUF_DEFAULT_DATAROOM as usize) + sys::RTE_PKTMBUF_HEADROOM as usize;
        let data_room =
            u16::try_from(data_room).map_err(|_| format!("{label}: MTU {mtu} is too large"))?;
        // A frame must fit one mbuf (we neither receive nor send multi-segment frames).
        self.max_frame = frame.min(usize::from(data_room) - sys::RTE_PKTMBUF_HEADROOM as usize);

        // SAFETY: valid port. The NUMA socket, or SOCKET_ID_ANY (-1), which the queue
        // setup calls take as an unsigned int (hence `as u32` below, as in C).
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
        let pool_name = CString::new(format!("docknet_mbufs_{port}")).unwrap();
        // SAFETY: NUL-terminated name; the sizes are within DPDK's limits.
        self.pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                pool_name.as_ptr(),
                NB_MBUFS,
                MBUF_CACHE,
                0,
                data_room,
                socket,
            )
        };
        if self.pool.is_null() {
            // SAFETY: reads this thread's rte_errno, set by rte_pktmbuf_pool_create.
            let e = unsafe { sys::rte_errno() };
            return Err(format!(
                "{label}: cannot create a pool of {NB_MBUFS} mbufs ({data_room} B each): {} \
                 (with --no-huge, give EAL more memory, e.g. -m 256)",
                strerror(e)
            ));
        }
        // SAFETY: configured port; a NULL conf means the driver's defaults; the pool
        // outlives the queue (it is freed after the port is closed, in Drop).
        check("rte_eth_rx_queue_setup", unsafe {
            sys::rte_eth_rx_queue_setup(port, 0, nb_rx, socket as u32, std::ptr::null(), self.pool)
        })?;
        // SAFETY: as above.
        check("rte_eth_tx_queue_setup", unsafe {
            sys::rte_eth_tx_queue_setup(port, 0, nb_tx, socket as u32, std::ptr::null())
        })?;
        // SAFETY: configured port with its queues set up.
        check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(port) })?;
        self.started = true;
        // SAFETY: started port.
        let r = unsafe { sys::rte_eth_promiscuous_enable(port) };
        if r < 0 {
            log::warn!("{label}: cannot enable promiscuous mode: {}", strerror(-r));
        }
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port and out-parameter.
        check("rte_eth_macaddr_get", unsafe {
            sys::rte_eth_macaddr_get(port, &mut addr)
        })?;
        self.mac = addr.addr_bytes;
        log::info!(
            "{label}: port {port} (driver {}), MAC {}, MTU {mtu}, {nb_rx}/{nb_tx} RX/TX descriptors",
            if info.driver_name.is_null() {
                "?".into()
            } else {
                // SAFETY: a non-NULL driver name is a static NUL-terminated string.
                unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy()
            },
            self.mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        Ok(())
    }
}

impl Nic for DpdkNic {
    fn name(&self) -> &str {
        &self.label
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let want = max.min(BURST);
        if want == 0 {
            return 0;
        }
        // SAFETY: the started port's queue 0, used by this thread only (&mut self);
        // rx_bufs has room for `want` mbuf pointers.
        let got = usize::from(unsafe {
            sys::rte_eth_rx_burst(self.port, 0, self.rx_bufs.as_mut_ptr(), want as u16)
        });
        let mut handed = 0;
        for &m in &self.rx_bufs[..got] {
            // SAFETY: m is a valid mbuf the driver just gave us.
            if unsafe { sys::rte_pktmbuf_is_contiguous(m) } == 0 {
                self.rx_multiseg += 1;
                continue;
            }
            // SAFETY: as above; a one-segment mbuf holds data_len bytes at mtod, valid
            // until the mbuf is freed below (after `f` returns).
            let frame = unsafe {
                let len = usize::from(sys::rte_pktmbuf_data_len(m));
                std::slice::from_raw_parts(sys::rte_pktmbuf_mtod(m) as *const u8, len)
            };
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += frame.len() as u64;
            f(frame);
            handed += 1;
        }
        if got > 0 {
            // SAFETY: the first `got` entries are mbufs we own and no longer reference.
            unsafe { sys::rte_pktmbuf_free_bulk(self.rx_bufs.as_mut_ptr(), got as u32) };
        }
        handed
    }

    fn tx(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.max_frame {
            self.stats.tx_dropped += 1;
            return false;
        }
        if self.tx_count == BURST {
            self.flush_tx();
        }
        // SAFETY: the pool is valid for the life of self.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.pool) };
        if m.is_null() {
            self.stats.tx_dropped += 1;
            return false;
        }
        // SAFETY: m is a fresh, empty one-segment mbuf; len <= max_frame <= its tailroom.
        let data = unsafe { sys::rte_pktmbuf_append(m, len as u16) };
        if data.is_null() {
            // SAFETY: m is ours and not queued anywhere.
            unsafe { sys::rte_pktmbuf_free(m) };
            self.stats.tx_dropped += 1;
            return false;
        }
        // SAFETY: append reserved `len` writable bytes at `data`, inside m, which only we
        // reference until it is handed to the driver.
        let buf = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
        fill(buf);
        self.tx_pending[self.tx_count] = m;
        self.tx_lens[self.tx_count] = len as u16;
        self.tx_count += 1;
        true
    }

    fn flush_tx(&mut self) {
        let n = self.tx_count;
        if n == 0 {
            return;
        }
        self.tx_count = 0;
        // SAFETY: the started port's queue 0, this thread only; the first n entries are
        // filled mbufs. The driver takes ownership of the first `sent`.
        let sent = usize::from(unsafe {
            sys::rte_eth_tx_burst(self.port, 0, self.tx_pending.as_mut_ptr(), n as u16)
        });
        self.stats.tx_frames += sent as u64;
        self.stats.tx_bytes += self.tx_lens[..sent]
            .iter()
            .map(|&l| u64::from(l))
            .sum::<u64>();
        if sent < n {
            self.stats.tx_dropped += (n - sent) as u64;
            // SAFETY: entries sent..n are still ours (the driver did not take them).
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.tx_pending[sent..].as_mut_ptr(), (n - sent) as u32)
            };
        }
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn steer(&mut self, ip: Ipv4Addr) -> bool {
        match self.try_steer(ip) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("{e}; using the software flow director for {ip}");
                false
            }
        }
    }

    fn unsteer(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.flows.iter().position(|(a, _)| *a == ip) {
            let (_, flow) = self.flows.swap_remove(i);
            let mut err = sys::rte_flow_error::default();
            // SAFETY: flow was created on this port by try_steer and is destroyed once.
            let r = unsafe { sys::rte_flow_destroy(self.port, flow, &mut err) };
            if r != 0 {
                log::warn!(
                    "{}: rte_flow_destroy for {ip}: {}",
                    self.label,
                    flow_error(&err, r)
                );
            }
        }
    }

    fn stats(&self) -> NicStats {
        let mut s = self.stats;
        s.rx_dropped = self.rx_multiseg;
        let mut hw = sys::rte_eth_stats::default();
        // SAFETY: valid port and out-parameter.
        if unsafe { sys::rte_eth_stats_get(self.port, &mut hw) } == 0 {
            s.rx_dropped += hw.imissed + hw.rx_nombuf;
        }
        s
    }
}

impl Drop for DpdkNic {
    fn drop(&mut self) {
        let ips: Vec<Ipv4Addr> = self.flows.iter().map(|(ip, _)| *ip).collect();
        for ip in ips {
            self.unsteer(ip);
        }
        if self.tx_count > 0 {
            // SAFETY: unsent mbufs we own.
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.tx_pending.as_mut_ptr(), self.tx_count as u32)
            };
            self.tx_count = 0;
        }
        // SAFETY: EAL is initialised; the returned path is copied at once.
        let run_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: each step undoes one that succeeded in open, in reverse order: the port
        // is closed (releasing its queues' mbufs) before the pool is freed, and EAL is
        // cleaned up last; nothing uses DPDK after this.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.port);
            }
            if self.configured {
                sys::rte_eth_dev_close(self.port);
            }
            if !self.pool.is_null() {
                sys::rte_mempool_free(self.pool);
            }
            sys::rte_eal_cleanup();
        }
        // EAL leaves its runtime directory (/var/run/dpdk/PREFIX) behind; remove it if it
        // is empty (with --no-shconf it is). Shared-config files, if any, stay.
        if !run_dir.is_empty() {
            let _ = std::fs::remove_dir(&run_dir);
        }
    }
}

/// Run `rte_eal_init` with `args` (after argv[0] = "docknetd"). EAL pins the calling
/// thread to its main lcore; we restore the thread's CPU affinity afterwards so the
/// threads docknetd starts later are not all confined to that core.
fn eal_init(args: &[String]) -> Result<(), String> {
    let mut owned = Vec::with_capacity(args.len() + 1);
    owned.push(CString::new("docknetd").unwrap());
    for a in args {
        owned.push(
            CString::new(a.as_str())
                .map_err(|_| format!("--nic dpdk: argument {a:?} contains a NUL byte"))?,
        );
    }
    // EAL may keep pointers into argv (and getopt permutes it): leak it, once per process.
    let argv: &'static mut [*mut c_char] = Vec::leak(
        owned
            .into_iter()
            .map(CString::into_raw)
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect(),
    );
    let argc = (argv.len() - 1) as c_int;

    // SAFETY: cpu_set_t is plain data; zero is a valid (empty) set.
    let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-parameter of the right size, for the calling thread (0).
    let saved =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) }
            == 0;
    // SAFETY: argv holds argc valid NUL-terminated strings and a NULL terminator, and lives
    // for the rest of the process.
    let r = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    if r < 0 {
        // SAFETY: reads this thread's rte_errno, set by rte_eal_init.
        let e = unsafe { sys::rte_errno() };
        return Err(format!(
            "--nic dpdk: rte_eal_init failed: {} (EAL arguments: {}); DPDK cannot be \
             initialised again in this process",
            strerror(e),
            args.join(" ")
        ));
    }
    if saved {
        // SAFETY: restores the mask read above on the calling thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) };
    }
    Ok(())
}

/// DPDK's message for an errno value (DPDK's own codes included).
fn strerror(errnum: c_int) -> String {
    // SAFETY: rte_strerror accepts any value and returns a NUL-terminated string that
    // stays valid at least until the next call on this thread; we copy it at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(errnum)) }
        .to_string_lossy()
        .into_owned()
}

/// An rte_flow error: its message if the driver gave one, else the errno text.
fn flow_error(err: &sys::rte_flow_error, ret: c_int) -> String {
    let errno = strerror(ret.abs());
    if err.message.is_null() {
        errno
    } else {
        // SAFETY: a non-NULL message is a NUL-terminated static string from the driver.
        let msg = unsafe { CStr::from_ptr(err.message) }.to_string_lossy();
        if msg == errno {
            errno
        } else {
            format!("{msg} ({errno})")
        }
    }
}

/// Split EAL arguments like a (minimal) shell: whitespace separates words, '...' and
/// "..." group (no escapes inside '...'), a backslash outside '...' escapes the next char.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("--nic dpdk: unterminated ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(format!("--nic dpdk: trailing \\ in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("--nic dpdk: unterminated \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(format!("--nic dpdk: trailing \\ in {s:?}")),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_args;

    #[test]
    fn splits_eal_args() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_args("  --no-huge --no-pci\t--vdev=net_af_packet0,iface=veth0 ").unwrap(),
            v(&["--no-huge", "--no-pci", "--vdev=net_af_packet0,iface=veth0"])
        );
        assert_eq!(
            split_args("-a 'x y' \"a\\\"b\" c\\ d ''").unwrap(),
            v(&["-a", "x y", "a\"b", "c d", ""])
        );
        assert_eq!(
            split_args("--vdev='net_pcap0,iface=eth0'").unwrap(),
            v(&["--vdev=net_pcap0,iface=eth0"])
        );
        assert!(split_args("").unwrap().is_empty());
        assert!(split_args("'abc").is_err());
        assert!(split_args("\"abc").is_err());
        assert!(split_args("abc\\").is_err());
    }
}
