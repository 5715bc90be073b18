//! Warnings meant for a person: a misconfiguration (an unknown `CAIO_IMPL`, an
//! implementation that cannot run here) that the program goes on past, with a fallback.
//!
//! Through `log` when the program installed a logger, which then decides where it goes;
//! else on standard error, each distinct warning once per process, as Python's caio raises
//! a `RuntimeWarning`. A program with no logger would otherwise never see it.

use std::sync::Mutex;

use crate::{fork::PerProcess, sync::lock};

/// Reports `msg` (without the "caio: " prefix) as described in the module docs.
pub(crate) fn warn(msg: &str) {
    if logger_installed() {
        log::warn!("caio: {msg}");
        return;
    }
    // Per process: a child forked while a thread of its parent held the lock gets its
    // own, and says once what it met itself.
    static SAID: PerProcess<Mutex<Vec<String>>> = PerProcess::new();
    let mut said = lock(SAID.get(|| Mutex::new(Vec::new())));
    if said.iter().any(|s| s == msg) {
        return;
    }
    said.push(msg.to_owned());
    eprintln!("warning: caio: {msg}");
}

/// Whether the program set a `log` logger. None set, `log` has its no-op logger, which
/// enables nothing, and the maximum level is `Off`; every logger that `log` knows of sets
/// a level when installed.
fn logger_installed() -> bool {
    let meta = log::Metadata::builder()
        .level(log::Level::Warn)
        .target("caio")
        .build();
    log::max_level() != log::LevelFilter::Off || log::logger().enabled(&meta)
}
