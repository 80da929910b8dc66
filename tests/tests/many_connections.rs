//! A burst of connection requests (issue 10): 1,000 kernel clients connect at once,
//! through the TAP backend, to a dn-httpd with its default options. The libOS's accept
//! queue must take every one — no connection refused or reset — and each then gets its
//! page. (smoltcp alone has no backlog: a SYN that finds no socket listening is answered
//! with a reset.) Needs root (network namespaces, TAP); prints why and passes otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use docknet_tests::nic::{self, Backend, Site, PIPE, PIPE_IP};
use docknet_tests::wait_for_line;

const CONNECTIONS: usize = 1000;

/// Raise the open-file limit to its hard limit (1,000 sockets beside the test's own
/// files exceed the usual soft limit of 1,024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > CONNECTIONS + 64,
        "the open-file limit ({}) is too low for {CONNECTIONS} connections",
        lim.rlim_cur
    );
}

/// Starts `n` non-blocking connects to `ip:port` at once, then waits for all of them;
/// returns the connected streams, or for each failure its error.
fn connect_all_at_once(ip: [u8; 4], port: u16, n: usize) -> Vec<Result<TcpStream, String>> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: plain socket(2)/connect(2) calls; `addr` outlives the call and its
        // size is passed; the fd is owned by a TcpStream below (closed exactly once).
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let r = libc::connect(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let e = std::io::Error::last_os_error();
            assert!(
                r == 0 || e.raw_os_error() == Some(libc::EINPROGRESS),
                "connect: {e}"
            );
            fd
        };
        fds.push(fd);
    }
    // Wait until every socket is writable (connected) or failed.
    let mut pending: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        // SAFETY: `pending` is a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(pending.as_mut_ptr(), pending.len() as libc::nfds_t, 1000) };
        assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
        pending.retain(|p| p.revents == 0);
    }
    fds.into_iter()
        .map(|fd| {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `err`.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut libc::c_int as *mut libc::c_void,
                    &mut len,
                )
            };
            // SAFETY: `fd` is an open socket nothing else owns.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            if pending.iter().any(|p| p.fd == fd) {
                return Err("not connected after 60 s".to_string());
            }
            if r != 0 || err != 0 {
                return Err(std::io::Error::from_raw_os_error(err).to_string());
            }
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            Ok(stream)
        })
        .collect()
}

/// Sends a GET on `s` and reads the response head: the status line.
fn get_status(s: &mut TcpStream) -> Result<String, String> {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: docknet\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    Ok(text.lines().next().unwrap_or("").to_string())
}

#[test]
fn tap_thousand_simultaneous_connects_are_all_accepted() {
    let _serial = nic::serial();
    if !nic::need_root("tap_thousand_simultaneous_connects_are_all_accepted") {
        return;
    }
    let site = Site::start(Backend::Tap);
    // dn-httpd with its default options (its default accept queue).
    let (httpd, stdout) = site.daemon.spawn_service(PIPE, "dn-httpd", &[]);
    wait_for_line(stdout, "listening", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("dn-httpd not listening: {e}\n{}", httpd.log_tail()));

    let ip: std::net::Ipv4Addr = PIPE_IP.parse().unwrap();
    let (connected, statuses) = site.client_ns().run(move || {
        raise_fd_limit();
        let started = Instant::now();
        let results = connect_all_at_once(ip.octets(), 80, CONNECTIONS);
        let took = started.elapsed();
        let mut statuses = Vec::with_capacity(results.len());
        let mut connected = Vec::new();
        for r in results {
            match r {
                Ok(mut s) => {
                    connected.push(());
                    statuses.push(get_status(&mut s));
                }
                Err(e) => statuses.push(Err(format!("connect: {e}"))),
            }
        }
        eprintln!(
            "[many] {CONNECTIONS} connects at once: {} connected in {took:.2?}",
            connected.len()
        );
        (connected.len(), statuses)
    });
    let failures: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Ok(line) if line.starts_with("HTTP/1.1 200") => None,
            Ok(line) => Some(format!("#{i}: {line:?}")),
            Err(e) => Some(format!("#{i}: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty() && connected == CONNECTIONS,
        "{} of {CONNECTIONS} connections failed (first: {:?})\ndn-httpd log:\n{}\npipes: {}",
        failures.len(),
        &failures[..failures.len().min(10)],
        httpd.log_tail(),
        site.daemon.stats(None)
    );
}
