//! A mapped shared file: the memory a pipe or fast channel lives in.
//!
//! Mapped with [`memmap2::MmapRaw`] so that no Rust reference ever covers memory a peer
//! may write; all access goes through raw pointers obtained from [`SharedMap::ptr_at`],
//! which bounds- and alignment-checks the requested object against the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

/// A shared file mapped read-write into this process.
pub struct SharedMap {
    map: MmapRaw,
    path: PathBuf,
}

impl SharedMap {
    /// Create `path` (which must not exist) of `size` zero bytes and map it.
    pub fn create(path: &Path, size: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size as u64)?;
        Self::map(file, path)
    }

    /// Map an existing file whole.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(file, path)
    }

    fn map(file: File, path: &Path) -> io::Result<Self> {
        let map = MmapRaw::map_raw(&file)?;
        Ok(SharedMap {
            map,
            path: path.to_path_buf(),
        })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The file this maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pointer to a `T` at byte `off`, or `None` if it would not lie wholly and aligned
    /// inside the mapping. The pointee may be changed by a peer at any time.
    pub fn ptr_at<T>(&self, off: usize) -> Option<*mut T> {
        let end = off.checked_add(core::mem::size_of::<T>())?;
        if end > self.map.len() || !off.is_multiple_of(core::mem::align_of::<T>()) {
            return None;
        }
        // SAFETY: off + size_of::<T>() <= len was checked above, so the result stays
        // inside the mapping (mmap'd memory is page aligned, so alignment of the base is
        // at least 4096 and the offset check above gives the pointer's alignment).
        Some(unsafe { self.map.as_mut_ptr().add(off) } as *mut T)
    }

    /// Pointer to `len` bytes at `off`, or `None` if they are not inside the mapping.
    pub fn bytes_at(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.map.len() {
            return None;
        }
        // SAFETY: off + len <= mapping length, checked above.
        Some(unsafe { self.map.as_mut_ptr().add(off) })
    }
}

// SAFETY: the mapping is plain memory; every access to it goes through raw pointers with
// atomics or volatile copies, so moving the handle between threads is sound.
unsafe impl Send for SharedMap {}
// SAFETY: as above; &SharedMap only hands out raw pointers.
unsafe impl Sync for SharedMap {}
