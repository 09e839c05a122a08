//! `telemetryctl start [--json] [--timeout 10s]`: start this user's daemon
//! the way a client does when it finds none (detached, exiting after 5 idle
//! minutes, without the user's cloud credentials), unless one answers
//! already, and wait until it answers. On Windows, `telemetryd install
//! --user` runs this at each logon.

use super::flush::duration;
use super::print_json;
use crate::Failure;
use std::path::Path;
use std::time::{Duration, Instant};
use telemetry_client::autostart::{self, Started};
use telemetry_client::Client;

/// Flags of `start`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON: {"started": BOOL, "daemon": PATH|null, "socket": PATH}.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the daemon to answer, e.g. 10s.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration)]
    timeout: Duration,
}

#[derive(serde::Serialize)]
struct Outcome {
    started: bool,
    daemon: Option<String>,
    socket: String,
}

fn answers(socket: &Path) -> bool {
    Client::connect(socket)
        .and_then(|mut c| c.status(Duration::from_secs(2)))
        .is_ok()
}

/// The lines `log` gained after byte `from` (at most its last 64 KiB).
fn new_lines(log: &Path, from: u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = telemetry_platform::fs::open_plain(log, std::fs::OpenOptions::new().read(true))
    else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = from.max(len.saturating_sub(64 * 1024));
    let mut text = String::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        // Cut only what no message is: a cut line would lose the words
        // `gave_up` looks for at its end (a long path comes before them).
        .map(|l| telemetry_proto::printable(l, 2000))
        .collect()
}

/// The line in which a daemon started after byte `from` of its log said
/// it steps aside or cannot run.
fn gave_up(log: &Path, from: u64) -> Option<String> {
    // Not "another telemetryd serves this state dir; stepping aside": one
    // serves, and the next look at the socket finds it. Nor "...did not let
    // go within 3s; stepping aside": the holder may be one another client
    // started a moment before, still coming up (this start is not held off
    // by the autostart interval); if it never answers, the timeout says so.
    new_lines(log, from).into_iter().rev().find(|l| {
        (l.contains("stepping aside")
            && !l.contains("another telemetryd serves")
            && !l.contains("did not let go"))
            || l.contains("telemetryd: error:")
    })
}

/// The last line the log gained after byte `from`.
fn last_line(log: &Path, from: u64) -> Option<String> {
    new_lines(log, from).pop()
}

/// Run `start`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let outcome = |started, daemon: Option<&Path>| Outcome {
        started,
        daemon: daemon.map(|d| d.display().to_string()),
        socket: socket.display().to_string(),
    };
    if answers(socket) {
        if args.json {
            return print_json(&outcome(false, None));
        }
        outln!("telemetryd already answers on {}", socket.display());
        return Ok(());
    }
    let log = telemetry_client::state_dir().join(autostart::LOG_FILE);
    // What the daemon writes from here on says why it did not come up.
    let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
    let daemon = match autostart::start_now(socket) {
        Ok(Started::Spawned(bin)) => Some(bin),
        // Another client is starting one right now: wait for it.
        Ok(Started::Recently) => None,
        Ok(Started::Disabled) => {
            return Err(Failure {
                exit: crate::EXIT_REFUSED,
                json_printed: false,
                code: "autostart_disabled".into(),
                message: format!(
                    "{} turns starting the daemon off; unset it, or start telemetryd yourself",
                    autostart::AUTOSTART_VAR
                ),
            })
        }
        Ok(Started::Service) => {
            return Err(Failure {
                exit: crate::EXIT_REFUSED,
                json_printed: false,
                code: "service".into(),
                message: format!(
                    "{} is the machine-wide service's; start it with: sc.exe start telemetryd",
                    socket.display()
                ),
            })
        }
        Ok(Started::NotFound) => {
            return Err(Failure {
                exit: crate::EXIT_UNREACHABLE,
                json_printed: false,
                code: "not_found".into(),
                message: format!(
                    "no telemetryd beside telemetryctl or on PATH; set {} to its path",
                    autostart::DAEMON_VAR
                ),
            })
        }
        Err(e) => {
            return Err(Failure {
                exit: crate::EXIT_UNREACHABLE,
                json_printed: false,
                code: "unreachable".into(),
                message: e.to_string(),
            })
        }
    };
    // A huge --timeout would overflow the clock's arithmetic.
    let deadline = Instant::now() + args.timeout.min(telemetry_client::MAX_TIMEOUT);
    while !answers(socket) {
        // A daemon that stepped aside or failed said so in its log: no
        // use waiting out the timeout for it.
        let gave_up = gave_up(&log, log_from);
        if gave_up.is_some() || Instant::now() > deadline {
            let what = match &gave_up {
                Some(_) => "exited without serving".to_string(),
                None => format!(
                    "does not answer after {}",
                    humantime::format_duration(args.timeout)
                ),
            };
            let said = gave_up
                .or_else(|| last_line(&log, log_from))
                .map(|l| format!("; it logged: {l}"))
                .unwrap_or_default();
            return Err(Failure {
                exit: crate::EXIT_UNREACHABLE,
                json_printed: false,
                code: "unreachable".into(),
                message: format!(
                    "telemetryd was started on {} {}but {what}{said} (its log is {})",
                    socket.display(),
                    // Not by this command: it found another client starting one.
                    if daemon.is_none() {
                        "by another client "
                    } else {
                        ""
                    },
                    log.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if args.json {
        return print_json(&outcome(true, daemon.as_deref()));
    }
    match daemon {
        Some(d) => outln!("started {} on {}", d.display(), socket.display()),
        None => outln!(
            "telemetryd (started by another client) answers on {}",
            socket.display()
        ),
    }
    Ok(())
}
