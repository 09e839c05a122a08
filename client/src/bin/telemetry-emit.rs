//! `telemetry-emit`: the shim a CLI execs to record one event.
//!
//! The host CLI comes first: the whole run has a hard time budget
//! (default 100 ms), the shim only talks to a local Unix socket, and it
//! exits 0 whatever happens unless `--strict` is given. With `--strict` it
//! exits 0 only once the daemon has acknowledged the event as committed
//! (or when consent is off: declining to record is not a failure).
//!
//! With `--no-wait` (or `TELEMETRY_EMIT_NO_WAIT=1`) the shim hands the
//! event over and exits without waiting for the commit: faster by the
//! commit's cost, but the event is never acknowledged, and if the daemon
//! does not store it (killed or power lost before its next commit, stopped
//! with the event unread, at its connection limit, a failed commit) it is
//! gone, where a waiting shim would have spooled it. `--strict` always
//! waits.
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
    /// Hand the event over without waiting for the daemon to commit it:
    /// saves the commit's cost, but an event the daemon then fails to store
    /// is lost instead of spooled. Ignored with --strict, which must wait.
    /// In the variable, an empty value, 0, false, no or off mean wait.
    #[arg(
        long,
        env = "TELEMETRY_EMIT_NO_WAIT",
        value_parser = clap::builder::FalseyValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    no_wait: bool,
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
    // The budget is hard: whatever the shim is blocked on (a stuck daemon,
    // a locked spool), the timer ends the process on time. Should the OS
    // refuse the timer, a watchdog thread does the same.
    if !deadline::arm(budget, strict) {
        std::thread::spawn(move || {
            std::thread::sleep(budget);
            if strict {
                eprintln!("telemetry-emit: no acknowledgement within {budget:?}");
                std::process::exit(EXIT_FAILED.into());
            }
            std::process::exit(0);
        });
    }
    match emit(&args, budget) {
        Ok(()) => {
            // Acknowledged: the timer must not turn that into a failure.
            deadline::disarm();
            ExitCode::SUCCESS
        }
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
    // Most of the budget for the daemon, the rest kept for the spool: the
    // connect never waits (a full listen backlog fails at once) and the
    // exchange is bounded by socket timeouts, all on this one thread.
    let socket_budget = budget.mul_f64(0.6);
    let wait = args.strict || !args.no_wait;
    let sent = Client::connect_now(&path).and_then(|mut c| {
        if wait {
            c.emit(vec![ev.clone()], socket_budget).map(drop)
        } else {
            // Written whole to the daemon's socket; its reply is not read.
            c.emit_no_ack(vec![ev.clone()], socket_budget)
        }
    });
    let failure = match sent {
        Ok(()) => return Ok(()),
        Err(e) => e,
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

/// The hard time budget as a real-time interval timer. Starting a watchdog
/// thread on every run costs more than the rest of the shim's own work;
/// a timer costs two system calls, and its signal ends the process
/// wherever it is blocked.
mod deadline {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    static STRICT: AtomicBool = AtomicBool::new(false);
    const MESSAGE: &[u8] = b"telemetry-emit: no acknowledgement within the time budget\n";

    extern "C" fn expired(_: libc::c_int) {
        // Only async-signal-safe calls in a signal handler: write and _exit.
        // SAFETY: MESSAGE is a valid static buffer; _exit never returns.
        unsafe {
            if STRICT.load(Ordering::Relaxed) {
                libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
                libc::_exit(super::EXIT_FAILED.into());
            }
            libc::_exit(0);
        }
    }

    /// End the process after `budget` (exit 0, or 1 with a message when
    /// `strict`). False when the OS refused the handler or the timer.
    pub fn arm(budget: Duration, strict: bool) -> bool {
        STRICT.store(strict, Ordering::Relaxed);
        // SAFETY: plain FFI on zero-initialised C structs; the handler only
        // makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = expired as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) != 0 {
                return false;
            }
            // The blocked-signal mask survives exec: a host that runs us
            // with SIGALRM blocked would leave the timer pending forever.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            if libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) != 0 {
                return false;
            }
            let timer = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: budget.as_secs() as libc::time_t,
                    tv_usec: budget.subsec_micros() as libc::suseconds_t,
                },
            };
            libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) == 0
        }
    }

    /// Stop the timer (the outcome is settled).
    pub fn disarm() {
        // SAFETY: setitimer with a zeroed value on a local struct.
        unsafe {
            let off: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut());
        }
    }
}
