//! `cargo run --example mirror --features tokio -- SRC DST`: mirrors the directory SRC
//! into DST. The program (`program.rs`) is written against `tokio::fs`; this file runs it
//! on caio by the one line below.

use caio::fs;

include!("program.rs");

#[tokio::main]
async fn main() -> io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dst] = &args[..] else {
        eprintln!("usage: mirror SRC DST");
        std::process::exit(2);
    };
    let s = mirror(src, dst).await?;
    println!(
        "copied {} skipped {} removed {} bytes {} checksum {}",
        s.copied, s.skipped, s.removed, s.bytes, s.checksum
    );
    Ok(())
}
