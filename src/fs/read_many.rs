//! [`File::read_many`]: many ranges of one file, read as fewer, larger reads.
//!
//! The ranges are sorted by offset and gathered into spans: a range joins the span before
//! it when the gap between them is at most `merge_gap`, the span stays within
//! `max_merged` bytes, and the span reads at most `max_amplification` times the bytes its
//! ranges ask for. Each span is one read (aligned for O_DIRECT by [`File::read_at`]), at
//! most `max_in_flight` at once; as each completes, its ranges come out, in completion
//! order. This is what glommio's `read_many` and PostgreSQL's `io_combine_limit` do, for
//! workloads such as the many small range reads of a Parquet file.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io,
    ops::Range,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::{stream::FuturesUnordered, Stream, StreamExt};

use crate::{Buffer, File};

/// How [`File::read_many`] merges and paces its reads.
///
/// ```
/// let opts = caio::ReadManyOptions::new()
///     .merge_gap(64 << 10)
///     .max_merged(1 << 20)
///     .max_in_flight(64);
/// assert_eq!(opts.max_in_flight_reads(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadManyOptions {
    merge_gap: u64,
    max_merged: usize,
    max_in_flight: usize,
    max_amplification: f64,
}

impl Default for ReadManyOptions {
    fn default() -> Self {
        ReadManyOptions::new()
    }
}

impl ReadManyOptions {
    /// Ranges at most 16 KiB apart merge, into reads of at most 1 MiB that read at most
    /// twice what they are asked for; 32 reads in flight.
    pub fn new() -> ReadManyOptions {
        ReadManyOptions {
            merge_gap: 16 << 10,
            max_merged: 1 << 20,
            max_in_flight: 32,
            max_amplification: 2.0,
        }
    }

    /// The largest gap between two ranges that one read still spans (0: only touching or
    /// overlapping ranges merge).
    pub fn merge_gap(mut self, bytes: u64) -> Self {
        self.merge_gap = bytes;
        self
    }

    /// The largest merged read. A single range longer than this is read as it is.
    pub fn max_merged(mut self, bytes: usize) -> Self {
        self.max_merged = bytes.max(1);
        self
    }

    /// How many reads are in flight at most (at least 1).
    pub fn max_in_flight(mut self, reads: usize) -> Self {
        self.max_in_flight = reads.max(1);
        self
    }

    /// How many times the bytes its ranges ask for a merged read may read (at least 1:
    /// gaps are then merged only where ranges overlap or touch).
    pub fn max_amplification(mut self, factor: f64) -> Self {
        self.max_amplification = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self
    }

    /// The limit on reads in flight.
    pub fn max_in_flight_reads(&self) -> usize {
        self.max_in_flight
    }
}

/// One read: `start..end`, and the ranges it serves (with their place in the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) ranges: Vec<Range<u64>>,
}

/// Gathers sorted, non-empty ranges into spans (see the module docs).
pub(crate) fn plan(mut ranges: Vec<Range<u64>>, o: &ReadManyOptions) -> Vec<Span> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut spans: Vec<Span> = Vec::new();
    // Bytes the current span's ranges ask for (their union).
    let mut asked = 0u64;
    for r in ranges {
        if let Some(s) = spans.last_mut() {
            let end = s.end.max(r.end);
            let covered = asked + r.end.saturating_sub(s.end.max(r.start));
            let fits = r.start <= s.end.saturating_add(o.merge_gap)
                && end - s.start <= o.max_merged as u64
                && (end - s.start) as f64 <= o.max_amplification * covered as f64;
            if fits {
                s.end = end;
                asked = covered;
                s.ranges.push(r);
                continue;
            }
        }
        asked = r.end - r.start;
        spans.push(Span {
            start: r.start,
            end: r.end,
            ranges: vec![r],
        });
    }
    spans
}

type SpanRead = Pin<Box<dyn Future<Output = (Span, io::Result<Buffer>)> + Send>>;

/// The results of [`File::read_many`]: a [`Stream`] of each range with its bytes (fewer
/// only at the end of the file, none past it), in the order the reads complete.
#[must_use = "a stream does nothing unless polled"]
pub struct ReadMany {
    file: File,
    todo: VecDeque<Span>,
    reading: FuturesUnordered<SpanRead>,
    ready: VecDeque<(Range<u64>, io::Result<Buffer>)>,
    max_in_flight: usize,
}

impl fmt::Debug for ReadMany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadMany")
            .field("to_read", &self.todo.len())
            .field("in_flight", &self.reading.len())
            .field("ready", &self.ready.len())
            .finish()
    }
}

/// An error for each range of a failed read: the same kind, and errno where it has one.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl Stream for ReadMany {
    type Item = (Range<u64>, io::Result<Buffer>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(r) = this.ready.pop_front() {
                return Poll::Ready(Some(r));
            }
            while this.reading.len() < this.max_in_flight {
                let Some(span) = this.todo.pop_front() else {
                    break;
                };
                let len = usize::try_from(span.end - span.start).unwrap_or(usize::MAX);
                let read = this.file.read_at(len, span.start);
                this.reading
                    .push(Box::pin(async move { (span, read.await) }));
            }
            let (span, data) = match this.reading.poll_next_unpin(cx) {
                Poll::Ready(Some(done)) => done,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match data {
                Err(e) => {
                    for r in span.ranges {
                        this.ready.push_back((r, Err(copy_error(&e))));
                    }
                }
                Ok(data) if span.ranges.len() == 1 && span.ranges[0] == (span.start..span.end) => {
                    let r = span.ranges.into_iter().next().expect("one range");
                    this.ready.push_back((r, Ok(data)));
                }
                Ok(data) => {
                    for r in span.ranges {
                        let from = ((r.start - span.start) as usize).min(data.len());
                        let to = ((r.end - span.start) as usize).min(data.len());
                        this.ready.push_back((r, Ok(Buffer::from(&data[from..to]))));
                    }
                }
            }
        }
    }
}

impl File {
    /// Reads many ranges of the file, merging nearby ones into fewer, larger reads, with at
    /// most [`max_in_flight`](ReadManyOptions::max_in_flight) reads in flight: a
    /// [`Stream`] of each range and its bytes (fewer only at the end of the file) in the
    /// order they complete. Ranges may overlap, repeat, and come in any order; an empty
    /// range gives no bytes; a range whose end is before its start is an error of kind
    /// `InvalidInput`. On an O_DIRECT file any ranges work (the reads are aligned). A read
    /// that fails fails each range it served, with the same error.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// use futures::StreamExt;
    /// let file = caio::File::open("table.parquet").await?;
    /// let footer_and_columns = vec![0..4096, 8192..12288, 12288..20000, 1 << 20..(1 << 20) + 512];
    /// let mut results = file.read_many(footer_and_columns, caio::ReadManyOptions::new());
    /// while let Some((range, data)) = results.next().await {
    ///     println!("{range:?}: {} bytes", data?.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_many(
        &self,
        ranges: impl IntoIterator<Item = Range<u64>>,
        opts: ReadManyOptions,
    ) -> ReadMany {
        let mut ready = VecDeque::new();
        let mut valid = Vec::new();
        for r in ranges {
            if r.end < r.start {
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the range {r:?} ends before it starts"),
                );
                ready.push_back((r, Err(e)));
            } else if r.start == r.end {
                ready.push_back((r, Ok(Buffer::new())));
            } else {
                valid.push(r);
            }
        }
        ReadMany {
            file: self.clone(),
            todo: plan(valid, &opts).into(),
            reading: FuturesUnordered::new(),
            ready,
            max_in_flight: opts.max_in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o() -> ReadManyOptions {
        ReadManyOptions::new()
            .merge_gap(100)
            .max_merged(1000)
            .max_amplification(2.0)
    }

    #[test]
    fn near_ranges_merge_far_ones_do_not_and_the_limits_hold() {
        let spans = plan(vec![500..600, 0..100, 150..200, 2000..2100, 90..120], &o());
        let got: Vec<(u64, u64, usize)> = spans
            .iter()
            .map(|s| (s.start, s.end, s.ranges.len()))
            .collect();
        // 0..100, 90..120 and 150..200 within the gap; 500 is 300 past 200: its own.
        assert_eq!(got, vec![(0, 200, 3), (500, 600, 1), (2000, 2100, 1)]);
        // A span never grows past max_merged.
        let spans = plan((0..20).map(|k| k * 100..k * 100 + 90).collect(), &o());
        assert!(spans.iter().all(|s| s.end - s.start <= 1000), "{spans:?}");
        assert!(spans.len() >= 2);
        // Nor reads more than twice what it is asked: two 10-byte ranges 90 apart do not
        // merge (110 bytes read for 20 asked).
        let spans = plan(vec![0..10, 100..110], &o());
        assert_eq!(spans.len(), 2);
        // A range longer than max_merged is read whole.
        let spans = plan(std::iter::once(0..5000).collect(), &o());
        assert_eq!((spans[0].start, spans[0].end), (0, 5000));
    }
}
