//! The crate's error type, for states the OS does not describe (configuration).

use std::io;

use crate::Implementation;

/// What can go wrong choosing or building a [`Context`](crate::Context).
///
/// Operations themselves return [`std::io::Error`] carrying the OS errno; this type is for
/// configuration. It converts into [`io::Error`] so `?` works in `io::Result` code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name that is not one of the implementations' (`linux`, `uring`, `thread`,
    /// `blocking`) or
    /// their aliases (`python`).
    #[error("unknown caio implementation {0:?}: expected one of {names}", names = crate::parse::all_spellings())]
    UnknownImplementation(String),
    /// The implementation exists but this process cannot use it now.
    #[error("caio implementation {implementation} is unavailable: {reason}")]
    Unavailable {
        /// The implementation that was asked for.
        implementation: Implementation,
        /// Why it cannot be used (for example the errno of `io_setup`).
        reason: String,
    },
    /// A builder setting out of range.
    #[error("invalid caio configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error met while setting up (spawning threads, creating a kernel context).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Unavailable { .. } => io::Error::new(io::ErrorKind::Unsupported, e),
            Error::UnknownImplementation(_) | Error::InvalidConfig(_) => {
                io::Error::new(io::ErrorKind::InvalidInput, e)
            }
        }
    }
}
