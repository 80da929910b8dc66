//! Helpers shared by the libOS integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
