//! Compiles the `default_implementation` file at the crate root into the library, so that
//! a distro packager chooses the default backend by editing one file.

#[path = "src/parse.rs"]
#[allow(dead_code)]
mod parse;

use std::{env, fs, io, path::PathBuf};

fn main() {
    let root =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let file = root.join("default_implementation");
    println!("cargo:rerun-if-changed={}", file.display());
    println!("cargo:rerun-if-changed=src/parse.rs");

    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            println!(
                "cargo:warning=cannot read {}: {e}; no packager default compiled in",
                file.display()
            );
            String::new()
        }
    };
    for line in parse::default_file_lines(&text) {
        if line.name.is_none() {
            println!(
                "cargo:warning=default_implementation line {}: {:?} is not one of {}; it will be skipped",
                line.number,
                line.text,
                parse::all_spellings()
            );
        }
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("default_implementation"), text).expect("OUT_DIR is writable");
}
