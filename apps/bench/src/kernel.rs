//! Kernel TCP echo server and ping-pong client (std::net, TCP_NODELAY).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::stats::{self, PointResult};

/// Kills this process when its parent dies (so a SIGKILLed bench leaves no
/// servers behind). Best effort.
pub fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes plain integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// Echo server: accepts forever, one thread per connection, echoes every byte.
/// Prints `listening on ADDR` on stdout once ready.
pub fn serve(bind: SocketAddr) -> io::Result<()> {
    die_with_parent();
    let listener = TcpListener::bind(bind)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                continue;
            }
        };
        std::thread::spawn(move || {
            let peer = stream.peer_addr().ok();
            if let Err(e) = echo_conn(stream) {
                log::debug!("connection {peer:?}: {e}");
            }
        });
    }
    Ok(())
}

fn echo_conn(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
    }
}

/// Fills `buf` with the deterministic pattern for message number `seq`:
/// a fixed byte ramp, with the first 8 bytes replaced by `seq` (little endian)
/// so a stale or reordered echo is caught.
pub fn fill_pattern(buf: &mut [u8], seq: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31).wrapping_add(7) % 251) as u8;
    }
    stamp(buf, seq);
}

fn stamp(buf: &mut [u8], seq: u64) {
    let bytes = seq.to_le_bytes();
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// send(2) with MSG_DONTWAIT on a blocking socket.
fn send_nb(fd: i32, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes for the
    // duration of the call; `fd` is an open socket owned by the caller.
    let r = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// recv(2) with MSG_DONTWAIT on a blocking socket; 0 bytes = peer closed.
fn recv_nb(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes for the
    // duration of the call; `fd` is an open socket owned by the caller.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else if r == 0 {
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))
    } else {
        Ok(r as usize)
    }
}

fn poll_fd(fd: i32, events: i16) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd; timeout -1 blocks until an event.
    let r = unsafe { libc::poll(&mut p, 1, -1) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// One round trip: sends all of `msg`, receives `msg.len()` bytes into `back`.
///
/// Small messages are one `send` plus blocking reads. Messages larger than the
/// socket buffers would deadlock a plain write-then-read client (both sides
/// blocked in write), so while sending we also drain what has already been
/// echoed, waiting in poll(2) only when neither direction can progress.
pub fn round_trip(stream: &mut TcpStream, msg: &[u8], back: &mut [u8]) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let n = msg.len();
    let (mut sent, mut got) = (0usize, 0usize);
    while sent < n {
        match send_nb(fd, &msg[sent..]) {
            Ok(k) => {
                sent += k;
                continue;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
        match recv_nb(fd, &mut back[got..n]) {
            Ok(k) => {
                got += k;
                continue;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
        let events = libc::POLLOUT | if got < n { libc::POLLIN } else { 0 };
        poll_fd(fd, events)?;
    }
    stream.read_exact(&mut back[got..n])
}

/// Client parameters.
#[derive(Debug, Clone)]
pub struct ClientParams {
    pub to: SocketAddr,
    pub size: usize,
    pub count: usize,
    pub warmup: usize,
    pub connect_timeout: Duration,
}

fn connect(to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {to}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `warmup` + `count` round trips of `size`-byte messages; verifies every
/// echoed byte. Timing covers send start to last byte received; verification
/// is outside the timed window.
pub fn run_client(p: &ClientParams) -> io::Result<PointResult> {
    let mut stream = connect(p.to, p.connect_timeout)?;
    stream.set_nodelay(true)?;
    let mut msg = vec![0u8; p.size];
    fill_pattern(&mut msg, 0);
    let mut back = vec![0u8; p.size];
    let mut rtts = Vec::with_capacity(p.count);
    for i in 0..(p.warmup + p.count) {
        stamp(&mut msg, i as u64);
        let t0 = Instant::now();
        round_trip(&mut stream, &msg, &mut back)?;
        let dt = t0.elapsed();
        if back != msg {
            let at = back.iter().zip(&msg).position(|(a, b)| a != b).unwrap_or(0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {i}: echoed bytes differ from sent at offset {at}"),
            ));
        }
        if i >= p.warmup {
            rtts.push(u64::try_from(dt.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(stats::summarize(p.size, &rtts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_stamped() {
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        fill_pattern(&mut a, 5);
        fill_pattern(&mut b, 5);
        assert_eq!(a, b);
        fill_pattern(&mut b, 6);
        assert_ne!(a, b);
        assert_eq!(a[8..], b[8..]);
        let mut tiny = vec![0u8; 3];
        fill_pattern(&mut tiny, 0x010203);
        assert_eq!(tiny, vec![3, 2, 1]);
    }

    #[test]
    fn loopback_round_trips_including_large_messages() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || echo_conn(s));
            }
        });
        for size in [1usize, 64, 4096, 3 * 1024 * 1024] {
            let r = run_client(&ClientParams {
                to: addr,
                size,
                count: 3,
                warmup: 1,
                connect_timeout: Duration::from_secs(5),
            })
            .unwrap();
            assert_eq!(r.count, 3);
            assert_eq!(r.size, size);
            assert!(r.rtt_us_p50 > 0.0 && r.goodput_gbps > 0.0);
        }
    }
}
