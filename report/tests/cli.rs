//! The `telemetry-report` command line. (Also makes `cargo test --workspace`
//! build the binary that the end-to-end tests in `tests/tests/report.rs` run.)

use std::process::Command;

fn report() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telemetry-report"))
}

#[test]
fn help_names_the_source_the_period_and_k() {
    let out = report().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--source",
        "--quarter",
        "--from",
        "--to",
        "--out",
        "--k",
        "--preview",
        "--allow-partial",
        "retention",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    // Issue #12: the minimum k, and why, where k is explained.
    assert!(
        help.contains("At least 2: with 1, a published number could describe a single machine"),
        "{help}"
    );
}

#[test]
fn k_1_is_refused_pointing_to_preview_and_preview_does_not_take_k() {
    let out = report()
        .args([
            "--source",
            "/nonexistent",
            "--quarter",
            "2026Q4",
            "--k",
            "1",
            "--out",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at least 2") && err.contains("--preview"),
        "{err}"
    );
    let out = report()
        .args([
            "--source",
            "/nonexistent",
            "--quarter",
            "2026Q4",
            "--preview",
            "--k",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--preview") && err.contains("--k"), "{err}");
}

#[test]
fn a_bad_quarter_is_refused_naming_the_value_and_the_form() {
    let out = report()
        .args(["--source", "/nonexistent", "--quarter", "2026Q9", "--out"])
        .arg(std::env::temp_dir().join("telemetry-report-cli-test"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2026Q9") && err.contains("YYYYQ1"), "{err}");
}
