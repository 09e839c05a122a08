//! `telemetry-emit`: the shim a CLI execs to record one event.
//!
//! The host CLI comes first: the whole run has a hard time budget
//! (default 100 ms), the shim only talks to a local Unix socket, and
//! without `--strict` it exits 0 and prints nothing whatever happens (bad
//! arguments included: a mistake in the calling CLI's telemetry must not
//! show in its output). With `--strict` the exit code says what happened
//! to the event (see [`AFTER_HELP`]).
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
//! writing anything or starting anything. (The arguments are checked
//! before that, in memory only, so `--strict` reports a mistake in them
//! whatever the consent.)

use clap::Parser;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use telemetry_client::consent::{self, ConsentPaths};
use telemetry_client::{event, parse_kv, Client, ClientError, ErrorCode, Mode, WireEvent};

/// Exit code with --strict when the event was not acknowledged.
const EXIT_FAILED: u8 = 1;
/// Exit code with --strict for bad arguments or values.
const EXIT_USAGE: u8 = 2;
/// Exit code with --strict when the daemon refused the event for good.
const EXIT_REFUSED: u8 = 3;
/// Exit code with --strict when consent is off: nothing was recorded.
const EXIT_CONSENT_OFF: u8 = 4;

/// `--help`'s closing text: value typing, an example and the exit codes
/// (the README has the same table).
const AFTER_HELP: &str = "\
Values: true/false become booleans, whole numbers integers, anything else text;
KEY:=VALUE forces text.
Example: telemetry-emit --product cfdev --build 0.9.1 app_created buildpack=go

Exit codes: without --strict always 0, and nothing is printed. With --strict:
  0  acknowledged: the daemon committed the event to disk (also in local mode)
  1  not acknowledged: the daemon is not running, did not answer within the
     time budget, or could not take it now (busy, shutting down, storage
     error); the message says where the event was spooled for later delivery
  2  bad arguments or values (e.g. a KEY=VALUE without =, or
     TELEMETRY_EMIT_TIMEOUT_MS=banana); nothing was sent
  3  refused by the daemon: the event, a key or a value is not in the
     product's catalogue, or the event is invalid; not spooled
  4  not recorded because consent is off; the message names the layer that
     decided (system file, environment variable, user file or default)";

/// Budget when neither `--timeout-ms` nor `TELEMETRY_EMIT_TIMEOUT_MS` says.
const DEFAULT_TIMEOUT_MS: u64 = 100;
/// The variable behind `--timeout-ms` (read here, not by clap, so a bad
/// value is reported as the variable and falls back to the default).
const TIMEOUT_VAR: &str = "TELEMETRY_EMIT_TIMEOUT_MS";

#[derive(Debug, Parser)]
#[command(
    name = "telemetry-emit",
    version,
    about = "Record one telemetry event with the local telemetryd. Never slows or fails the calling CLI: exits 0 and prints nothing unless --strict.",
    after_help = AFTER_HELP
)]
struct Args {
    /// Product the event belongs to, e.g. cfdev. Required: this flag or
    /// TELEMETRY_PRODUCT.
    #[arg(long, env = "TELEMETRY_PRODUCT", value_name = "P")]
    product: String,
    /// Version of the calling CLI.
    #[arg(
        long,
        env = "TELEMETRY_BUILD",
        default_value = "unknown",
        value_name = "V"
    )]
    build: String,
    /// Exit non-zero with a one-line message unless the daemon acknowledged
    /// the event; the exit code says why (see below).
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
    /// Hard limit for the whole run, in milliseconds [env:
    /// TELEMETRY_EMIT_TIMEOUT_MS] [default: 100]. A bad value falls back to
    /// 100 (with --strict: exit 2).
    // A string, parsed by `timeout`: clap would report a bad variable as
    // the flag and print its usage into the host CLI's output.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<OsString>,
    /// Event name from the product's catalogue, e.g. app_created.
    event: String,
    /// Event data as KEY=VALUE pairs.
    data: Vec<String>,
}

fn main() -> ExitCode {
    if let Some(code) = telemetry_clidoc::generate_if_asked(
        std::env::args_os(),
        <Args as clap::CommandFactory>::command,
    ) {
        return ExitCode::from(code);
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => return bad_command_line(&e),
    };
    let strict = args.strict;
    // Everything the shim can check in memory first: a strict caller hears
    // of its mistakes whatever the consent, and nothing has been sent.
    let (budget, bad_timeout) = timeout(&args);
    let built = build_event(&args);
    if strict {
        if let Some(msg) = bad_timeout.or_else(|| built.as_ref().err().cloned()) {
            eprintln!("telemetry-emit: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    // Without --strict a bad timeout has become the default and costs
    // nothing; an event that cannot be built is dropped quietly.
    let Ok(ev) = built else {
        return ExitCode::SUCCESS;
    };
    // Consent first, from the files alone: when it is off, nothing else
    // happens at all (no socket, no thread, no file).
    let paths = ConsentPaths::from_env();
    let (mode, layer) = consent::resolve(&args.product, &paths);
    if mode == Mode::Off {
        if strict {
            eprintln!(
                "telemetry-emit: nothing recorded: telemetry for {} is off, decided by {}{}",
                args.product,
                consent::describe(layer, &paths),
                consent::how_to_turn_on(&args.product, layer)
            );
            return ExitCode::from(EXIT_CONSENT_OFF);
        }
        return ExitCode::SUCCESS;
    }
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
    match emit(&args, ev, budget) {
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

/// The command line did not parse. `--help` and `--version` print as
/// asked; anything else is silent (exit 0) unless `--strict` was given,
/// then one line (no usage text) and exit 2.
fn bad_command_line(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if !telemetry_client::cli::flag_given("--strict") {
        return ExitCode::SUCCESS;
    }
    eprintln!("telemetry-emit: {}", one_line(e));
    ExitCode::from(EXIT_USAGE)
}

/// clap's message without its usage text, on one line, with an example.
fn one_line(e: &clap::Error) -> String {
    let text = telemetry_client::cli::error_line(e);
    let hint = if text.contains("--product") {
        " (or set TELEMETRY_PRODUCT)"
    } else {
        ""
    };
    format!(
        "{text}{hint}; e.g. telemetry-emit --product cfdev --build 0.9.1 --strict app_created buildpack=go"
    )
}

/// The time budget: `--timeout-ms`, else `TELEMETRY_EMIT_TIMEOUT_MS`, else
/// 100 ms. A value that is not a whole number of milliseconds is named in
/// the second result and the default is used instead, so a bad setting
/// never costs the event.
fn timeout(args: &Args) -> (Duration, Option<String>) {
    let (value, name) = match &args.timeout_ms {
        Some(v) => (v.clone(), None),
        None => match std::env::var_os(TIMEOUT_VAR).filter(|v| !v.is_empty()) {
            Some(v) => (v, Some(TIMEOUT_VAR)),
            None => return (Duration::from_millis(DEFAULT_TIMEOUT_MS), None),
        },
    };
    match value.to_str().and_then(|s| s.trim().parse::<u64>().ok()) {
        // Zero would end the run before it starts.
        Some(ms) => (Duration::from_millis(ms.max(1)), None),
        None => {
            let value = value.to_string_lossy();
            let what = match name {
                Some(var) => format!("{var}={value}"),
                None => format!("invalid value '{value}' for --timeout-ms"),
            };
            let msg = format!(
                "{what}: expected a whole number of milliseconds, e.g. {DEFAULT_TIMEOUT_MS}"
            );
            (Duration::from_millis(DEFAULT_TIMEOUT_MS), Some(msg))
        }
    }
}

/// The event from the arguments, checked as the daemon will check its
/// shape (the catalogue is the daemon's).
fn build_event(args: &Args) -> Result<WireEvent, String> {
    let mut data = BTreeMap::new();
    for kv in &args.data {
        let (k, v) = parse_kv(kv)?;
        data.insert(k, v);
    }
    let ev = event(&args.product, &args.event, &args.build, data);
    telemetry_proto_check(&ev)?;
    Ok(ev)
}

fn emit(args: &Args, ev: WireEvent, budget: Duration) -> Result<(), (u8, String)> {
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
    // Refused for good (consent off, invalid, not catalogued, not
    // allowed): spooling would only be refused again. Anything else (not
    // running, busy, shutting down, a storage error, no answer in time, a
    // code this shim does not know, an older daemon that does not speak
    // this protocol: a newer one takes the spool in) goes to the spool; if
    // the daemon did store it after all, the event id keeps it single.
    if telemetry_client::refused_for_good(&failure) {
        return Err(match &failure {
            ClientError::Refused {
                code: ErrorCode::ConsentOff,
                ..
            } => (EXIT_CONSENT_OFF, failure.to_string()),
            _ => (EXIT_REFUSED, format!("{failure}; not recorded")),
        });
    }
    let spool = telemetry_client::spool::path_for(&path);
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
    // After the spool, so the event is safe whatever happens to the start;
    // still inside the budget's timer (a start takes about a millisecond).
    let started = if telemetry_client::autostart::nothing_serves(&failure) {
        use telemetry_client::autostart::{start, Started};
        match start(&path) {
            Ok(Started::Spawned(daemon)) => format!("; started {}", daemon.display()),
            Ok(Started::Recently) => "; telemetryd was started moments ago".into(),
            Ok(Started::Disabled) => String::new(),
            Ok(Started::NotFound) => {
                "; no telemetryd found to start (beside this shim or on PATH; set TELEMETRY_DAEMON)"
                    .into()
            }
            Ok(Started::Service) => {
                "; the machine-wide service serves it: sc.exe start telemetryd".into()
            }
            Err(e) => format!("; {e}"),
        }
    } else {
        String::new()
    };
    Err((
        EXIT_FAILED,
        format!("{failure}; not acknowledged: {what}{started}"),
    ))
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
#[cfg(unix)]
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

/// The hard time budget on Windows, which has no signals: a thread that
/// sleeps the budget and then ends the process, unless the outcome was
/// settled first. (The same exits as on Unix: 0, or 1 with a message when
/// strict.)
#[cfg(not(unix))]
mod deadline {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    static SETTLED: AtomicBool = AtomicBool::new(false);

    /// End the process after `budget` unless [`disarm`] is called first.
    pub fn arm(budget: Duration, strict: bool) -> bool {
        std::thread::Builder::new()
            .name("deadline".into())
            .spawn(move || {
                std::thread::sleep(budget);
                if SETTLED.load(Ordering::SeqCst) {
                    return;
                }
                if strict {
                    let _ = std::io::stderr()
                        .write_all(b"telemetry-emit: no acknowledgement within the time budget\n");
                    std::process::exit(super::EXIT_FAILED.into());
                }
                std::process::exit(0);
            })
            .is_ok()
    }

    /// The outcome is settled: the thread will not end the process.
    pub fn disarm() {
        SETTLED.store(true, Ordering::SeqCst);
    }
}
