//! Man pages and shell completions (issue #17): `scripts/docs.sh` over the
//! built binaries writes a page for every binary and subcommand that groff
//! renders without a warning and that documents the flags `--help` lists;
//! every bash completion loads (`complete -p`) and completes; `telemetryctl
//! completions` prints the same file; every binary answers `--version`.

use std::path::Path;
use std::process::Command;
use telemetry_tests::{bin, bin_dir, text};

const BINS: [&str; 5] = [
    "telemetryd",
    "telemetryctl",
    "telemetry-emit",
    "telemetry-report",
    "telemetry-broker",
];

/// grotty's text without its overstrikes (`N\x08N` for bold, `_\x08a`
/// for underline) and with '-' for the U+2010 hyphen it sets.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\x08') {
            chars.next();
            continue;
        }
        out.push(if c == '\u{2010}' { '-' } else { c });
    }
    out
}

fn docs(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/docs.sh");
    let o = Command::new("bash")
        .arg(script)
        .arg(out)
        .arg(bin_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn every_binary_has_a_man_page_that_renders_and_matches_its_help() {
    let dir = tempfile::tempdir().unwrap();
    docs(dir.path());
    let man1 = dir.path().join("man/man1");
    let mut pages: Vec<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for b in BINS {
        assert!(pages.contains(&format!("{b}.1")), "{b}: {pages:?}");
    }
    // The subcommands the main pages refer to have their own pages.
    for sub in [
        "telemetryctl-status.1",
        "telemetryctl-completions.1",
        "telemetryd-install.1",
        "telemetry-report-compact.1",
        "telemetry-report-catalog-sql.1",
    ] {
        assert!(pages.contains(&sub.to_string()), "{sub}: {pages:?}");
    }
    for page in &pages {
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(man1.join(page))
            .output()
            .expect("groff (Debian: groff-base) renders the pages; .ci/run installs it");
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{page}: {}",
            text(&o)
        );
        let rendered = plain(&String::from_utf8_lossy(&o.stdout));
        let name = page.trim_end_matches(".1");
        assert!(
            rendered.contains("NAME") && rendered.contains(name),
            "{page}"
        );
    }
    // A page documents every long flag --help shows.
    for (page, exe, args) in [
        ("telemetryctl.1", "telemetryctl", vec!["--help"]),
        (
            "telemetry-report-compact.1",
            "telemetry-report",
            vec!["compact", "--help"],
        ),
        ("telemetryd.1", "telemetryd", vec!["--help"]),
        ("telemetry-emit.1", "telemetry-emit", vec!["--help"]),
    ] {
        let help = Command::new(bin(exe)).args(&args).output().unwrap();
        let roff = std::fs::read_to_string(man1.join(page)).unwrap();
        let mut flags = 0;
        for word in String::from_utf8_lossy(&help.stdout).split_whitespace() {
            let flag = word.trim_end_matches([',', '.']);
            let Some(name) = flag.strip_prefix("--") else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                continue;
            }
            flags += 1;
            assert!(
                roff.contains(&format!("\\-\\-{}", name.replace('-', "\\-"))),
                "{page} lacks --{name}"
            );
        }
        assert!(flags >= 2, "{page}: {flags} flags in --help");
    }
}

#[test]
fn every_completion_loads_in_bash_and_telemetryctl_prints_its_own() {
    let dir = tempfile::tempdir().unwrap();
    docs(dir.path());
    for b in BINS {
        let file = dir.path().join("completions/bash").join(b);
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p {b}", file.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{b}: {}", text(&o));
        assert!(text(&o).contains(&format!(" {b}")), "{b}: {}", text(&o));
        for (dir_name, name) in [("zsh", format!("_{b}")), ("fish", format!("{b}.fish"))] {
            let f = dir.path().join("completions").join(dir_name).join(name);
            assert!(
                std::fs::metadata(&f).unwrap().len() > 100,
                "{}",
                f.display()
            );
        }
    }
    // It completes: `telemetryctl st<TAB>` offers status and start.
    let file = dir.path().join("completions/bash/telemetryctl");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}'; COMP_WORDS=(telemetryctl st); COMP_CWORD=1; COMP_LINE='telemetryctl st'; COMP_POINT=15; _telemetryctl telemetryctl st telemetryctl; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let offered = text(&o);
    assert!(
        offered.contains("status") && offered.contains("start") && !offered.contains("flush"),
        "{offered}"
    );
    // The public verb prints the packaged file.
    let o = Command::new(bin("telemetryctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, std::fs::read(&file).unwrap());
    let o = Command::new(bin("telemetryctl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("tcsh"), "{}", text(&o));
    // An unknown document: a usage error naming the kinds.
    let o = Command::new(bin("telemetry-emit"))
        .args(["--generate-docs", "troff"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("man, bash") && text(&o).contains("telemetry-emit: error:"),
        "{}",
        text(&o)
    );
    // Man pages into a directory not made yet (a packaging script's
    // staging tree): made, as `install -d` would.
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("stage/usr/share/man/man1");
    let o = Command::new(bin("telemetry-report"))
        .arg("--generate-docs")
        .arg("man")
        .arg(&pages)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(pages.join("telemetry-report.1").is_file(), "{}", text(&o));
}

#[test]
fn every_binary_answers_version() {
    for b in BINS {
        let o = Command::new(bin(b)).arg("--version").output().unwrap();
        assert!(o.status.success(), "{b}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{b} {}", env!("CARGO_PKG_VERSION")),
            "{b}"
        );
    }
}
