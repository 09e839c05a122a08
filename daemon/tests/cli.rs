//! The `telemetryd` binary's command line. (Also makes `cargo test` build
//! the binary for the end-to-end tests in `tests/`.)

use std::process::Command;

fn telemetryd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telemetryd"))
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = telemetryd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "TELEMETRY_CONFIG",
        "TELEMETRY_SOCKET",
        "TELEMETRY_STATE_DIR",
        "TELEMETRY_S3_BUCKET",
        "TELEMETRY_S3_PREFIX",
        "TELEMETRY_S3_ENDPOINT",
        "TELEMETRY_S3_REGION",
        "TELEMETRY_S3_PATH_STYLE",
        "TELEMETRY_OUTBOX_DIR",
        "TELEMETRY_UPLOAD_INTERVAL",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
}

#[test]
fn bad_env_value_names_the_variable_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = telemetryd()
        .env("TELEMETRY_CONFIG", "/dev/null")
        .env("TELEMETRY_SOCKET", dir.path().join("s.sock"))
        .env("TELEMETRY_STATE_DIR", dir.path())
        .env("TELEMETRY_UPLOAD_INTERVAL", "whenever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TELEMETRY_UPLOAD_INTERVAL") && err.contains("upload_interval"),
        "{err}"
    );
    assert!(
        !dir.path().join("s.sock").exists(),
        "nothing bound on a config error"
    );
}
