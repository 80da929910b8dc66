//! Helpers shared by the libOS integration tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use docknet::pipe::PipeConfig;

/// A pipe at `ip`/16 (gateway 10.88.0.1, MAC 02:00 followed by the address's octets).
pub fn pipe_config(ip: Ipv4Addr, mtu: u32, nbufs: u32, flags: u32) -> PipeConfig {
    let o = ip.octets();
    PipeConfig {
        mac: [2, 0, o[0], o[1], o[2], o[3]],
        ipv4: ip,
        prefix_len: 16,
        gateway: Ipv4Addr::new(10, 88, 0, 1),
        mtu,
        nbufs,
        nlarge: 0,
        flags,
    }
}

/// A scratch directory, emptied of what an earlier run left and created; removed with
/// its contents on drop, whether the test passed or not.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(path: PathBuf) -> TempDir {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
