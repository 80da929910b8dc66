//! Clusters: a `dn-nat` on a virtual IP and members behind it, started and supervised by
//! `docknetd` (`docknetctl cluster ...`).
//!
//! - [`spec`]: the cluster file and what the CLI sends.

pub mod spec;

pub use spec::{
    ClusterSpec, ClusterStatus, HealthKind, HealthSpec, MemberRun, MemberStatus, NatBackendStats,
    NatMode, Proto, SpecError, VipPort,
};
