//! [`Builder`]: the settings of a new [`Context`], checked at `build`.

use super::*;

/// Settings for a [`Context`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    implementation: Option<Implementation>,
    max_requests: Option<usize>,
    threads: Option<usize>,
}

impl Builder {
    /// Use this implementation; `build` fails with [`Error::Unavailable`] if it cannot.
    pub fn implementation(mut self, i: Implementation) -> Self {
        self.implementation = Some(i);
        self
    }

    /// Operations in flight at once (the kernel queue depth for Linux AIO). Default 256;
    /// 0 or more than 65536 is [`Error::InvalidConfig`] at `build`. For the linux
    /// implementation, `max_requests + 1` AIO events must fit in `fs.aio-max-nr` less the
    /// system's `fs.aio-nr` (65536 in all by default, so at most 65535 on an idle system);
    /// `build` says so when they do not.
    pub fn max_requests(mut self, n: usize) -> Self {
        self.max_requests = Some(n);
        self
    }

    /// Worker threads, where a pool is used. Default [`default_threads`]; 0 or more than
    /// 1024 is [`Error::InvalidConfig`] at `build`.
    ///
    /// On `uring` it bounds the kernel's own workers (`iou-wrk-…` threads, which run
    /// buffered writes, syncs, metadata calls and reads the page cache does not hold). The
    /// kernel keeps those workers per thread that submits to the ring: each such thread
    /// (a thread whose poll sends operations, and the context's reaper) gets at most `n`
    /// for I/O and `n` more for other calls. A process whose operations are sent from `k`
    /// threads may so see up to `(k + 1) × 2 × n` of them, while they have work.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Builds the context.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for settings out of range; [`Error::Unavailable`] for an
    /// explicitly chosen implementation this process cannot use; [`Error::Io`] when the
    /// backend cannot start.
    pub fn build(self) -> Result<Context, Error> {
        let max_requests = self.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS);
        if max_requests == 0 || max_requests > MAX_MAX_REQUESTS {
            return Err(Error::InvalidConfig(format!(
                "max_requests must be between 1 and {MAX_MAX_REQUESTS}, not {max_requests}"
            )));
        }
        let threads = self.threads.unwrap_or_else(default_threads);
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidConfig(format!(
                "threads must be between 1 and {MAX_THREADS}, not {threads}"
            )));
        }
        let (implementation, explicit) = match self.implementation {
            Some(i) => (i, true),
            None => (selection().implementation, false),
        };
        let config = Config {
            max_requests,
            threads,
        };
        let backend = match implementation.start(config) {
            Ok(b) => b,
            Err(reason) if explicit => {
                return Err(Error::Unavailable {
                    implementation,
                    reason,
                })
            }
            Err(reason) => {
                // Selected earlier but gone now (e.g. fs.aio-max-nr spent since): fall back.
                crate::notice::warn(&format!(
                    "{implementation} is unavailable ({reason}); using the thread pool"
                ));
                Implementation::Thread
                    .start(config)
                    .map_err(|r| Error::Unavailable {
                        implementation: Implementation::Thread,
                        reason: r,
                    })?
            }
        };
        Ok(Context {
            shared: Arc::new(Shared::new(backend, max_requests)),
        })
    }
}
