//! `telemetry-emit`: the shim a CLI execs to record one event.
//!
//! The host CLI comes first: the whole run has a hard time budget
//! (default 100 ms), the shim only talks to a local Unix socket, and it
//! exits 0 whatever happens unless `--strict` is given. With `--strict` it
//! exits 0 only once the daemon has acknowledged the event as committed
//! (or when consent is off: declining to record is not a failure).
//!
//! Consent is checked first, from the consent files and the environment;
//! when it is `off` the shim returns at once without connecting anywhere,
//! writing anything or starting anything.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use telemetry_client::{event, parse_kv, Client};

/// Exit code with --strict when the event was not acknowledged.
const EXIT_FAILED: u8 = 1;
/// Exit code with --strict for bad arguments.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "telemetry-emit",
    version,
    about = "Record one telemetry event with the local telemetryd. Never slows or fails the calling CLI: exits 0 unless --strict.",
    after_help = "Values: true/false become booleans, whole numbers integers, anything else text; KEY:=VALUE forces text.\nExample: telemetry-emit --product cfdev --build 0.9.1 app_created buildpack=go"
)]
struct Args {
    /// Product the event belongs to.
    #[arg(long, env = "TELEMETRY_PRODUCT")]
    product: String,
    /// Version of the calling CLI.
    #[arg(long, env = "TELEMETRY_BUILD", default_value = "unknown")]
    build: String,
    /// Exit non-zero (with a message) unless the daemon acknowledged the event.
    #[arg(long)]
    strict: bool,
    /// Daemon socket (default: $XDG_RUNTIME_DIR/telemetry/telemetryd.sock).
    #[arg(long, env = "TELEMETRY_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Hard limit for the whole run, in milliseconds.
    #[arg(
        long,
        env = "TELEMETRY_EMIT_TIMEOUT_MS",
        default_value_t = 100,
        value_name = "MS"
    )]
    timeout_ms: u64,
    /// Event name from the product's catalogue, e.g. app_created.
    event: String,
    /// Event data as KEY=VALUE pairs.
    data: Vec<String>,
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    let strict_requested = raw.iter().skip(1).any(|a| a == "--strict");
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            let info = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = e.print();
            return if info || !strict_requested {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_USAGE)
            };
        }
    };
    // Consent first, from the files alone: when it is off, nothing else
    // happens at all (no socket, no thread, no file).
    let paths = telemetry_client::consent::ConsentPaths::from_env();
    let (mode, layer) = telemetry_client::consent::resolve(&args.product, &paths);
    if mode == telemetry_client::Mode::Off {
        if args.strict {
            eprintln!(
                "telemetry-emit: telemetry for {:?} is off (decided by the {}); nothing recorded",
                args.product,
                layer.as_str()
            );
        }
        return ExitCode::SUCCESS;
    }
    let budget = Duration::from_millis(args.timeout_ms.max(1));
    let strict = args.strict;
    // The budget is hard: whatever the shim is blocked on (a full socket
    // backlog, a stuck daemon), this thread ends the process on time.
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        if strict {
            eprintln!("telemetry-emit: no acknowledgement within {budget:?}");
            std::process::exit(EXIT_FAILED.into());
        }
        std::process::exit(0);
    });
    match emit(&args, budget) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            if strict {
                eprintln!("telemetry-emit: {msg}");
                ExitCode::from(code)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn emit(args: &Args, budget: Duration) -> Result<(), (u8, String)> {
    let mut data = BTreeMap::new();
    for kv in &args.data {
        let (k, v) = parse_kv(kv).map_err(|e| (EXIT_USAGE, e))?;
        data.insert(k, v);
    }
    let ev = event(&args.product, &args.event, &args.build, data);
    telemetry_proto_check(&ev).map_err(|e| (EXIT_USAGE, e))?;
    let path = args
        .socket
        .clone()
        .unwrap_or_else(telemetry_client::default_socket_path);
    // Most of the budget for the daemon, the rest kept for the spool. The
    // socket work runs on its own thread, so even a connect that blocks (a
    // full listen backlog) cannot eat the spool's share.
    let socket_budget = budget.mul_f64(0.6);
    let (tx, rx) = std::sync::mpsc::channel();
    let sent = ev.clone();
    std::thread::spawn(move || {
        let r = Client::connect(&path).and_then(|mut c| c.emit(vec![sent], socket_budget));
        let _ = tx.send(r);
    });
    let failure = match rx.recv_timeout(socket_budget) {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => telemetry_client::ClientError::TimedOut {
            path: args
                .socket
                .clone()
                .unwrap_or_else(telemetry_client::default_socket_path),
            after: socket_budget,
        },
    };
    use telemetry_client::{ClientError, ErrorCode};
    // Refused for good (invalid, not catalogued, consent off, not allowed):
    // spooling would only be refused again. Anything else (not running,
    // busy, shutting down, no answer in time) goes to the spool; if the
    // daemon did store it after all, the event id keeps it single.
    if let ClientError::Refused {
        code:
            ErrorCode::Invalid
            | ErrorCode::NotInCatalogue
            | ErrorCode::ConsentOff
            | ErrorCode::PermissionDenied
            | ErrorCode::Malformed
            | ErrorCode::FrameTooLarge
            | ErrorCode::UnsupportedVersion,
        ..
    } = &failure
    {
        return Err((EXIT_FAILED, failure.to_string()));
    }
    let spool = telemetry_client::spool::default_path();
    let what = match telemetry_client::spool::append(&spool, &ev) {
        Ok(telemetry_client::spool::Spooled::Written) => {
            format!(
                "spooled to {} for delivery when telemetryd runs",
                spool.display()
            )
        }
        Ok(telemetry_client::spool::Spooled::Full) => {
            format!(
                "the spool {} is full; the event was dropped",
                spool.display()
            )
        }
        Err(se) => format!("could not spool it to {}: {se}", spool.display()),
    };
    Err((EXIT_FAILED, format!("{failure}; not acknowledged: {what}")))
}

/// Check the event locally first, so a mistake in the calling CLI is
/// reported precisely with --strict (the daemon checks again).
fn telemetry_proto_check(ev: &telemetry_client::WireEvent) -> Result<(), String> {
    let limits = telemetry_proto::Limits::default();
    telemetry_proto::validate_event(ev, &limits).map_err(|e| e.to_string())
}
