//! `telemetryctl stop [--json] [--timeout 1m]`: stop this user's daemon as
//! SIGTERM would (it finishes what is in flight, makes a last upload and
//! closes its store), and wait until it no longer answers. For a daemon a
//! CLI started or one started by hand; one a service manager runs is
//! stopped there (the daemon says how). An uninstaller runs it before it
//! removes `telemetryd` (Windows keeps a running program's file locked).

use super::flush::duration;
use super::print_json;
use crate::Failure;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use telemetry_client::{autostart, Client, ClientError};
use telemetry_proto::ErrorCode;

/// Flags of `stop`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "A CLI that sends an event afterwards starts the daemon again (unless TELEMETRY_AUTOSTART=0): an uninstaller stops it after it removed the CLIs that would.\n\
                  Exit codes: 0 stopped, or none was running; 1 it did not stop within --timeout (it goes on stopping); 3 refused (a service manager runs it: the message says how to stop it there; or this user may not stop it)."
)]
pub struct Args {
    /// Print the result as JSON: {"stopped": BOOL, "pid": N|null, "socket": PATH} (stopped is false when none was running; true with no pid for one that was already stopping).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the daemon to finish, e.g. 30s or 2m (it makes a last upload first).
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = duration)]
    timeout: Duration,
}

#[derive(serde::Serialize)]
struct Outcome {
    stopped: bool,
    pid: Option<u32>,
    socket: String,
}

/// How long the daemon has to answer the request itself.
const ANSWER: Duration = Duration::from_secs(10);

/// Run `stop`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let outcome = |stopped, pid| Outcome {
        stopped,
        pid,
        socket: socket.display().to_string(),
    };
    // A daemon already stopping (a SIGTERM, its idle exit, another `stop`)
    // has closed its listener but may still be making its last upload,
    // holding its state dir: an uninstaller must not go on before it
    // exits. Meanwhile the socket is asked again: the next daemon (one a
    // client autostarts after an idle exit) is stopped in turn.
    let lock = telemetry_client::state_dir().join("lock");
    let deadline = std::time::Instant::now() + args.timeout;
    let mut waited = false;
    let pid = loop {
        match Client::connect(socket).and_then(|mut c| c.stop(ANSWER)) {
            Ok(pid) => break pid,
            Err(e) if autostart::nothing_serves(&e) => {}
            Err(ClientError::Refused {
                code: ErrorCode::Malformed,
                ..
            }) => {
                return Err(Failure {
                    exit: crate::EXIT_REFUSED,
                    code: "unsupported".into(),
                    message: format!(
                        "the telemetryd on {} is older than `telemetryctl stop` and did not stop; it exits by itself after 5 idle minutes when a CLI started it, or stop its process (SIGTERM, or the Task Manager on Windows)",
                        socket.display()
                    ),
                    json_printed: false,
                })
            }
            Err(e) => return Err(e.into()),
        }
        if !held(&lock) {
            if args.json {
                return print_json(&outcome(waited, None));
            }
            if waited {
                outln!(
                    "the telemetryd on {} was already stopping; it has let go of its state dir",
                    socket.display()
                );
            } else {
                outln!(
                    "no telemetryd answers on {}: nothing to stop",
                    socket.display()
                );
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure {
                exit: crate::EXIT_UNREACHABLE,
                code: "timeout".into(),
                message: format!(
                    "no telemetryd answers on {}, but one still holds {} after {}: it is stopping or starting, or serves another socket; its log says which",
                    socket.display(),
                    lock.display(),
                    humantime::format_duration(args.timeout)
                ),
                json_printed: false,
            });
        }
        waited = true;
        std::thread::sleep(Duration::from_millis(50));
    };
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!("telemetryd (pid {pid}) is stopping: it finishes what is in flight and makes a last upload first…");
    }
    // It closes its listener first and exits after its last upload: wait
    // for the process, which an uninstaller needs gone.
    if !telemetry_platform::proc::wait_for_exit(pid, args.timeout) {
        return Err(Failure {
            exit: crate::EXIT_UNREACHABLE,
            code: "timeout".into(),
            message: format!(
                "telemetryd (pid {pid}) has not exited after {}: it goes on stopping (a last upload may take up to its shutdown_timeout); its log says what it is doing",
                humantime::format_duration(args.timeout)
            ),
            json_printed: false,
        });
    }
    if args.json {
        return print_json(&outcome(true, Some(pid)));
    }
    outln!("stopped telemetryd (pid {pid}) on {}", socket.display());
    Ok(())
}

/// Whether a daemon holds the state dir's lock file `lock` (the lock the
/// daemon takes for its whole life, exclusively): a shared lock cannot be
/// had. Taken and let go at once when it can (a daemon starting in that
/// moment tries its lock again for a while, `store::lock`'s grace); a
/// missing file is no daemon.
fn held(lock: &Path) -> bool {
    std::fs::File::open(lock)
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}
