//! The one error type of `docknet-image`: every variant carries what was being done, so
//! the CLI prints a single line that says what failed and where.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while building an image or a bundle.
#[derive(Debug)]
pub enum Error {
    /// A file-system operation failed.
    Io {
        /// What was being done ("reading the binary", "writing index.json", ...).
        context: String,
        /// The path it was done on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// JSON could not be parsed (or, never in practice, written).
    Json {
        /// Which document.
        context: String,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A command-line value is invalid (bad tag, port, name, ...).
    InvalidArgument(String),
    /// The image layout is not what an OCI layout must be, or lacks what was asked for.
    Layout(String),
    /// A blob's content does not hash to the digest that names it.
    DigestMismatch {
        /// What the blob is (layer, config, manifest).
        what: String,
        /// The digest it was expected to have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// The image uses something this tool does not handle (e.g. zstd layers).
    Unsupported(String),
}

impl Error {
    /// An I/O error with its context and path.
    pub fn io(context: impl Into<String>, path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A JSON error with its context.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                context,
                path,
                source,
            } => write!(f, "{context} {}: {source}", path.display()),
            Error::Json { context, source } => write!(f, "{context}: {source}"),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::Layout(msg) => write!(f, "bad image layout: {msg}"),
            Error::DigestMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "{what} is corrupt: expected digest {expected}, content hashes to {actual}"
            ),
            Error::Unsupported(msg) => write!(f, "unsupported: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
