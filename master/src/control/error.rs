//! Why a control request failed. The text a client sees is the [`Display`] of these.

use std::fmt;
use std::path::{Path, PathBuf};

/// A refused or failed control request.
#[derive(Debug)]
pub enum ControlError {
    /// The request itself is malformed (not JSON, no `cmd`, unknown fields).
    BadRequest(String),
    /// A value in the request is wrong: a name, an address, an MTU, a rate, an owner.
    Invalid(String),
    /// No pipe by this name.
    NoPipe(String),
    /// No cluster by this name.
    NoCluster(String),
    /// No fast channel between these two pipes.
    NoChannel(String, String),
    /// The request clashes with what exists: a name or address taken, a pipe joined with
    /// itself, a channel that exists already.
    Conflict(String),
    /// The caller may not do this.
    Denied(String),
    /// A pipe's file or directory could not be made, opened, given to its owner or
    /// removed (`doing` says which, e.g. "cannot create pipe directory").
    File {
        doing: String,
        path: PathBuf,
        why: String,
    },
    /// A file or directory could not be handed to its owner (`fchown`/`fchmod`).
    Give {
        path: PathBuf,
        owner: (u32, u32),
        why: String,
    },
    /// A fast-channel file could not get its second name in the other pipe's `fc/`.
    LinkFc {
        from: PathBuf,
        to: PathBuf,
        why: String,
    },
    /// The change is done but cleaning up after it failed (a directory left behind).
    PartlyDone(String),
    /// Files an earlier docknetd left do not say what its state file says.
    Mismatch(String),
    /// Not possible now or here: shutting down, no NIC, capture on a shared connection.
    Unavailable(String),
    /// The NIC refused a change (a TAP address).
    Link(String),
    /// `attach` could not mount the pipe into the process's mount namespace.
    Attach { name: String, pid: u32, why: String },
    /// A route was refused (`docknetctl route`): which one and why.
    Route(crate::route::RouteError),
    /// The data-path thread is gone.
    DataPathGone,
}

impl From<crate::route::RouteError> for ControlError {
    fn from(e: crate::route::RouteError) -> Self {
        ControlError::Route(e)
    }
}

impl ControlError {
    /// [`ControlError::File`] for `path`, with the reason `why`.
    pub fn file(doing: impl Into<String>, path: &Path, why: impl fmt::Display) -> Self {
        ControlError::File {
            doing: doing.into(),
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::BadRequest(m)
            | ControlError::Invalid(m)
            | ControlError::Conflict(m)
            | ControlError::Denied(m)
            | ControlError::Mismatch(m)
            | ControlError::Unavailable(m)
            | ControlError::Link(m)
            | ControlError::PartlyDone(m) => f.write_str(m),
            ControlError::Give { path, owner, why } => {
                write!(
                    f,
                    "cannot give {} to {}:{}: {why}",
                    path.display(),
                    owner.0,
                    owner.1
                )
            }
            ControlError::LinkFc { from, to, why } => {
                write!(
                    f,
                    "cannot link {} to {}: {why}",
                    from.display(),
                    to.display()
                )
            }
            ControlError::NoPipe(n) => write!(f, "no pipe named {n:?}"),
            ControlError::NoCluster(n) => write!(
                f,
                "no cluster named {n:?} (docknetctl cluster ls lists them)"
            ),
            ControlError::NoChannel(a, b) => write!(f, "no fast channel between {a:?} and {b:?}"),
            ControlError::File { doing, path, why } if doing.is_empty() => {
                write!(f, "{}: {why}", path.display())
            }
            ControlError::File { doing, path, why } => {
                write!(f, "{doing} {}: {why}", path.display())
            }
            ControlError::Attach { name, pid, why } => {
                write!(f, "attach {name} to pid {pid}: {why}")
            }
            ControlError::Route(e) => e.fmt(f),
            ControlError::DataPathGone => {
                f.write_str("internal error: the data path thread is gone")
            }
        }
    }
}

impl std::error::Error for ControlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_what_failed() {
        let p = Path::new("/run/docknet/pipes/a/fc");
        for (e, want) in [
            (ControlError::NoPipe("a".into()), "no pipe named \"a\""),
            (
                ControlError::NoChannel("a".into(), "b".into()),
                "no fast channel between \"a\" and \"b\"",
            ),
            (
                ControlError::file("cannot open", p, "No such file"),
                "cannot open /run/docknet/pipes/a/fc: No such file",
            ),
            (
                ControlError::file("", p, "Not a directory"),
                "/run/docknet/pipes/a/fc: Not a directory",
            ),
            (
                ControlError::Give {
                    path: p.into(),
                    owner: (1000, 100),
                    why: "EPERM".into(),
                },
                "cannot give /run/docknet/pipes/a/fc to 1000:100: EPERM",
            ),
            (
                ControlError::LinkFc {
                    from: "/x/a".into(),
                    to: "/x/b".into(),
                    why: "EEXIST".into(),
                },
                "cannot link /x/a to /x/b: EEXIST",
            ),
            (
                ControlError::Attach {
                    name: "web".into(),
                    pid: 7,
                    why: "no such process".into(),
                },
                "attach web to pid 7: no such process",
            ),
            (
                ControlError::DataPathGone,
                "internal error: the data path thread is gone",
            ),
            (
                ControlError::Denied("permission denied: x".into()),
                "permission denied: x",
            ),
        ] {
            assert_eq!(e.to_string(), want);
            assert!(!e.to_string().contains('\n'));
        }
    }
}
