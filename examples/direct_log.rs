//! An append-only O_DIRECT log with group commit: many writers hand records to one
//! committer, which writes each batch as one aligned write from one reused buffer
//! (`write_at_from`) and makes it durable with one `fdatasync`, then tells every writer of
//! the batch. Prints the commits per second.
//!
//! `cargo run --release --example direct_log -- PATH [WRITERS] [SECONDS]`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{channel::mpsc, channel::oneshot, SinkExt, StreamExt};

/// One record and the writer waiting for it to be durable.
type Entry = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "direct.log".into());
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);

    let file = match caio::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .direct(true)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}; using the page cache");
            caio::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await?
        }
    };
    let block = file.direct_alignment().map_or(4096, |a| a.offset.max(512));
    let (tx, mut rx) = mpsc::channel::<Entry>(writers * 2);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);

    // The writers: each appends records, one at a time, and waits for each to be durable.
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut tx, done) = (tx.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < deadline {
                let record = format!("writer {w} record {k}\n").into_bytes();
                let (ack, acked) = oneshot::channel();
                if tx.send((record, ack)).await.is_err() {
                    break;
                }
                match acked.await {
                    Ok(Ok(())) => done.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    _ => break,
                };
                k += 1;
            }
        }));
    }
    drop(tx);

    // The committer: everything waiting becomes one batch, padded to the block size, one
    // write and one fdatasync.
    // One aligned buffer, reused for every batch: write_at_from hands it back.
    let (mut offset, mut commits, mut bytes) = (0u64, 0u64, 0u64);
    let mut buf = caio::Buffer::with_capacity(1 << 20);
    let started = Instant::now();
    while let Some(first) = rx.next().await {
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let len: usize = batch.iter().map(|(r, _)| r.len()).sum();
        let padded = len.next_multiple_of(block);
        if buf.capacity() < padded {
            buf = caio::Buffer::with_capacity(padded.next_power_of_two());
        }
        buf.clear();
        for (record, _) in &batch {
            buf.extend_from_slice(record);
        }
        while buf.len() < padded {
            buf.extend_from_slice(&[b'\n'; 512][..(padded - buf.len()).min(512)]);
        }
        let (written, back) = file.write_at_from(buf, offset).await;
        buf = back;
        let r = match written {
            Ok(n) if n == padded => file.sync_data().await,
            Ok(n) => Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("wrote {n} of {padded} bytes"),
            )),
            Err(e) => Err(e),
        };
        let ok = r.is_ok();
        for (_, ack) in batch {
            let _ = ack.send(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::new(e.kind(), e.to_string())),
            );
        }
        if !ok {
            return r;
        }
        offset += len.next_multiple_of(block) as u64;
        commits += 1;
        bytes += len as u64;
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let records = done.load(std::sync::atomic::Ordering::Relaxed);
    file.close().await?;
    println!(
        "{records} records from {writers} writers in {commits} group commits over {secs:.2} s: \
         {:.0} commits/s, {:.0} records/s, {:.1} records per commit, {} KiB written (via {})",
        commits as f64 / secs,
        records as f64 / secs,
        records as f64 / commits.max(1) as f64,
        bytes / 1024,
        caio::Context::global()?.implementation()
    );
    Ok(())
}
