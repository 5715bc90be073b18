//! Which implementation runs: `CAIO_IMPL`, else the packager's `default_implementation`
//! file, else the first available of linux, uring, thread, blocking.

use std::{
    env,
    ffi::OsString,
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicPtr, Ordering},
        Mutex,
    },
};

pub use crate::backend::Implementation;
use crate::sync::lock;
use crate::{backend::TABLE, fork::PerProcess, parse, Error};

/// The compiled-in `default_implementation` file (see `build.rs`).
const DEFAULT_FILE: &str = include_str!(concat!(env!("OUT_DIR"), "/default_implementation"));

/// The environment variable that overrides everything else.
pub const ENV_VAR: &str = "CAIO_IMPL";

impl Implementation {
    /// `Ok` when this process can use the implementation now, else
    /// [`Error::Unavailable`] with the reason (the errno of `io_setup`, for Linux).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn check(self) -> Result<(), Error> {
        self.probe().map_err(|reason| Error::Unavailable {
            implementation: self,
            reason,
        })
    }
}

impl FromStr for Implementation {
    type Err = Error;

    /// Accepts exactly the names of the table (`linux`, `thread`, `blocking`) and their
    /// aliases (`python`, the plain fallback, as in Python caio), surrounding whitespace
    /// ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        let name = parse::canonical_name(s);
        TABLE
            .iter()
            .find(|row| Some(row.names.0) == name)
            .map(|row| row.implementation)
            .ok_or_else(|| Error::UnknownImplementation(s.to_string()))
    }
}

/// Where the selected implementation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The `CAIO_IMPL` environment variable.
    Env,
    /// The `default_implementation` file compiled into the crate.
    File,
    /// The built-in order: linux, uring, thread, blocking, by availability.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Env => "environment (CAIO_IMPL)",
            Source::File => "default_implementation file",
            Source::Default => "built-in order",
        })
    }
}

/// The implementation chosen for this process, where from, and every warning met.
///
/// The fields and the accessor methods of the same names say the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Selection {
    /// The implementation chosen.
    pub implementation: Implementation,
    /// Where the choice came from.
    pub source: Source,
    /// Every warning met on the way (also reported: through `log` when the program installed
    /// a logger, else once on standard error).
    pub warnings: Vec<String>,
}

impl Selection {
    /// The implementation chosen.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// Where the choice came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Every warning met on the way.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// The selection for this process, made once, the first time it is needed.
pub fn selection() -> &'static Selection {
    // An atomic pointer, not a `Once`: a child forked while a thread of its parent was
    // making the selection then makes its own, under a lock of its own process, rather
    // than wait forever for a thread it does not have.
    static MADE: AtomicPtr<Selection> = AtomicPtr::new(std::ptr::null_mut());
    static MAKING: PerProcess<Mutex<()>> = PerProcess::new();
    let made = || {
        // SAFETY: a non-null pointer here is a leaked Box, never freed.
        unsafe { MADE.load(Ordering::Acquire).as_ref() }
    };
    if let Some(s) = made() {
        return s;
    }
    let _making = lock(MAKING.get(|| Mutex::new(())));
    if let Some(s) = made() {
        return s;
    }
    let s = select(env::var_os(ENV_VAR), DEFAULT_FILE, |i| i.probe());
    for w in &s.warnings {
        crate::notice::warn(w);
    }
    log::debug!("caio: selected {} from {}", s.implementation, s.source);
    let s: &'static Selection = Box::leak(Box::new(s));
    MADE.store(s as *const Selection as *mut Selection, Ordering::Release);
    s
}

/// The compiled-in text of the `default_implementation` file.
pub fn default_implementation_file() -> &'static str {
    DEFAULT_FILE
}

/// The warning for `python`, which means something else in upstream caio.
fn python_warning(place: &str) -> String {
    format!(
        "{place} python selects the plain blocking fallback here, which runs every operation \
         on the polling thread; upstream caio's python backend is a pool of 8 threads that \
         never blocks the event loop, and its equivalent here is thread"
    )
}

/// At most 64 characters of a value a user set, for a warning.
fn quote(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// The selection rules, with the environment, the file and availability passed in.
pub(crate) fn select(
    env_value: Option<OsString>,
    file: &str,
    probe: impl Fn(Implementation) -> Result<(), String>,
) -> Selection {
    let mut warnings = Vec::new();
    let env_value = env_value.filter(|v| !v.is_empty());
    if let Some(value) = env_value {
        match value.to_str().map(str::parse::<Implementation>) {
            Some(Ok(i)) if value.to_str().map(str::trim) == Some("python") && probe(i).is_ok() => {
                warnings.push(python_warning(&format!("{ENV_VAR}=python:")));
                return Selection {
                    implementation: i,
                    source: Source::Env,
                    warnings,
                };
            }
            Some(Ok(i)) => match probe(i) {
                Ok(()) => {
                    return Selection {
                        implementation: i,
                        source: Source::Env,
                        warnings,
                    }
                }
                Err(reason) => warnings.push(format!(
                    "{ENV_VAR}={i} is unavailable ({reason}); using the built-in order"
                )),
            },
            Some(Err(_)) => warnings.push(format!(
                "{ENV_VAR}={} is not one of {}; using the built-in order",
                quote(&value.to_string_lossy()),
                parse::all_spellings()
            )),
            None => warnings.push(format!(
                "{ENV_VAR}={} is not valid UTF-8; using the built-in order",
                quote(&value.to_string_lossy())
            )),
        }
        return by_availability(Source::Default, warnings, probe);
    }
    for line in parse::default_file_lines(file) {
        let Some(name) = line.name else {
            warnings.push(format!(
                "default_implementation line {}: {:?} names no implementation; skipped",
                line.number, line.text
            ));
            continue;
        };
        let i: Implementation = name.parse().expect("canonical names parse");
        match probe(i) {
            Ok(()) => {
                if line.text == "python" {
                    warnings.push(python_warning(&format!(
                        "default_implementation line {}:",
                        line.number
                    )));
                }
                return Selection {
                    implementation: i,
                    source: Source::File,
                    warnings,
                };
            }
            Err(reason) => warnings.push(format!(
                "default_implementation line {}: {i} is unavailable ({reason}); skipped",
                line.number
            )),
        }
    }
    by_availability(Source::Default, warnings, probe)
}

fn by_availability(
    source: Source,
    mut warnings: Vec<String>,
    probe: impl Fn(Implementation) -> Result<(), String>,
) -> Selection {
    for i in Implementation::ALL {
        match probe(i) {
            Ok(()) => {
                return Selection {
                    implementation: i,
                    source,
                    warnings,
                }
            }
            // Off Linux, kernel AIO is never expected: skipping it is no news.
            Err(reason)
                if cfg!(target_os = "linux")
                    || !matches!(i, Implementation::Linux | Implementation::Uring) =>
            {
                warnings.push(format!("{i} is unavailable ({reason}); trying the next"))
            }
            Err(_) => {}
        }
    }
    // Blocking is always available; this is reached only if a probe lies.
    Selection {
        implementation: Implementation::Blocking,
        source,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_up(_: Implementation) -> Result<(), String> {
        Ok(())
    }

    /// Neither kernel interface: no io_uring, no kernel AIO.
    fn no_linux(i: Implementation) -> Result<(), String> {
        match i {
            Implementation::Linux => Err("io_setup: EAGAIN".into()),
            Implementation::Uring => Err("io_uring_setup: EPERM".into()),
            _ => Ok(()),
        }
    }

    fn env(v: &str) -> Option<OsString> {
        Some(OsString::from(v))
    }

    #[test]
    fn names_parse_exactly() {
        for (s, want) in [
            ("linux", Implementation::Linux),
            (" thread\n", Implementation::Thread),
            ("\tpython ", Implementation::Blocking),
            ("blocking", Implementation::Blocking),
        ] {
            assert_eq!(s.parse::<Implementation>().unwrap(), want, "{s:?}");
        }
        for bad in [
            "",
            " ",
            "Linux",
            "THREAD",
            "threads",
            "py",
            "linux thread",
            "linux\0",
            "#linux",
        ] {
            match bad.parse::<Implementation>() {
                Err(Error::UnknownImplementation(v)) => assert_eq!(v, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for i in Implementation::ALL {
            assert_eq!(i.to_string(), i.as_str());
            assert_eq!(i.as_str().parse::<Implementation>().unwrap(), i);
        }
    }

    #[test]
    fn env_wins_and_file_is_not_read() {
        let s = select(env("thread"), "blocking\n", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Thread, Source::Env)
        );
        assert!(s.warnings.is_empty());
        let s = select(env(" python "), "linux", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Blocking, Source::Env)
        );
    }

    #[test]
    fn bad_or_unavailable_env_warns_and_uses_builtin_order_not_file() {
        let s = select(env("fast"), "blocking", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::ALL[0], Source::Default)
        );
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("\"fast\""), "{:?}", s.warnings);

        let s = select(env("linux"), "blocking", no_linux);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Thread, Source::Default)
        );
        assert!(s.warnings[0].contains("EAGAIN"), "{:?}", s.warnings);
    }

    #[test]
    fn python_selects_blocking_and_says_upstream_means_thread() {
        let s = select(env(" python "), "", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Blocking, Source::Env)
        );
        assert!(s.warnings[0].contains("upstream") && s.warnings[0].contains("thread"));
        let s = select(None, "# packager\npython\n", all_up);
        assert_eq!(s.implementation, Implementation::Blocking);
        assert!(s.warnings[0].contains("line 2"), "{:?}", s.warnings);
        let s = select(env("blocking"), "", all_up);
        assert!(
            s.warnings.is_empty(),
            "blocking by its own name is no surprise"
        );
    }

    #[test]
    fn warnings_quote_at_most_64_characters() {
        assert_eq!(quote("linx"), "\"linx\"");
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.starts_with(&format!("{:?}", "é".repeat(64))), "{q}");
        assert!(q.ends_with("... (100 characters)"), "{q}");
        let s = select(env(&"x".repeat(5000)), "", all_up);
        assert!(s.warnings[0].len() < 200, "{}", s.warnings[0]);
    }

    #[test]
    fn empty_env_is_unset() {
        let s = select(env(""), "thread", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Thread, Source::File)
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_env_warns() {
        use std::os::unix::ffi::OsStringExt;
        let s = select(Some(OsString::from_vec(vec![0xff, b'x'])), "thread", all_up);
        assert_eq!(s.source, Source::Default);
        assert!(s.warnings[0].contains("UTF-8"));
    }

    #[test]
    fn file_first_available_line_wins() {
        let file = "# comment\n\n   \n  # indented comment\nnonsense\n linux \nthread\nblocking\n";
        let s = select(None, file, no_linux);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Thread, Source::File)
        );
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("line 5") && s.warnings[0].contains("nonsense"));
        assert!(s.warnings[1].contains("line 6") && s.warnings[1].contains("EAGAIN"));
        let s = select(None, "python\r\nthread\r\n", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::Blocking, Source::File)
        );
    }

    #[test]
    fn file_without_usable_line_falls_to_default() {
        for file in ["", "# only comments\n", "linux\n", "garbage\n\n"] {
            let s = select(None, file, no_linux);
            assert_eq!(
                (s.implementation, s.source),
                (Implementation::Thread, Source::Default),
                "{file:?}"
            );
        }
        let s = select(None, "", all_up);
        assert_eq!(
            (s.implementation, s.source),
            (Implementation::ALL[0], Source::Default)
        );
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn file_lines_parse() {
        let lines = parse::default_file_lines("#x\n thread \n\nbogus\n#linux\npython");
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.number, l.text.as_str(), l.name))
            .collect();
        assert_eq!(
            got,
            [
                (2, "thread", Some("thread")),
                (4, "bogus", None),
                (6, "python", Some("blocking"))
            ]
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const NAMES: [&str; 5] = ["uring", "linux", "thread", "python", "blocking"];

        fn availability(mask: u8) -> impl Fn(Implementation) -> Result<(), String> {
            move |i| {
                let bit = match i {
                    Implementation::Linux => 1,
                    Implementation::Thread => 2,
                    Implementation::Blocking => 4,
                    Implementation::Uring => 8,
                };
                if mask & bit != 0 {
                    Ok(())
                } else {
                    Err(format!("{i} is off"))
                }
            }
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(NAMES.to_vec()).prop_map(String::from),
                prop::sample::select(NAMES.to_vec()).prop_map(|n| format!("  {n}\t")),
                "#[ -~]{0,12}".prop_map(String::from),
                "[ \t]{0,3}".prop_map(String::from),
                any::<String>(),
            ]
        }

        proptest! {
            #[test]
            fn any_caio_impl_value_parses_iff_it_is_a_name(v in any::<String>()) {
                let known = NAMES.contains(&v.trim());
                prop_assert_eq!(v.parse::<Implementation>().is_ok(), known);
            }

            #[test]
            fn selection_never_panics_and_follows_the_rules(
                env in prop::option::of(prop_oneof![any::<String>(), prop::sample::select(NAMES.to_vec()).prop_map(String::from)]),
                lines in prop::collection::vec(line(), 0..8),
                mask in prop::sample::select((0u8..16).filter(|m| m & 4 != 0).collect::<Vec<_>>()), // blocking is always available
            ) {
                let file = lines.join("\n");
                let s = select(env.clone().map(OsString::from), &file, availability(mask));
                prop_assert!(availability(mask)(s.implementation).is_ok(), "chose an unavailable one");
                let env = env.filter(|e| !e.is_empty());
                match env.as_deref().map(str::parse::<Implementation>) {
                    Some(Ok(i)) if availability(mask)(i).is_ok() => {
                        prop_assert_eq!((s.implementation, s.source), (i, Source::Env));
                    }
                    Some(_) => {
                        prop_assert_eq!(s.source, Source::Default);
                        prop_assert!(!s.warnings.is_empty());
                    }
                    None => {
                        let first = parse::default_file_lines(&file)
                            .into_iter()
                            .filter_map(|l| l.name)
                            .map(|n| n.parse::<Implementation>().unwrap())
                            .find(|&i| availability(mask)(i).is_ok());
                        match first {
                            Some(i) => prop_assert_eq!((s.implementation, s.source), (i, Source::File)),
                            None => prop_assert_eq!(s.source, Source::Default),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shipped_file_parses_cleanly() {
        for line in parse::default_file_lines(DEFAULT_FILE) {
            assert!(
                line.name.is_some(),
                "shipped default_implementation has a bad line: {line:?}"
            );
        }
    }
}
