//! The futures of `File`'s positional operations, named so that they take the
//! per-operation controls (`priority`, `dsync`, `nowait`, `uncached`, `append`) before
//! their first poll, as the `Context` operations do.
//!
//! An operation that is one kernel request (the common case of `read_at_into` and
//! `write_at_from`) is that request's own future, so the controls go straight to it and
//! nothing is allocated; one made of several steps (an unaligned O_DIRECT range, a write
//! continued after a short one) is built at its first poll, on a handle of the file that
//! carries the controls to every request it makes.

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use std::sync::{Arc, OnceLock};

use super::File;
use crate::{
    backend::Controls,
    context::{abort::Abort, op::BufOperation},
    AbortHandle, Priority,
};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Builds the operation on a handle of the file with the controls, or with the error an
/// out-of-range priority makes.
type Build<T> = Box<dyn FnOnce(io::Result<File>) -> Boxed<T> + Send>;

/// A future built at its first poll.
enum Lazy<T> {
    Start(File, Build<T>),
    Running(Boxed<T>),
    Done,
}

impl<T> Lazy<T> {
    fn poll(
        &mut self,
        controls: io::Result<Controls>,
        abort: Option<&Arc<Abort>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<T> {
        if let Lazy::Start(..) = self {
            let Lazy::Start(file, build) = std::mem::replace(self, Lazy::Done) else {
                unreachable!("matched above")
            };
            let abort = abort.cloned();
            *self = Lazy::Running(build(controls.map(|c| file.with_controls(c, abort))));
        }
        match self {
            Lazy::Running(f) => {
                let r = f.as_mut().poll(cx);
                if r.is_ready() {
                    *self = Lazy::Done;
                }
                r
            }
            _ => panic!("caio: a File operation polled after it completed"),
        }
    }
}

/// The controls asked of an operation, or the error of an out-of-range priority, and its
/// cancellation once an abort handle was asked for.
#[derive(Default)]
struct Asked {
    controls: Controls,
    error: Option<io::Error>,
    abort: OnceLock<Arc<Abort>>,
}

impl Asked {
    /// A handle on the cancellation of the operation `lazy` builds: every request it makes
    /// joins it. Asked for once it runs, it cancels nothing.
    fn abort_handle<T>(&self, lazy: &Lazy<T>) -> AbortHandle {
        let abort = self.abort.get_or_init(|| match lazy {
            Lazy::Start(file, _) => Abort::new(&file.context().into_shared()),
            _ => Abort::unattached(),
        });
        AbortHandle::new(Arc::clone(abort))
    }

    fn get(&mut self) -> io::Result<Controls> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.controls),
        }
    }
}

/// The future of [`File::read_at`], [`File::write_at`], [`File::write_all_at`],
/// [`File::sync_all`] and [`File::sync_data`]: resolves to `io::Result<T>`. Takes the
/// per-operation controls before its first poll, as [`crate::Operation`] does.
#[must_use = "an operation does nothing until it is awaited or polled"]
pub struct FileFuture<T> {
    asked: Asked,
    lazy: Lazy<io::Result<T>>,
}

/// The future of [`File::read_at_into`], [`File::write_at_from`],
/// [`File::read_vectored_at`] and [`File::write_vectored_at`]: resolves to
/// `(io::Result<usize>, B)`, the caller's buffers handed back. Takes the per-operation
/// controls before its first poll, as [`crate::BufOperation`] does.
#[must_use = "an operation does nothing until it is awaited or polled"]
pub struct FileBufFuture<B> {
    asked: Asked,
    state: BufState<B>,
}

enum BufState<B> {
    /// Refused before it started; the buffers go back.
    Ready(Option<(io::Result<usize>, B)>),
    /// One request: its own future.
    Op(BufOperation<B>),
    Lazy(Lazy<(io::Result<usize>, B)>),
}

impl<T: Send + 'static> FileFuture<T> {
    pub(super) fn new(
        file: &File,
        build: impl FnOnce(File) -> Boxed<io::Result<T>> + Send + 'static,
    ) -> Self {
        FileFuture {
            asked: Asked::default(),
            lazy: Lazy::Start(
                file.clone(),
                Box::new(move |f: io::Result<File>| match f {
                    Ok(f) => build(f),
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                }),
            ),
        }
    }
}

impl<B: Send + 'static> FileBufFuture<B> {
    pub(super) fn ready(r: io::Result<usize>, bufs: B) -> Self {
        FileBufFuture {
            asked: Asked::default(),
            state: BufState::Ready(Some((r, bufs))),
        }
    }

    pub(super) fn op(op: BufOperation<B>) -> Self {
        FileBufFuture {
            asked: Asked::default(),
            state: BufState::Op(op),
        }
    }

    /// Several steps on `bufs`, built at the first poll; an out-of-range priority hands
    /// the buffers back with its error.
    pub(super) fn lazy(
        file: &File,
        bufs: B,
        build: impl FnOnce(File, B) -> Boxed<(io::Result<usize>, B)> + Send + 'static,
    ) -> Self {
        FileBufFuture {
            asked: Asked::default(),
            state: BufState::Lazy(Lazy::Start(
                file.clone(),
                Box::new(move |f: io::Result<File>| match f {
                    Ok(f) => build(f, bufs),
                    Err(e) => Box::pin(std::future::ready((Err(e), bufs))),
                }),
            )),
        }
    }
}

/// The modifiers, the same on both: see [`crate::Operation::priority`] and the others.
macro_rules! file_controls {
    ($($ty:ident<$p:ident>),*) => {$(
        impl<$p: Send + 'static> $ty<$p> {
            /// Runs it at this I/O [`Priority`]: see [`crate::Operation::priority`].
            pub fn priority(mut self, priority: Priority) -> Self {
                match priority.ioprio() {
                    Ok(p) => self.asked.controls.prio = Some(p),
                    Err(e) => self.asked.error = Some(e),
                }
                self
            }

            /// Durable when it completes: see [`crate::Operation::dsync`].
            pub fn dsync(mut self) -> Self {
                self.asked.controls.dsync = true;
                self
            }

            /// `WouldBlock` rather than wait: see [`crate::Operation::nowait`].
            pub fn nowait(mut self) -> Self {
                self.asked.controls.nowait = true;
                self
            }

            /// Leaves no pages in the cache: see [`crate::Operation::uncached`].
            pub fn uncached(mut self) -> Self {
                self.asked.controls.uncached = true;
                self
            }

            /// At the end of the file: see [`crate::Operation::append`].
            pub fn append(mut self) -> Self {
                self.asked.controls.append = true;
                self
            }
        }

        impl<$p> fmt::Debug for $ty<$p> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }

        // SAFETY: nothing is reachable through `&Self`: no method takes `&self` and no
        // field is public, so sharing one between threads shares no access to what it
        // holds, which is only touched through `Pin<&mut Self>` (one thread at a time)
        // and sent with the whole (it is `Send`).
        unsafe impl<$p: Send> Sync for $ty<$p> {}
    )*};
}

file_controls!(FileFuture<T>, FileBufFuture<B>);

impl<T: Send + 'static> FileFuture<T> {
    /// A handle that cancels this operation: see [`crate::Operation::abort_handle`]. Ask
    /// for it before the first poll: every request the operation makes joins it.
    pub fn abort_handle(&self) -> AbortHandle {
        self.asked.abort_handle(&self.lazy)
    }
}

impl<B: Send + 'static> FileBufFuture<B> {
    /// A handle that cancels this operation: see [`crate::BufOperation::abort_handle`].
    /// Ask for it before the first poll: every request the operation makes joins it.
    pub fn abort_handle(&self) -> AbortHandle {
        match &self.state {
            BufState::Op(op) => op.abort_handle(),
            BufState::Lazy(l) => self.asked.abort_handle(l),
            BufState::Ready(_) => AbortHandle::new(Abort::unattached()),
        }
    }
}

impl<T: Send + 'static> Future for FileFuture<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<T>> {
        // Unpin: every field is (the running future is boxed).
        let this = self.get_mut();
        let controls = this.asked.get();
        this.lazy.poll(controls, this.asked.abort.get(), cx)
    }
}

impl<B: Send + Unpin + 'static> Future for FileBufFuture<B> {
    type Output = (io::Result<usize>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            BufState::Ready(r) => Poll::Ready(
                r.take()
                    .expect("caio: a File operation polled after it completed"),
            ),
            BufState::Op(op) => {
                if this.asked.controls != Controls::default() || this.asked.error.is_some() {
                    let asked = std::mem::take(&mut this.asked);
                    let BufState::Op(op) =
                        std::mem::replace(&mut this.state, BufState::Ready(None))
                    else {
                        unreachable!("matched above")
                    };
                    this.state = BufState::Op(op.with_controls(asked.controls, asked.error));
                    return Pin::new(this).poll(cx);
                }
                Pin::new(op).poll(cx)
            }
            BufState::Lazy(l) => {
                let controls = this.asked.get();
                l.poll(controls, this.asked.abort.get(), cx)
            }
        }
    }
}
