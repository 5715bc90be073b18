//! Pure parsers for implementation names and the `default_implementation` file.
//!
//! This file is shared with `build.rs` (through `#[path]`), so it depends on nothing but
//! `core`/`std`: `build.rs` uses it to warn about lines it cannot parse, the library to
//! choose the implementation at run time.

/// The name column of the implementation table (`backend::TABLE`, which takes its names
/// from here, row for row): each implementation's canonical name and the other spellings
/// that select it, in the built-in order of preference. It lives here because `build.rs`
/// needs the names and cannot compile the backends.
pub const NAMES: [(&str, &[&str]); 4] = [
    ("linux", &[]),
    ("uring", &[]),
    ("thread", &[]),
    ("blocking", &["python"]),
];

/// The canonical name for one spelling, surrounding whitespace ignored. `python` is
/// Python caio's name for its plain fallback and means `blocking`. Matching is exact:
/// `Linux` or `threads` are not names.
pub fn canonical_name(value: &str) -> Option<&'static str> {
    let value = value.trim();
    NAMES
        .iter()
        .find(|(name, aliases)| *name == value || aliases.contains(&value))
        .map(|(name, _)| *name)
}

/// Every accepted spelling, canonical names first, for messages: "linux, thread, ...".
pub fn all_spellings() -> String {
    let names = NAMES.iter().map(|(n, _)| *n);
    let aliases = NAMES.iter().flat_map(|(_, a)| a.iter().copied());
    names.chain(aliases).collect::<Vec<_>>().join(", ")
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
