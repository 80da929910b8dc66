//! Clusters: a `dn-nat` on a virtual IP and members behind it, started and supervised by
//! `docknetd` (`docknetctl cluster ...`).
//!
//! - [`spec`]: the cluster file and what the CLI sends.
//! - [`supervisor`]: starting, watching and stopping the processes.
//! - [`natfile`]: the configuration and stats files shared with `dn-nat`.

pub mod natfile;
pub mod spec;
pub mod supervisor;

pub use spec::{
    ClusterSpec, ClusterStatus, HealthKind, HealthSpec, MemberRun, MemberStatus, NatBackendStats,
    NatMode, Proto, SpecError, VipPort,
};
