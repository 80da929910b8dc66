//! Quick in-process fast-channel ping-pong (two engine threads, no master): a smoke
//! benchmark for engine tuning. `cargo run --release -p docknet --example fc_pingpong -- SIZE COUNT`
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Instant;

use docknet::fc::create_fc_file;
use docknet::pipe::{create_pipe_file, PipeConfig, FC_DIR};
use docknet::{Control, Engine, EngineConfig};

fn pipe(dir: &Path, ip: Ipv4Addr, mtu: u32) -> PipeConfig {
    let o = ip.octets();
    let cfg = PipeConfig {
        mac: [2, 0, o[0], o[1], o[2], o[3]],
        ipv4: ip,
        prefix_len: 16,
        gateway: Ipv4Addr::new(10, 88, 0, 1),
        mtu,
        nbufs: 512,
        nlarge: 0,
        flags: docknet::abi::pipe_flags::CSUM_OFFLOAD,
    };
    create_pipe_file(dir, &cfg).unwrap();
    cfg
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let count: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(10000);
    let mtu: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(9000);
    let root = Path::new("/dev/shm").join(format!("dn-fcpp-{}", std::process::id()));
    let (da, db) = (root.join("a"), root.join("b"));
    let a = pipe(&da, Ipv4Addr::new(10, 88, 0, 2), mtu);
    let b = pipe(&db, Ipv4Addr::new(10, 88, 0, 3), mtu);
    let fc = da.join(FC_DIR).join("b.map");
    create_fc_file(&fc, (a.ipv4, a.mac), (b.ipv4, b.mac), mtu, (512, 0)).unwrap();
    std::fs::hard_link(&fc, db.join(FC_DIR).join("a.map")).unwrap();
    let cfg = |dir: &Path| EngineConfig {
        pipe_dir: dir.to_path_buf(),
        tcp_rx_buffer: 1 << 20,
        tcp_tx_buffer: 1 << 20,
        ..EngineConfig::from_env()
    };
    let mut server = Engine::attach(cfg(&da)).unwrap();
    let mut client = Engine::attach(cfg(&db)).unwrap();
    std::thread::spawn(move || {
        let l = server.listen(7, 4).unwrap();
        let mut conn = None;
        let mut buf = vec![0u8; 1 << 20];
        let (mut pending, mut start) = (0usize, 0usize);
        server.run(|e| {
            if conn.is_none() {
                conn = e.accept(l);
            }
            let Some(id) = conn else {
                return Control::Continue;
            };
            loop {
                if start < pending {
                    start += e.write(id, &buf[start..pending]).unwrap_or(0);
                    if start < pending {
                        return Control::Continue;
                    }
                }
                match e.read(id, &mut buf) {
                    Ok(0) | Err(_) => return Control::Continue,
                    Ok(n) => (start, pending) = (0, n),
                }
            }
        });
    });
    let msg = vec![7u8; size];
    let id = client.connect(SocketAddrV4::new(a.ipv4, 7)).unwrap();
    let (mut sent, mut got, mut n) = (0, 0, 0);
    let mut rtts = Vec::with_capacity(count);
    let mut t0 = Instant::now();
    let start = Instant::now();
    client.run(|e| {
        if !e.is_established(id) {
            t0 = Instant::now();
            return Control::Continue;
        }
        if sent < size {
            sent += e.write(id, &msg[sent..]).unwrap();
        }
        let _ = e.recv_with(id, |d| {
            got += d.len();
            (d.len(), ())
        });
        if got >= size {
            rtts.push(t0.elapsed().as_nanos() as u64);
            t0 = Instant::now();
            got -= size;
            sent = 0;
            n += 1;
            if n == count {
                return Control::Exit;
            }
        }
        Control::Continue
    });
    let el = start.elapsed().as_secs_f64();
    rtts.sort();
    println!(
        "size {size} mtu {mtu}: one-way p50 {:.2} us p99 {:.2} us, goodput {:.2} Gbit/s (sum of RTTs {:.3}s, wall {el:.3}s) stats {:?}",
        rtts[rtts.len() / 2] as f64 / 2000.0,
        rtts[rtts.len() * 99 / 100] as f64 / 2000.0,
        (size * count) as f64 * 8.0 / (rtts.iter().sum::<u64>() as f64),
        rtts.iter().sum::<u64>() as f64 / 1e9,
        client.device().stats
    );
    let _ = std::fs::remove_dir_all(&root);
}
