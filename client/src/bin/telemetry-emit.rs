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
//!
//! Start-up is most of what the shim costs beyond the daemon's commit
//! (issue #18), so on Linux with glibc the shim skips what a Rust `main`
//! sets up that it does not use (see `rt`), and an ordinary command line
//! is read without building clap's parser (see [`quick_args`]); `--help`,
//! mistakes and anything unusual still go to clap. `build.rs` links it
//! statically where it can.

// Our own C `main` on Linux with glibc (see `rt`), where the standard
// library reads the arguments without Rust's `main`; the test harness
// brings its own.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]

use clap::Parser;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use telemetry_client::consent::{self, ConsentPaths};
use telemetry_client::{parse_kv, Client, ClientError, ErrorCode, Mode, WireEvent};

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
     (or that the spool was full and the event dropped)
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

#[derive(Debug, PartialEq, Parser)]
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
    /// Daemon socket (default: $XDG_RUNTIME_DIR/telemetry/telemetryd.sock; Windows: the named pipe \\.\pipe\telemetryd-%USERNAME%).
    #[arg(long, env = "TELEMETRY_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Hard limit for the whole run, in milliseconds [env:
    /// TELEMETRY_EMIT_TIMEOUT_MS] [default: 100]. A bad value falls back to
    /// 100 (with --strict: exit 2).
    // A string, parsed by `timeout`: clap would report a bad variable as
    // the flag and print its usage into the host CLI's output.
    // A negative number (`-1`) is a bad value, not a flag: taken as a flag
    // it failed the whole command line and lost the event. (Not any word
    // that starts with `-`: `--timeout-ms --strict` must not swallow
    // `--strict`.)
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    timeout_ms: Option<OsString>,
    /// Event name from the product's catalogue, e.g. app_created.
    event: String,
    /// Event data as KEY=VALUE pairs, each key once.
    data: Vec<String>,
}

/// One line on stderr, for `--strict`. A closed or broken stderr is
/// ignored: `eprintln!` would panic on it (SIGPIPE is ignored here), and
/// exit 101, a code `--help` does not name.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The shim's entry point on Linux with glibc: [`rt::start`] instead of
/// Rust's runtime set-up, then [`run`]. (`std::env::args_os` works
/// without Rust's `main` there: glibc hands the arguments to the standard
/// library's initialiser.)
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    rt::start(run)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(test))))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(run())
}

/// The whole run; returns the exit code.
fn run() -> u8 {
    // An empty TELEMETRY_* variable counts as unset (clap would take it as
    // an empty value and the event would be refused).
    telemetry_platform::proc::forget_empty_vars("TELEMETRY_");
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = telemetry_clidoc::generate_if_asked(
        argv.iter().cloned(),
        <Args as clap::CommandFactory>::command,
    ) {
        return code;
    }
    let parsed = match quick_args(&argv, |k| std::env::var_os(k)) {
        Some(a) => Ok(a),
        None => Args::try_parse_from(&argv),
    };
    let args = match parsed {
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
            say!("telemetry-emit: {msg}");
            return EXIT_USAGE;
        }
    }
    // Without --strict a bad timeout has become the default and costs
    // nothing; an event that cannot be built is dropped quietly.
    let Ok(ev) = built else {
        return 0;
    };
    // The budget is hard: whatever the shim is blocked on (a consent file
    // on a hung network mount, a stuck daemon, a locked spool), the timer
    // ends the process on time. Should the OS refuse the timer, a watchdog
    // thread does the same. Armed before anything touches a file.
    let armed = std::time::Instant::now();
    if !deadline::arm(budget, strict) {
        std::thread::spawn(move || {
            std::thread::sleep(budget);
            if strict {
                use std::io::Write;
                let _ = std::io::stderr().write_all(BUDGET_ENDED);
                std::process::exit(EXIT_FAILED.into());
            }
            std::process::exit(0);
        });
    }
    // Consent first, from the files alone: when it is off, nothing else
    // happens at all (no socket, no file written, no process).
    let paths = ConsentPaths::from_env();
    let (mode, layer) = consent::resolve(&args.product, &paths);
    if mode == Mode::Off {
        if strict {
            say!(
                "telemetry-emit: nothing recorded: telemetry for {} is off, decided by {}{}",
                args.product,
                consent::describe(&args.product, layer, &paths),
                consent::how_to_turn_on(&args.product, layer)
            );
            return EXIT_CONSENT_OFF;
        }
        return 0;
    }
    // What is left of the budget once the consent files are read (slow on
    // a cold or network home): the spool must still fit before the timer.
    match emit(&args, ev, budget.saturating_sub(armed.elapsed())) {
        Ok(()) => {
            // Acknowledged: the timer must not turn that into a failure.
            deadline::disarm();
            0
        }
        Err((code, msg)) => {
            if strict {
                say!("telemetry-emit: {msg}");
                code
            } else {
                0
            }
        }
    }
}

/// The command line in its usual form, read without clap: building clap's
/// parser costs more than the rest of the shim's own work. Options first
/// (`--strict`, `--no-wait`, `--product P`, `--build V`, `--socket PATH`,
/// `--timeout-ms MS`, each at most once, a value after a space or `=`),
/// then the event and its `KEY=VALUE` data, and the variables clap would
/// read (`env` looks one up). `None` for anything else (`--help`,
/// `--version`, `--`, an unknown or repeated option, an option after the
/// event, a missing event or product, an empty value, a value that starts
/// with `-`, text that is not UTF-8): clap reads that command line and
/// says what it makes of it. Where this gives an answer it is clap's (see
/// the test `quick_args_agree_with_clap`).
fn quick_args(argv: &[OsString], env: impl Fn(&str) -> Option<OsString>) -> Option<Args> {
    // A value as clap would take it, or None for one left to clap.
    fn plain(v: &str) -> Option<String> {
        (!v.is_empty() && !v.starts_with('-')).then(|| v.to_string())
    }
    fn once(slot: &mut Option<String>, v: Option<String>) -> Option<()> {
        match (slot.is_some(), v) {
            (false, Some(v)) => {
                *slot = Some(v);
                Some(())
            }
            _ => None,
        }
    }
    let mut words = argv.iter().skip(1).map(|a| a.to_str());
    let (mut strict, mut no_wait) = (false, false);
    let (mut product, mut build, mut socket, mut timeout_ms) = (None, None, None, None);
    let event = loop {
        let word = words.next()??;
        let Some(option) = word.strip_prefix("--") else {
            break plain(word)?;
        };
        let (name, inline) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        let slot = match name {
            "strict" | "no-wait" if inline.is_none() => {
                let flag = if name == "strict" {
                    &mut strict
                } else {
                    &mut no_wait
                };
                if std::mem::replace(flag, true) {
                    return None;
                }
                continue;
            }
            "product" => &mut product,
            "build" => &mut build,
            "socket" => &mut socket,
            "timeout-ms" => &mut timeout_ms,
            _ => return None,
        };
        let value = match inline {
            Some(v) => v,
            None => words.next()??,
        };
        once(slot, plain(value))?;
    };
    let mut data = Vec::new();
    for word in words {
        data.push(plain(word?)?);
    }
    // The variables, where clap reads them: only for an option not given.
    let var = |name: &str| -> Option<Option<String>> {
        match env(name) {
            None => Some(None),
            Some(v) => Some(Some(plain(v.to_str()?)?)),
        }
    };
    let product = match product {
        Some(p) => p,
        None => var("TELEMETRY_PRODUCT")??,
    };
    let build = match build {
        Some(b) => b,
        None => var("TELEMETRY_BUILD")?.unwrap_or_else(|| "unknown".to_string()),
    };
    let socket = match socket {
        Some(s) => Some(PathBuf::from(s)),
        None => match env("TELEMETRY_SOCKET") {
            Some(v) if v.is_empty() => return None,
            v => v.map(PathBuf::from),
        },
    };
    if !no_wait {
        // clap's FalseyValueParser.
        if let Some(v) = env("TELEMETRY_EMIT_NO_WAIT") {
            let v = v.to_str()?.to_lowercase();
            no_wait = !(v.is_empty() || ["n", "no", "f", "false", "off", "0"].contains(&&*v));
        }
    }
    Some(Args {
        product,
        build,
        strict,
        no_wait,
        socket,
        timeout_ms: timeout_ms.map(OsString::from),
        event,
        data,
    })
}

/// The command line did not parse. `--help` and `--version` print as
/// asked; anything else is silent (exit 0) unless `--strict` was given,
/// then one line (no usage text) and exit 2.
fn bad_command_line(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    use std::io::Write;
    let help = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if help && asked_before_the_event(std::env::args_os()) {
        let _ = e.print();
        // Without Rust's runtime nobody flushes stdout at exit (see `rt`).
        let _ = std::io::stdout().flush();
        return 0;
    }
    if !telemetry_client::cli::flag_given("--strict") {
        return 0;
    }
    if help {
        say!("telemetry-emit: -h, --help, -V or --version after the event name; options go before it");
    } else {
        say!("telemetry-emit: {}", one_line(e));
    }
    EXIT_USAGE
}

/// Whether `-h`, `--help`, `-V` or `--version` came before the event name:
/// after it, they are the host's words passed on (`… stop "$@"`), and
/// help text on stdout would land in the host's output.
fn asked_before_the_event(argv: impl Iterator<Item = OsString>) -> bool {
    // Which options take a value, as clap's parser says (built only on
    // this error path).
    let command = <Args as clap::CommandFactory>::command();
    let takes_value = |option: &str| {
        option.strip_prefix("--").is_some_and(|long| {
            command
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
        })
    };
    let mut args = argv.skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h" | "--help" | "-V" | "--version") => return true,
            Some(o) if takes_value(o) => {
                args.next();
            }
            Some(o) if o.starts_with('-') && o != "-" && o != "--" => {}
            _ => return false,
        }
    }
    false
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
        // Not the last one silently: which value the host meant is its
        // mistake to see.
        if data.contains_key(&k) {
            return Err(format!(
                "data key {k:?} is given twice ({kv:?} is the second): give each key once"
            ));
        }
        data.insert(k, v);
    }
    let ev = new_event(&args.product, &args.event, &args.build, data);
    telemetry_proto_check(&ev)?;
    Ok(ev)
}

/// The event as [`telemetry_client::event`] makes it (a UUIDv7 id, the
/// current time), its id's random bits read with one `getrandom` call.
/// (The uuid crate asks its RNG crate three times, and in a static build
/// that crate, finding no dynamic `getrandom`, opens, polls and reads
/// /dev/random and /dev/urandom instead.)
#[cfg(target_os = "linux")]
fn new_event(
    product: &str,
    name: &str,
    build: &str,
    data: BTreeMap<String, telemetry_client::Value>,
) -> WireEvent {
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut random = [0u8; 10];
    let mut filled = 0;
    while filled < random.len() {
        // SAFETY: writes at most the rest of `random`, a local buffer.
        let n = unsafe {
            libc::getrandom(
                random[filled..].as_mut_ptr().cast(),
                random.len() - filled,
                0,
            )
        };
        if n > 0 {
            filled += n as usize;
        } else if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // No getrandom (a kernel before 3.17): the uuid crate's way.
            return telemetry_client::event(product, name, build, data);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    WireEvent {
        id: uuid::Builder::from_unix_timestamp_millis(now.as_millis() as u64, &random).into_uuid(),
        event: name.to_string(),
        product: product.to_string(),
        build: build.to_string(),
        timestamp_us: now.as_micros() as i64,
        data,
    }
}

#[cfg(not(target_os = "linux"))]
use telemetry_client::event as new_event;

fn emit(args: &Args, ev: WireEvent, budget: Duration) -> Result<(), (u8, String)> {
    let path = args
        .socket
        .clone()
        .unwrap_or_else(telemetry_client::default_socket_path);
    // Most of the budget for the daemon, the rest kept for the spool: the
    // connect does not wait for a full listen backlog (it fails at once;
    // on Windows a busy pipe instance gets a quarter of this share) and the
    // exchange is bounded by socket timeouts, all on this one thread.
    let socket_budget = budget.mul_f64(0.6).max(Duration::from_millis(1));
    let wait = args.strict || !args.no_wait;
    // A quarter of it, at most, for a busy pipe instance (Windows only).
    let sent = Client::connect_briefly(&path, socket_budget / 4).and_then(|mut c| {
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
    // A machine-wide daemon takes in no user's spool: kept there, the
    // event would never be delivered, so it is not kept.
    if !telemetry_client::spool_is_taken_in(&path) {
        return Err((
            EXIT_FAILED,
            format!("{failure}; not recorded: the machine-wide telemetryd takes in no spooled events, so the event was not kept"),
        ));
    }
    let spool = telemetry_client::spool::path_for(&path);
    let what = match telemetry_client::spool::append(&spool, &ev) {
        Ok(telemetry_client::spool::Spooled::Written) => {
            format!(
                "spooled to {}; telemetryd takes it in when it starts or next looks at the spool",
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
    let mut just_started = false;
    let started = if telemetry_client::autostart::nothing_serves(&failure) {
        use telemetry_client::autostart::{start, Started};
        let outcome = start(&path);
        just_started = matches!(outcome, Ok(Started::Spawned(_) | Started::Recently));
        match outcome {
            Ok(Started::Spawned(daemon)) => format!(
                "; started {} (if it does not come up, its log is {})",
                daemon.display(),
                telemetry_client::state_dir()
                    .join(telemetry_client::autostart::LOG_FILE)
                    .display()
            ),
            Ok(Started::Recently) => format!(
                "; telemetryd was started moments ago (if it does not come up, its log is {})",
                telemetry_client::state_dir()
                    .join(telemetry_client::autostart::LOG_FILE)
                    .display()
            ),
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
    // It was just started: "is it running? start it" would contradict that.
    let failure = if just_started {
        failure.without_start_advice()
    } else {
        failure.to_string()
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

/// What the shim keeps of Rust's runtime set-up, on Linux with glibc.
///
/// A Rust `main` first runs the standard library's start-up: it makes
/// sure descriptors 0-2 are open, ignores `SIGPIPE`, names the main
/// thread, and installs a stack-overflow handler, which sets up an
/// alternate signal stack and finds the main thread's guard page through
/// glibc's `pthread_getattr_np`, which reads and parses
/// `/proc/self/maps` (94,000 instructions, a fifth of what the shim ran
/// before issue #18). The shim keeps the first two and leaves out the
/// others (a stack overflow still ends the process with `SIGSEGV`,
/// without the message).
/// At exit the runtime flushes stdout, which only `--help` and `--version`
/// use: they flush it themselves. A panic exits 101, as with the runtime.
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
mod rt {
    /// Run `body` as the standard library would run `main`.
    pub fn start(body: fn() -> u8) -> libc::c_int {
        // SAFETY: plain system calls on the process's own descriptors and
        // signal disposition, before anything else runs.
        unsafe {
            standard_fds();
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        match std::panic::catch_unwind(body) {
            Ok(code) => code.into(),
            // The panic hook has printed the message.
            Err(_) => 101,
        }
    }

    /// Descriptors 0-2 that are closed are opened on /dev/null, so that
    /// nothing the shim opens (the socket, the spool) becomes its stderr.
    unsafe fn standard_fds() {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        loop {
            if libc::poll(fds.as_mut_ptr(), 3, 0) != -1 {
                break;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // poll refused (a descriptor limit below 3?): ask each.
                for fd in &mut fds {
                    if libc::fcntl(fd.fd, libc::F_GETFD) == -1 {
                        fd.revents = libc::POLLNVAL;
                    }
                }
                break;
            }
        }
        for fd in fds {
            if fd.revents & libc::POLLNVAL != 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR, 0);
            }
        }
    }
}

/// What `--strict` prints when the hard budget ends the run: wherever it
/// was (connecting, waiting for the answer, writing the spool), so the
/// event may be neither acknowledged nor spooled.
const BUDGET_ENDED: &[u8] = b"telemetry-emit: the time budget (--timeout-ms) ran out before an acknowledgement; the event may not have been spooled\n";

/// The hard time budget as a real-time interval timer. Starting a watchdog
/// thread on every run costs more than the rest of the shim's own work;
/// a timer costs two system calls, and its signal ends the process
/// wherever it is blocked.
#[cfg(unix)]
mod deadline {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    static STRICT: AtomicBool = AtomicBool::new(false);
    const MESSAGE: &[u8] = super::BUDGET_ENDED;

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
                    let _ = std::io::stderr().write_all(super::BUDGET_ENDED);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shim's events are made as the library's are.
    #[test]
    fn new_events_are_like_the_librarys() {
        let data = BTreeMap::from([("k".to_string(), telemetry_client::Value::Int(1))]);
        let ours = new_event("cfdev", "stop", "1.2", data.clone());
        let theirs = telemetry_client::event("cfdev", "stop", "1.2", data);
        assert_eq!(ours.id.get_version_num(), 7);
        assert_ne!(ours.id, theirs.id);
        let (secs, nanos) = ours.id.get_timestamp().unwrap().to_unix();
        let id_ms = secs as i64 * 1000 + i64::from(nanos) / 1_000_000;
        assert_eq!(id_ms, ours.timestamp_us / 1000, "one clock reading");
        assert!((theirs.timestamp_us - ours.timestamp_us).abs() < 10_000_000);
        let strip = |e: WireEvent| (e.event, e.product, e.build, e.data);
        assert_eq!(strip(ours), strip(theirs));
        // The random bits differ from one event to the next.
        let a = new_event("p", "e", "1", BTreeMap::new()).id;
        let b = new_event("p", "e", "1", BTreeMap::new()).id;
        assert_ne!(a.as_bytes()[6..], b.as_bytes()[6..]);
    }

    /// Help is printed only when asked for before the event name: after
    /// it, the words are the host's, passed on.
    #[test]
    fn help_counts_only_before_the_event() {
        let before = |args: &[&str]| {
            asked_before_the_event(
                std::iter::once("telemetry-emit")
                    .chain(args.iter().copied())
                    .map(OsString::from),
            )
        };
        assert!(before(&["--help"]));
        assert!(before(&["--strict", "-V"]));
        assert!(before(&["--product", "x", "-h"]));
        assert!(before(&[
            "--timeout-ms",
            "50",
            "--socket",
            "s",
            "--build",
            "1",
            "-h"
        ]));
        // A value that looks like the help flag is the option's value.
        assert!(!before(&["--build", "-h", "stop"]));
        assert!(before(&["--product=x", "--strict", "--help", "stop"]));
        assert!(!before(&["stop", "-h"]));
        assert!(!before(&["--product", "x", "stop", "k=v", "--version"]));
        assert!(!before(&["--", "-h"]));
        assert!(!before(&["stop"]));
    }

    /// Wherever `quick_args` reads a command line, clap reads it the same,
    /// with the same variables; and the usual ones are read by it.
    #[test]
    fn quick_args_agree_with_clap() {
        let vars = [
            "TELEMETRY_PRODUCT",
            "TELEMETRY_BUILD",
            "TELEMETRY_SOCKET",
            "TELEMETRY_EMIT_NO_WAIT",
        ];
        let lines: &[&[&str]] = &[
            &["--product", "cfdev", "app_created", "buildpack=go"],
            &["--product", "cfdev", "--strict", "stop"],
            &[
                "--strict",
                "--product=cfdev",
                "--build",
                "0.9.1",
                "stop",
                "a=1",
                "b:=2",
            ],
            &[
                "--product",
                "cfdev",
                "--no-wait",
                "--timeout-ms",
                "2000",
                "stop",
            ],
            &[
                "--product",
                "cfdev",
                "--timeout-ms=banana",
                "stop",
                "novalue",
            ],
            &[
                "--product",
                "cfdev",
                "--socket",
                "/tmp/s.sock",
                "stop",
                "k=v=w",
            ],
            &["--socket=/tmp/s.sock", "--build=1=2", "stop"],
            &["--product", "p", "--product", "q", "stop"],
            &["--strict", "--strict", "--product", "p", "stop"],
            &["--no-wait", "--no-wait", "stop"],
            &["--product", "cfdev"],
            &["--product"],
            &["stop"],
            &["stop", "a=1", "--strict"],
            &["--product", "cfdev", "stop", "-x"],
            &["--product", "cfdev", "stop", "--", "-x"],
            &["--product", "cfdev", "--", "stop"],
            &["--product", "-x", "stop"],
            &["--product=-x", "stop"],
            &["--product=", "stop"],
            &["--product", "", "stop"],
            &["--product", "cfdev", "", "a=1"],
            &["--product", "cfdev", "stop", ""],
            &["--strict=true", "stop"],
            &["--frob", "stop"],
            &["-h"],
            &["--help"],
            &["--version"],
            &["-V"],
            &["--prod", "cfdev", "stop"],
            &["--product", "cfdev", "-", "a=1"],
            &[],
        ];
        let envs: &[&[(&str, &str)]] = &[
            &[],
            &[("TELEMETRY_PRODUCT", "cfdev")],
            &[("TELEMETRY_PRODUCT", "")],
            &[("TELEMETRY_PRODUCT", "-x")],
            &[("TELEMETRY_BUILD", "1.2.3"), ("TELEMETRY_SOCKET", "/run/s")],
            &[("TELEMETRY_BUILD", ""), ("TELEMETRY_SOCKET", "")],
            &[("TELEMETRY_EMIT_NO_WAIT", "1")],
            &[("TELEMETRY_EMIT_NO_WAIT", "")],
            &[("TELEMETRY_EMIT_NO_WAIT", "0")],
            &[("TELEMETRY_EMIT_NO_WAIT", "No")],
            &[("TELEMETRY_EMIT_NO_WAIT", "OFF")],
            &[("TELEMETRY_EMIT_NO_WAIT", "false")],
            &[("TELEMETRY_EMIT_NO_WAIT", "yes")],
            &[("TELEMETRY_EMIT_NO_WAIT", "banana")],
        ];
        let mut quick = 0;
        for env in envs {
            // clap reads the process's environment: this is the only test
            // in this binary, so nothing else reads it meanwhile.
            for var in vars {
                std::env::remove_var(var);
            }
            for (k, v) in env.iter() {
                std::env::set_var(k, v);
            }
            for line in lines {
                let argv: Vec<OsString> = std::iter::once("telemetry-emit")
                    .chain(line.iter().copied())
                    .map(OsString::from)
                    .collect();
                let Some(ours) = quick_args(&argv, |k| std::env::var_os(k)) else {
                    continue;
                };
                quick += 1;
                let clap = Args::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{line:?} {env:?}: clap says {e}"));
                assert_eq!(ours, clap, "{line:?} with {env:?}");
            }
        }
        for var in vars {
            std::env::remove_var(var);
        }
        assert!(quick >= 60, "only {quick} command lines read without clap");
        // The bench's and a CLI's usual command line is read without clap.
        let argv: Vec<OsString> = ["telemetry-emit", "--product", "cfdev", "--strict", "stop"]
            .map(OsString::from)
            .into();
        assert!(quick_args(&argv, |_| None).is_some());
        // Not UTF-8: left to clap.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let mut argv = argv;
            argv.push(OsString::from_vec(vec![b'k', b'=', 0xff]));
            assert!(quick_args(&argv, |_| None).is_none());
        }
    }
}
