//! DockNet libOS.
//!
//! The shared memory itself is the crate [`docknet_pipe`], re-exported here under the same
//! paths (`docknet::pipe`, `docknet::channel`, ...):
//!
//! - [`abi`]: the shared-memory contract (one definition for master and services).
//! - [`shm`], [`ring`], [`channel`], [`doorbell`]: moving frames through shared memory;
//!   [`sigbus`]: surviving a peer that truncates a shared file.
//! - [`pipe`], [`fc`]: pipe and fast-channel files; [`claim`]: who is attached (a file lock).
//!
//! The libOS proper:
//!
//! - [`device`]: a smoltcp `Device` over a pipe and its fast channels.
//! - [`fault`]: loss injected on receive, for tests (`DOCKNET_DROP_RX`).
//! - [`engine`]: the run-to-completion loop and the socket API apps use.
//! - [`packet`]: the packet API for apps that forward frames (a NAT) beside the TCP engine.
//! - [`runtime`]: the process entry (`docknet::main!`).

pub use docknet_pipe::{abi, channel, claim, doorbell, fc, frame, pipe, ring, shm, sigbus};

pub mod device;
pub mod engine;
pub mod fault;
pub mod packet;
pub mod prefetch;
pub mod runtime;
pub mod socket_buffers;
pub mod tcp_map;

pub use engine::{Control, Engine, EngineConfig, ListenerId, NetError, SocketId, TcpId, UdpId};
pub use packet::PacketIo;
/// Retransmission counters of the engine's TCP connections ([`Engine::tcp_retransmit_stats`]).
pub use smoltcp::socket::tcp::RetransmitStats as TcpRetransmits;
pub use tcp_map::TcpMap;
