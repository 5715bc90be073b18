//! What a distribution packager needs to know: which implementation caio selects under
//! each `CAIO_IMPL` value, and from the `default_implementation` file compiled into this
//! build, with every warning on the way.
//!
//! `cargo run --example packager`
//!
//! Selection happens once per process, so the example runs itself once per value.

use std::process::Command;

fn main() {
    if std::env::var_os("CAIO_PACKAGER_CHILD").is_some() {
        let s = caio::selection();
        let warnings = if s.warnings().is_empty() {
            "none".to_string()
        } else {
            s.warnings().join("; ")
        };
        println!(
            "{:<24} -> {:<8} (from {}); warnings: {warnings}",
            std::env::var("CAIO_IMPL").map_or("(unset)".into(), |v| format!("CAIO_IMPL={v:?}")),
            s.implementation(),
            s.source()
        );
        return;
    }
    println!("compiled-in default_implementation lines:");
    let lines: Vec<_> = caio::default_implementation_file()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        println!("  (none: the built-in order applies)");
    }
    for l in lines {
        println!("  {l}");
    }
    println!("implementations on this machine:");
    for i in caio::Implementation::ALL {
        match i.check() {
            Ok(()) => println!("  {i:<8} available"),
            Err(e) => println!("  {i:<8} {e}"),
        }
    }
    println!("selection:");
    let exe = std::env::current_exe().expect("the example's own path");
    let values = [
        None,
        Some(""),
        Some("uring"),
        Some("linux"),
        Some("thread"),
        Some("python"),
        Some("blocking"),
        Some("bogus"),
    ];
    for v in values {
        let mut c = Command::new(&exe);
        c.env("CAIO_PACKAGER_CHILD", "1");
        match v {
            Some(v) => c.env("CAIO_IMPL", v),
            None => c.env_remove("CAIO_IMPL"),
        };
        let out = c.output().expect("run the example again");
        print!("  {}", String::from_utf8_lossy(&out.stdout));
    }
}
