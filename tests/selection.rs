//! Start-up selection, observed in child processes with `CAIO_IMPL` set, unset, empty and
//! invalid (the selection is made once per process, so each case needs its own).

mod util;

use caio::Implementation;

const CHILD: &str = "CAIO_SELECTION_TEST_CHILD";

/// Runs in the child only: prints what the process selected and what `Context::new` built.
#[test]
fn child_report() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let s = caio::selection();
    let ctx = caio::Context::new().expect("Context::new never fails on a selected implementation");
    println!(
        "REPORT impl={} source={:?} ctx={} warnings={}",
        s.implementation(),
        s.source(),
        ctx.implementation(),
        s.warnings().join(" | ")
    );
}

struct Report {
    implementation: String,
    source: String,
    ctx: String,
    warnings: String,
}

fn run(env: Option<&str>) -> Report {
    let mut cmd = util::test_command("child_report", &[]);
    cmd.env(CHILD, "1");
    match env {
        Some(v) => cmd.env("CAIO_IMPL", v),
        None => cmd.env_remove("CAIO_IMPL"),
    };
    let out = util::output_within(cmd, std::time::Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("REPORT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let rest = &line[start..];
        let end = if name == "warnings" {
            rest.len()
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        rest[..end].to_string()
    };
    Report {
        implementation: field("impl"),
        source: field("source"),
        ctx: field("ctx"),
        warnings: field("warnings"),
    }
}

fn first_available() -> &'static str {
    Implementation::ALL
        .into_iter()
        .find(|i| i.is_available())
        .unwrap()
        .as_str()
}

/// What the shipped `default_implementation` file chooses, if anything.
fn file_choice() -> Option<Implementation> {
    caio::default_implementation_file()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse::<Implementation>().ok())
        .find(|i| i.is_available())
}

#[test]
fn unset_uses_the_file_or_the_builtin_order() {
    let r = run(None);
    match file_choice() {
        Some(i) => assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            (i.as_str(), "File")
        ),
        None => assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            (first_available(), "Default")
        ),
    }
    assert_eq!(r.ctx, r.implementation);
}

#[test]
fn empty_is_the_same_as_unset() {
    let (a, b) = (run(Some("")), run(None));
    assert_eq!((a.implementation, a.source), (b.implementation, b.source));
}

#[test]
fn each_name_selects_its_implementation_from_env() {
    for (value, want) in [
        ("thread", "thread"),
        ("blocking", "blocking"),
        ("python", "blocking"),
        ("  thread\t", "thread"),
    ] {
        let r = run(Some(value));
        assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            (want, "Env"),
            "CAIO_IMPL={value:?}"
        );
        assert_eq!(r.ctx, want, "Context::new follows the selection");
        if value == "python" {
            // Upstream's python is a thread pool: the warning says so and names thread.
            assert!(
                r.warnings.contains("upstream") && r.warnings.contains("equivalent here is thread"),
                "{}",
                r.warnings
            );
        } else {
            assert!(r.warnings.is_empty(), "{value:?}: {}", r.warnings);
        }
    }
}

#[test]
fn linux_is_chosen_when_available_else_falls_back_with_a_warning() {
    let r = run(Some("linux"));
    if Implementation::Linux.is_available() {
        assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            ("linux", "Env")
        );
    } else {
        assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            (first_available(), "Default")
        );
        assert!(
            r.warnings.contains("CAIO_IMPL=linux is unavailable"),
            "{}",
            r.warnings
        );
    }
}

#[test]
fn an_invalid_value_warns_and_uses_the_builtin_order() {
    for value in ["turbo", "Linux", "threads"] {
        let r = run(Some(value));
        assert_eq!(
            (r.implementation.as_str(), r.source.as_str()),
            (first_available(), "Default"),
            "{value}"
        );
        assert!(
            r.warnings.contains(&format!("{value:?}")),
            "{value}: {}",
            r.warnings
        );
        assert_eq!(r.ctx, first_available());
    }
}
