//! Who owns a file's descriptor, and who closes it.

use super::*;
use crate::sync::lock;

/// Owns a file's descriptor. Every `File` clone and every operation in flight on it hold
/// it; the last to let go hands the descriptor to the backend to close (or to a waiting
/// [`File::close`]), so `close(2)` never runs on a polling thread.
pub(super) struct FdOwner {
    fd: Option<OwnedFd>,
    ctx: Context,
    /// A `File::close` waiting for the descriptor, to close it and report the error.
    closer: Mutex<Option<oneshot::Sender<OwnedFd>>>,
}

impl FdOwner {
    pub(super) fn new(fd: OwnedFd, ctx: Context) -> Arc<FdOwner> {
        Arc::new(FdOwner {
            fd: Some(fd),
            ctx,
            closer: Mutex::new(None),
        })
    }

    /// Closes the descriptor once every other holder has let go, through the backend,
    /// and reports the error of `close(2)`.
    pub(super) async fn close(self: Arc<Self>) -> io::Result<()> {
        let ctx = self.ctx.clone();
        let fd = self.release().await?;
        ctx.meta_unit(-1, Meta::Close(fd), None).await
    }

    /// The descriptor, once every other holder (an operation in flight) has let go.
    pub(super) async fn release(self: Arc<Self>) -> io::Result<OwnedFd> {
        let (tx, rx) = oneshot::channel();
        *lock(&self.closer) = Some(tx);
        drop(self);
        rx.await
            .map_err(|_| io::Error::other("caio: the descriptor was closed elsewhere"))
    }

    /// The descriptor, if nothing else holds it.
    pub(super) fn try_release(self: Arc<Self>) -> Result<OwnedFd, Arc<Self>> {
        let mut owner = Arc::try_unwrap(self)?;
        Ok(owner.fd.take().expect("only Drop takes it"))
    }
}

impl Drop for FdOwner {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let closer = self
            .closer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let fd = match closer {
            Some(tx) => match tx.send(fd) {
                Ok(()) => return,
                // The closer went away: close it here after all.
                Err(fd) => fd,
            },
            None => fd,
        };
        self.ctx.detach(-1, Meta::Close(fd), "close");
    }
}
