//! DockNet's shared memory: everything that touches memory another process can write.
//!
//! A DockPipe is a file on a tmpfs that the master (`docknetd`) and one service both map;
//! a fast channel is such a file shared by two services. This crate owns their layout
//! and every access to them; all `unsafe` code for shared memory lives here, each block
//! with the reason it is sound. What it promises its users:
//!
//! - **Nothing read from shared memory is trusted.** Every index, length and offset the
//!   other side wrote is checked before use ([`ring`], [`channel`]); a bad one is counted
//!   ([`channel::ChannelFaults`]) and skipped, never followed. Headers are validated
//!   against the file size and the expected geometry when a file is opened ([`pipe`],
//!   [`fc`]).
//! - **A file shrunk under us is not fatal.** [`sigbus`] catches the SIGBUS of a truncated
//!   mapping, maps private zeros over it and marks it broken; the owner of the mapping
//!   sees [`shm::SharedMap::is_broken`] and stops using it.
//! - **Two ways to get at a frame's bytes.** The master, which trusts no one, only copies
//!   out of or into a buffer another process can write
//!   ([`channel::ChannelReceiver::copy_out`], [`channel::ChannelSender::write_at`],
//!   [`channel::copy_frame`]); it never holds a `&[u8]` over shared memory, which the other
//!   side could change while it is read (undefined behaviour for a Rust reference). The
//!   libOS may read a received frame and write its own in place
//!   ([`channel::ChannelReceiver::frame_ptr`], [`channel::ChannelSender::buf_ptr`]): its
//!   peers are the master, which wrote the frame and does not touch it again until it is
//!   returned, or a fast-channel partner, which the service chose to trust (a partner that
//!   rewrites a frame while it is read only garbles its own data).
//!
//! Modules:
//!
//! - [`abi`]: the shared-memory contract (one definition for master and services);
//!   [`frame`]: the Ethernet/IPv4 offsets both sides read in the frames it carries.
//! - [`shm`]: a mapped file; [`ring`]: single-producer single-consumer descriptor rings;
//!   [`channel`]: one direction of frames (a ring of frames plus a ring of returned
//!   buffers); [`doorbell`]: futex doorbells and the sleeper that waits on many.
//! - [`pipe`], [`fc`]: pipe and fast-channel files, created, opened and attached;
//!   [`claim`]: who is attached (a file lock the kernel releases when its holder dies).
//! - [`sigbus`]: surviving a peer that truncates a shared file.

pub mod abi;
pub mod channel;
pub mod claim;
pub mod doorbell;
pub mod fc;
pub mod frame;
pub mod pipe;
pub mod ring;
pub mod shm;
pub mod sigbus;
