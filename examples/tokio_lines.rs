//! A tokio program that counts the lines of a log, and the ones that say ERROR, with
//! caio's `File::lines` (a `futures::Stream`, so tokio needs no adapter for it).
//!
//! `cargo run --example tokio_lines -- PATH`

use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "usage: tokio_lines PATH")
    })?;
    // Opening, reading ahead and closing all run off the executor's thread.
    let file = caio::File::open(&path).await?;
    let (mut lines, mut errors) = (0u64, 0u64);
    let mut stream = file.lines();
    while let Some(line) = stream.next().await {
        lines += 1;
        if line?.contains("ERROR") {
            errors += 1;
        }
    }
    drop(stream);
    file.close().await?;
    println!(
        "{path}: {lines} lines, {errors} with ERROR (via {})",
        caio::Context::global()?.implementation()
    );
    Ok(())
}
