//! Fast-channel files: two services exchange frames directly, bypassing the master.
//!
//! The master creates one file per pair and links it into both pipe directories
//! (`A/fc/B.map` and `B/fc/A.map`). Each service maps it, finds its side by its own IPv4
//! address, sends on its outgoing channel (writing frames in place in buffers it owns) and
//! receives on the incoming one (reading frames in place in its peer's buffers). Everything
//! the peer wrote is validated: the peer is trusted to cooperate, not to be correct.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::abi::*;
use crate::channel::{ChannelFaults, ChannelReceiver, ChannelSender};
use crate::claim::{self, Claim};
use crate::pipe::{check_layout, check_magic_version, read_field, AttachError};
use crate::shm::SharedMap;

/// Which half of the file a service uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Create a fast-channel file at `path` for services `a` and `b`, sized for `mtu`: each
/// direction holds `nbufs` buffers, the small ones if `nlarge` large ones come with them
/// ([`ChannelGeometry::two_pools`]).
pub fn create_fc_file(
    path: &Path,
    a: (Ipv4Addr, [u8; 6]),
    b: (Ipv4Addr, [u8; 6]),
    mtu: u32,
    (nbufs, nlarge): (u32, u32),
) -> std::io::Result<SharedMap> {
    create_fc_file_with(a, b, mtu, (nbufs, nlarge), |size| {
        SharedMap::create(path, size)
    })
}

/// [`create_fc_file`], the file made and mapped by `create(size)` (e.g.
/// [`SharedMap::create_at`], which never follows a symlink).
pub fn create_fc_file_with(
    a: (Ipv4Addr, [u8; 6]),
    b: (Ipv4Addr, [u8; 6]),
    mtu: u32,
    (nbufs, nlarge): (u32, u32),
    create: impl FnOnce(usize) -> std::io::Result<SharedMap>,
) -> std::io::Result<SharedMap> {
    let geo = ChannelGeometry::two_pools(mtu, nbufs, nlarge);
    let (a_to_b, off) = geo.layout_at(HEADER_SIZE);
    let (b_to_a, end) = geo.layout_at(off);
    let map = create(end)?;
    let hdr = map
        .ptr_at::<FcHeader>(0)
        .expect("file is larger than the header");
    // SAFETY: a new file only we have mapped; header inside the mapping.
    unsafe {
        use core::ptr::addr_of_mut;
        addr_of_mut!((*hdr).version).write(ABI_VERSION);
        addr_of_mut!((*hdr).header_size).write(HEADER_SIZE as u32);
        addr_of_mut!((*hdr).file_size).write(end as u64);
        addr_of_mut!((*hdr).a_ipv4).write(a.0.octets());
        addr_of_mut!((*hdr).b_ipv4).write(b.0.octets());
        addr_of_mut!((*hdr).a_mac).write(a.1);
        addr_of_mut!((*hdr).b_mac).write(b.1);
        addr_of_mut!((*hdr).a_to_b).write(a_to_b);
        addr_of_mut!((*hdr).b_to_a).write(b_to_a);
        addr_of_mut!((*hdr).mtu).write(mtu);
        std::sync::atomic::fence(Ordering::Release);
        addr_of_mut!((*hdr).magic).write_volatile(FC_MAGIC);
    }
    Ok(map)
}

/// The two addresses (side a, side b) a fast-channel file joins, if its header is a valid
/// one: for a master taking over the files an earlier master made.
pub fn fc_file_ends(map: &SharedMap) -> Option<(Ipv4Addr, Ipv4Addr)> {
    check_magic_version(map, FC_MAGIC).ok()?;
    let hdr = map.ptr_at::<FcHeader>(0)?;
    let a: [u8; 4] = read_field!(hdr, a_ipv4);
    let b: [u8; 4] = read_field!(hdr, b_ipv4);
    Some((Ipv4Addr::from(a), Ipv4Addr::from(b)))
}

/// Mark a fast-channel file closed so both sides stop using it (the master calls this
/// before unlinking the file).
pub fn close_fc_file(map: &SharedMap) {
    if let Some(hdr) = map.ptr_at::<FcHeader>(0) {
        // SAFETY: header inside the mapping; atomic field.
        unsafe { &(*hdr).closed }.store(1, Ordering::Release);
        // SAFETY: bells inside the mapping.
        unsafe {
            crate::doorbell::ring(core::ptr::addr_of!((*hdr).a_bell));
            crate::doorbell::ring(core::ptr::addr_of!((*hdr).b_bell));
        }
    }
}

/// A service's end of a fast channel.
pub struct FcEnd {
    pub side: Side,
    pub my_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
    pub peer_mac: [u8; 6],
    /// The master lets the peer send us frames with source addresses other than its own
    /// (a NAT in front of us); otherwise such frames are dropped as spoofed. Set by the
    /// device from our own pipe header, never from the channel file.
    pub peer_may_forward: bool,
    pub tx: ChannelSender,
    pub rx: ChannelReceiver,
    pub faults: Arc<ChannelFaults>,
    /// [`FcEnd::ip_mtu`], read once at attach.
    ip_mtu: Option<usize>,
    map: Arc<SharedMap>,
    /// Held while attached; the kernel drops it if we die ([`crate::claim`]).
    _claim: Option<Claim>,
}

impl FcEnd {
    /// The file this end mapped.
    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// Map the fast-channel file at `path` as the side whose address is `my_ip`.
    pub fn attach(path: &Path, my_ip: Ipv4Addr) -> Result<FcEnd, AttachError> {
        let map = SharedMap::open(path).map_err(|err| AttachError::Open {
            path: path.to_path_buf(),
            err,
        })?;
        check_magic_version(&map, FC_MAGIC)?;
        let hdr = map.ptr_at::<FcHeader>(0).expect("header fits: checked");
        let a_ip = Ipv4Addr::from(read_field!(hdr, a_ipv4));
        let b_ip = Ipv4Addr::from(read_field!(hdr, b_ipv4));
        let (a_mac, b_mac): ([u8; 6], [u8; 6]) = (read_field!(hdr, a_mac), read_field!(hdr, b_mac));
        let a_to_b: ChannelLayout = read_field!(hdr, a_to_b);
        let b_to_a: ChannelLayout = read_field!(hdr, b_to_a);
        check_layout(&map, "a_to_b", &a_to_b)?;
        check_layout(&map, "b_to_a", &b_to_a)?;
        if a_to_b.overlaps(&b_to_a) {
            return Err(AttachError::BadField {
                path: path.to_path_buf(),
                field: "b_to_a",
                why: "overlaps a_to_b".into(),
            });
        }
        let side = if my_ip == a_ip {
            Side::A
        } else if my_ip == b_ip {
            Side::B
        } else {
            return Err(AttachError::BadField {
                path: path.to_path_buf(),
                field: "a_ipv4/b_ipv4",
                why: format!("neither {a_ip} nor {b_ip} is this service's address {my_ip}"),
            });
        };
        // SAFETY: header inside the live mapping; taking addresses of atomic/bell fields.
        let (mine, peer_bell) = unsafe {
            match side {
                Side::A => (&(*hdr).a_attached, core::ptr::addr_of!((*hdr).b_bell)),
                Side::B => (&(*hdr).b_attached, core::ptr::addr_of!((*hdr).a_bell)),
            }
        };
        let (out_l, in_l, peer_ip, peer_mac) = match side {
            Side::A => (a_to_b, b_to_a, b_ip, b_mac),
            Side::B => (b_to_a, a_to_b, a_ip, a_mac),
        };
        let map = Arc::new(map);
        let faults = Arc::new(ChannelFaults::default());
        // SAFETY: the map lives in the returned struct as long as the channel ends do.
        let (tx, rx) = unsafe {
            (
                ChannelSender::new(&map, &out_l, peer_bell, faults.clone()),
                ChannelReceiver::new(&map, &in_l, core::ptr::null(), faults.clone()),
            )
        };
        let bad = |field| AttachError::BadField {
            path: path.to_path_buf(),
            field,
            why: "out of file".into(),
        };
        let (tx, rx) = (tx.ok_or_else(|| bad("tx"))?, rx.ok_or_else(|| bad("rx"))?);
        // Both buffer sizes were validated: at least MIN_BUF_SIZE (> 14). The header's MTU
        // (which the peer could rewrite) is taken only if it fits them.
        let fits = (tx.buf_size().min(rx.buf_size()) - ETH_HEADER_LEN).min(MAX_MTU as usize);
        let said: u32 = read_field!(hdr, mtu);
        let ip_mtu = match said as usize {
            0 => None,
            m if (MIN_MTU as usize..=fits).contains(&m) => Some(m),
            _ => Some(fits),
        };
        let end = FcEnd {
            side,
            my_ip,
            peer_ip,
            peer_mac,
            peer_may_forward: false,
            tx,
            rx,
            faults,
            ip_mtu,
            map,
            _claim: None,
        };
        // Claimed only now, so a failed attach leaves no claim behind. (Dropping `end` on
        // an error leaves `attached` alone: Drop only clears a claim of our pid.)
        let slot = match side {
            Side::A => claim::FC_SIDE_A_SLOT,
            Side::B => claim::FC_SIDE_B_SLOT,
        };
        let mut end = end;
        end._claim = match claim::try_claim(path, slot) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                return Err(AttachError::AlreadyAttached {
                    path: path.to_path_buf(),
                    pid: mine.load(Ordering::Acquire),
                })
            }
            Err(err) => {
                return Err(AttachError::Lock {
                    path: path.to_path_buf(),
                    err,
                })
            }
        };
        // We hold the claim, so any pid still recorded is a process that died attached.
        let me = std::process::id();
        let prev = mine.swap(me, Ordering::AcqRel);
        if prev != 0 && prev != me {
            log::info!(
                "fast channel {}: taking over from pid {prev}, which exited without detaching",
                path.display()
            );
        }
        Ok(end.resynced())
    }

    /// Start over after an earlier owner of this side went away: hand back frames it left
    /// unread and, if the peer is there to drain our old frames, forget the buffers it
    /// returned to the earlier owner (see `ChannelSender::resync`).
    fn resynced(mut self) -> Self {
        self.rx.drain();
        let wait = if self.peer_attached() {
            std::time::Duration::from_millis(200)
        } else {
            std::time::Duration::ZERO
        };
        if !self.tx.resync(wait) && self.peer_attached() {
            log::warn!(
                "fast channel {}: the peer did not drain our ring in time",
                self.path().display()
            );
        }
        self
    }

    fn header(&self) -> *mut FcHeader {
        self.map.ptr_at::<FcHeader>(0).expect("validated header")
    }

    /// The doorbell this side sleeps on.
    pub fn my_bell(&self) -> *const Doorbell {
        let hdr = self.header();
        // SAFETY: header inside the live mapping.
        unsafe {
            match self.side {
                Side::A => core::ptr::addr_of!((*hdr).a_bell),
                Side::B => core::ptr::addr_of!((*hdr).b_bell),
            }
        }
    }

    /// True once the file was shrunk under us (by the peer, or anyone who can write it):
    /// the channel is now private zeros; stop using it ([`crate::sigbus`]).
    pub fn is_broken(&self) -> bool {
        self.map.is_broken()
    }

    /// True once the master closed the channel.
    pub fn is_closed(&self) -> bool {
        // SAFETY: header inside the live mapping; atomic field.
        unsafe { &(*self.header()).closed }.load(Ordering::Acquire) != 0
    }

    /// The largest IP packet this channel carries both ways: the MTU the master made it
    /// for (`docknetctl fc create --mtu`; it may exceed the pipes'), never more than its
    /// buffers less the Ethernet header, at most [`MAX_MTU`]. `None` for a file of a
    /// master before that option (its channels had the pipes' MTU).
    pub fn ip_mtu(&self) -> Option<usize> {
        self.ip_mtu
    }

    /// True while the peer has the channel mapped: only then do we send on it.
    pub fn peer_attached(&self) -> bool {
        let hdr = self.header();
        // SAFETY: header inside the live mapping; atomic fields.
        let peer = unsafe {
            match self.side {
                Side::A => &(*hdr).b_attached,
                Side::B => &(*hdr).a_attached,
            }
        };
        peer.load(Ordering::Acquire) != 0
    }
}

impl Drop for FcEnd {
    fn drop(&mut self) {
        if self._claim.is_none() {
            // Never claimed (a failed attach): the recorded pid is someone else's, even if
            // it equals ours (pid 1 in two containers).
            return;
        }
        let hdr = self.header();
        // SAFETY: header inside the live mapping; atomic field.
        let mine = unsafe {
            match self.side {
                Side::A => &(*hdr).a_attached,
                Side::B => &(*hdr).b_attached,
            }
        };
        let _ = mine.compare_exchange(std::process::id(), 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}
