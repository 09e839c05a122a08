//! The `telemetry-broker` command line. (Also makes `cargo test --workspace`
//! build the binary that the end-to-end tests in `tests/tests/broker.rs` and
//! `tests/tests/shipping.rs` run.)

use std::process::Command;

fn broker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telemetry-broker"))
}

#[test]
fn help_names_every_setting_with_its_variable() {
    let out = broker().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, var) in [
        ("--listen", "TELEMETRY_BROKER_LISTEN"),
        ("--manifests", "TELEMETRY_BROKER_MANIFESTS"),
        ("--s3-bucket", "TELEMETRY_S3_BUCKET"),
        ("--url-lifetime", "TELEMETRY_BROKER_URL_LIFETIME"),
        ("--day-window", "TELEMETRY_BROKER_DAY_WINDOW"),
        ("--retired", "TELEMETRY_BROKER_RETIRED"),
    ] {
        assert!(
            help.contains(flag) && help.contains(var),
            "--help lacks {flag} / {var}:\n{help}"
        );
    }
}

#[test]
fn a_bad_flag_is_a_usage_error_naming_it() {
    let out = broker().arg("--lisen").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lisen"));
}
