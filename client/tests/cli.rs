//! The client binaries' command lines. (Also makes `cargo test` build the
//! binaries for the end-to-end tests in `tests/`.)

use std::process::Command;

#[test]
fn emit_help_and_version_exit_zero() {
    for flag in ["--help", "--version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_telemetry-emit"))
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn emit_without_product_exits_zero_unless_strict() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_telemetry-emit"))
            .env_remove("TELEMETRY_PRODUCT")
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(run(&["stop"]).status.code(), Some(0));
    assert_eq!(run(&["--strict", "stop"]).status.code(), Some(2));
}

#[test]
fn telemetryctl_help_names_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_telemetryctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("status") && help.contains("flush") && help.contains("Exit codes"),
        "{help}"
    );
}
