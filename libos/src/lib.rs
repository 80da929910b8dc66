//! DockNet libOS.
//!
//! - [`abi`]: the shared-memory contract (one definition for master and services).
//! - [`shm`], [`ring`], [`channel`], [`doorbell`]: moving frames through shared memory;
//!   [`sigbus`]: surviving a peer that truncates a shared file.
//! - [`pipe`], [`fc`]: pipe and fast-channel files; [`claim`]: who is attached (a file lock).
//! - [`device`]: a smoltcp `Device` over a pipe and its fast channels.
//! - [`fault`]: loss injected on receive, for tests (`DOCKNET_DROP_RX`).
//! - [`engine`]: the run-to-completion loop and the socket API apps use.
//! - [`runtime`]: the process entry (`docknet::main!`).

pub mod abi;
pub mod channel;
pub mod claim;
pub mod device;
pub mod doorbell;
pub mod engine;
pub mod fault;
pub mod fc;
pub mod pipe;
pub mod ring;
pub mod runtime;
pub mod shm;
pub mod sigbus;

pub use engine::{Control, Engine, EngineConfig, ListenerId, NetError, SocketId, TcpId, UdpId};
