//! Pure parsers for implementation names and the `default_implementation` file.
//!
//! This file is shared with `build.rs` (through `#[path]`), so it depends on nothing but
//! `core`/`std`: `build.rs` uses it to warn about lines it cannot parse, the library to
//! choose the implementation at run time.

/// The canonical name (`linux`, `thread` or `blocking`) for one spelling, surrounding
/// whitespace ignored. `python` is Python caio's name for its plain fallback and means
/// `blocking`. Matching is exact: `Linux` or `threads` are not names.
pub fn canonical_name(value: &str) -> Option<&'static str> {
    match value.trim() {
        "linux" => Some("linux"),
        "thread" => Some("thread"),
        "python" | "blocking" => Some("blocking"),
        _ => None,
    }
}

/// One meaningful line of a `default_implementation` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    /// 1-based line number in the file.
    pub number: usize,
    /// The trimmed text of the line.
    pub text: String,
    /// The canonical name, or `None` when the line names no implementation.
    pub name: Option<&'static str>,
}

/// The lines of a `default_implementation` file that name (or fail to name) an
/// implementation, in order: lines are trimmed, blank lines and lines starting with `#`
/// are skipped.
pub fn default_file_lines(text: &str) -> Vec<FileLine> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            Some(FileLine {
                number: i + 1,
                text: line.to_string(),
                name: canonical_name(line),
            })
        })
        .collect()
}
