//! A mapped shared file: the memory a pipe or fast channel lives in.
//!
//! Mapped with [`memmap2::MmapRaw`] so that no Rust reference ever covers memory a peer
//! may write; all access goes through raw pointers obtained from [`SharedMap::ptr_at`],
//! which bounds- and alignment-checks the requested object against the mapping.
//!
//! Every mapping is guarded against its file being shrunk under it ([`crate::sigbus`]):
//! the pages then read as zeros and [`SharedMap::is_broken`] turns true, instead of the
//! process dying of SIGBUS.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

/// Give `file` `size` bytes, all of them allocated now (`fallocate`): a full tmpfs fails
/// here, with the pipe's name in the caller's error, not as a SIGBUS on a later write;
/// and the pages are not allocated and zeroed one fault at a time under traffic.
fn allocate(file: &File, size: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "shared file too large"))?;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by
    // `file` and open for writing.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // A file system without fallocate: sparse, as before.
        Some(libc::EOPNOTSUPP) => file.set_len(size as u64),
        _ => Err(err),
    }
}

/// A shared file mapped read-write into this process.
pub struct SharedMap {
    map: MmapRaw,
    path: PathBuf,
    guard: Option<crate::sigbus::GuardId>,
    /// The file mapped, held open: questions about it (who holds its lock) are asked of
    /// this inode, never of whatever a peer may later put at `path`.
    file: File,
}

impl SharedMap {
    /// Create `path` (which must not exist) of `size` zero bytes, mode 0600 (the traffic in
    /// it is no one else's business), and map it.
    pub fn create(path: &Path, size: usize) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        allocate(&file, size)?;
        Self::map(file, path)
    }

    /// Create file `name` (one path component) in the directory open as `dir`, of `size`
    /// zero bytes, mode `mode`, and map it. Never follows a symlink and never replaces
    /// anything (`O_CREAT | O_EXCL | O_NOFOLLOW`): for directories a tenant can write to.
    /// `path` is only what the map reports as its path.
    pub fn create_at(
        dir: BorrowedFd<'_>,
        name: &Path,
        path: &Path,
        size: usize,
        mode: u32,
    ) -> io::Result<Self> {
        let file = open_in(
            dir,
            name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )?;
        allocate(&file, size)?;
        Self::map(file, path)
    }

    /// Map file `name` (one path component) of the directory open as `dir`: never following
    /// a symlink, and only a regular file (a FIFO or device planted there is refused, not
    /// opened for long). For files in directories a tenant can write to.
    pub fn open_at(dir: BorrowedFd<'_>, name: &Path, path: &Path) -> io::Result<Self> {
        let file = open_in(
            dir,
            name,
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0,
        )?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", path.display()),
            ));
        }
        Self::map(file, path)
    }

    /// Map an existing file whole.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(file, path)
    }

    /// Map `file` whole with its page tables filled in (`MAP_POPULATE`): the first pass of
    /// traffic round a ring would otherwise take a page fault per 4 KiB, a few
    /// milliseconds per pipe spread over the first megabytes a connection moves.
    fn map(file: File, path: &Path) -> io::Result<Self> {
        let map = memmap2::MmapOptions::new().populate().map_raw(&file)?;
        let guard = crate::sigbus::register(map.as_mut_ptr(), map.len());
        Ok(SharedMap {
            map,
            path: path.to_path_buf(),
            guard,
            file,
        })
    }

    /// The file mapped (the inode, whatever has become of its path since).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// True once the file was shrunk under the mapping (a SIGBUS was caught on it): the
    /// memory is now private zeros, shared with no one. Whoever owns the mapping should
    /// stop using it.
    pub fn is_broken(&self) -> bool {
        self.guard.is_some_and(crate::sigbus::is_broken)
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

impl Drop for SharedMap {
    fn drop(&mut self) {
        // Before `map` is unmapped (fields drop after this body).
        if let Some(g) = self.guard.take() {
            crate::sigbus::unregister(g);
        }
    }
}

/// `openat(dir, name, flags, mode)` for one path component `name`.
fn open_in(dir: BorrowedFd<'_>, name: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let bytes = name.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a single path component", name.display()),
        ));
    }
    let c =
        std::ffi::CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `dir` is an open directory fd, `c` a NUL-terminated name; the result is
    // checked before use.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

// SAFETY: the mapping is plain memory; every access to it goes through raw pointers with
// atomics or volatile copies, so moving the handle between threads is sound.
unsafe impl Send for SharedMap {}
// SAFETY: as above; &SharedMap only hands out raw pointers.
unsafe impl Sync for SharedMap {}
