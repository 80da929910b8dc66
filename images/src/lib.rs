//! `docknet-image`: packs a static DockNet service binary into a reproducible
//! `FROM scratch` OCI image layout, and turns such an image into a runc bundle whose
//! DockPipe directory is bind-mounted at `/run/docknet/pipe` when the container starts.
//!
//! See `images/README.md` for the commands and the runc recipe.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod elf;
pub mod error;
pub mod image;
pub mod oci;

pub use bundle::{runc_bundle, BundleOptions, BundleReport};
pub use error::{Error, Result};
pub use image::{build, BuildOptions, BuildReport, PIPE_MOUNT};
