//! `telemetryctl`: inspect and control the local telemetryd.
//!
//! Exit codes: 0 ok, 1 daemon unreachable (or no answer in time, or the
//! consent file could not be written), 2 usage, 3 refused (the daemon
//! answered with an error, or `show --receipt` found no such upload or
//! no longer has its events).
//!
//! With `--json`, a success prints the serde form of the protocol's own
//! reply type (`telemetry_proto`), and a failure prints one object
//! `{"ok": false, "error": {"code": C, "message": M}}` on stdout (see
//! [`Failure`]), besides the message on stderr and the exit code.

/// `println!` that never panics: when stdout cannot be written (a full
/// disk, `>/dev/full`, a closed descriptor's replacement), say so on stderr
/// and exit 1 rather than panic with exit 101 mid-output. (A reader that
/// has gone ends the process quietly by SIGPIPE, as the shell's tools do:
/// see `main`; on Windows by [`write_out`].)
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod commands;

/// Write to stdout, or end the process as [`outln!`] says.
fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        // A closed stdout (EBADF) is quiet, as `println!` has it: nothing
        // asked for the output.
        if e.raw_os_error() == Some(9) {
            return;
        }
        // A reader that has gone (`| more`, `| Select-Object -First 1`) on
        // Windows, where that is no signal: end as SIGPIPE does elsewhere,
        // quietly and not successfully.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(1);
        }
        let _ = writeln!(
            std::io::stderr(),
            "telemetryctl: error: cannot write the output: {e}"
        );
        std::process::exit(1);
    }
}

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use telemetry_client::{ClientError, ErrorCode};

/// Exit code: the daemon is unreachable or did not answer in time, or the
/// consent file could not be written.
const EXIT_UNREACHABLE: u8 = 1;
/// Exit code: bad arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon (or the consent check) refused.
const EXIT_REFUSED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "telemetryctl",
    version,
    about = "Inspect and control the local telemetry daemon (telemetryd).",
    after_help = "Exit codes: 0 ok, 1 daemon unreachable (or no answer in time, or the consent file could not be written), 2 usage, 3 refused by the daemon (or the receipt asked for by show --receipt is not there).\n\
                  With --json: on success the serde form of the reply (telemetry-proto's types); on failure {\"ok\": false, \"error\": {\"code\": C, \"message\": M}} on stdout, where C is the daemon's error code (e.g. permission_denied), unreachable, timeout (a daemon answers, but not within --timeout), usage or consent_file."
)]
pub struct Cli {
    /// Daemon socket (default: $XDG_RUNTIME_DIR/telemetry/telemetryd.sock; Windows: the named pipe \\.\pipe\telemetryd-%USERNAME%).
    #[arg(long, global = true, env = "TELEMETRY_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show queue depth, destination, last upload and last error.
    Status(commands::status::Args),
    /// Seal and upload everything pending now; print the object keys written.
    Flush(commands::flush::Args),
    /// Show or change consent: on, off or local (collect but never upload).
    Consent(commands::consent::Args),
    /// Print the stored events exactly as they will be uploaded.
    Show(commands::show::Args),
    /// Delete stored events that are not uploaded yet.
    Purge(commands::purge::Args),
    /// Delete a product's data on this machine, ask the vendor to delete what was sent, and give it a new anonymous ID.
    Forget(commands::forget::Args),
    /// List what was uploaded: each object's destination, key, SHA-256, size, events and time.
    Receipts(commands::receipts::Args),
    /// Check that everything works (daemon, consent, manifests, destinations, clock, shim cost, drops, refusals, spools left for another socket) and say what to fix.
    Doctor(commands::doctor::Args),
    /// Start this user's daemon as a client would (detached, idle exit), unless one answers; wait until it does.
    Start(commands::start::Args),
    /// Stop this user's daemon as SIGTERM would (a last upload first) and wait until it has exited; one a service manager runs is stopped there.
    Stop(commands::stop::Args),
    /// Print shell completions for telemetryctl (bash, zsh, fish, elvish, powershell).
    Completions(commands::completions::Args),
}

impl Command {
    /// Whether `--json` was asked for.
    fn json(&self) -> bool {
        match self {
            Command::Status(a) => a.json,
            Command::Flush(a) => a.json,
            Command::Consent(a) => a.json,
            Command::Show(a) => a.json,
            Command::Purge(a) => a.json,
            Command::Forget(a) => a.json,
            Command::Receipts(a) => a.json,
            Command::Doctor(a) => a.json,
            Command::Start(a) => a.json,
            Command::Stop(a) => a.json,
            Command::Completions(_) => false,
        }
    }
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub exit: u8,
    /// Machine-readable kind, the `code` of the `--json` error object: the
    /// daemon's [`ErrorCode`] as it displays it (snake_case), or
    /// `unreachable`, `timeout`, `usage` or `consent_file`.
    pub code: String,
    /// What failed, on what, and what to do.
    pub message: String,
    /// The command printed its whole `--json` answer already (`doctor`'s
    /// checks): no error object follows it on stdout.
    pub json_printed: bool,
}

impl Failure {
    /// A usage error (exit 2, code `usage`).
    pub fn usage(message: String) -> Failure {
        Failure {
            exit: EXIT_USAGE,
            code: "usage".into(),
            message,
            json_printed: false,
        }
    }

    /// The consent file could not be written, or is not the one the daemon
    /// reads (code `consent_file`).
    pub fn consent_file(exit: u8, message: String) -> Failure {
        Failure {
            exit,
            code: "consent_file".into(),
            message,
            json_printed: false,
        }
    }

    /// Output that could not be rendered (code `internal`).
    pub fn internal(message: String) -> Failure {
        Failure {
            exit: EXIT_UNREACHABLE,
            code: ErrorCode::Internal.to_string(),
            message,
            json_printed: false,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let (exit, code) = match &e {
            ClientError::Refused { code, .. } => (EXIT_REFUSED, code.to_string()),
            // A reply that cannot be read (a daemon of another version).
            ClientError::Protocol(_) | ClientError::Reply { .. } | ClientError::Unexpected(_) => {
                (EXIT_UNREACHABLE, ErrorCode::Malformed.to_string())
            }
            // Running but slower than --timeout: a script may wait longer
            // (same exit code: no answer either way).
            ClientError::TimedOut { .. } => (EXIT_UNREACHABLE, "timeout".to_string()),
            // Not running, or the connection dropped before the answer.
            _ => (EXIT_UNREACHABLE, "unreachable".to_string()),
        };
        Failure {
            exit,
            code,
            message: e.to_string(),
            json_printed: false,
        }
    }
}

/// The `--json` form of a failure.
#[derive(serde::Serialize)]
struct JsonFailure<'a> {
    ok: bool,
    error: JsonError<'a>,
}

#[derive(serde::Serialize)]
struct JsonError<'a> {
    code: &'a str,
    message: &'a str,
}

/// Report `f`: the message on stderr, with `--json` also the error object
/// on stdout; returns the exit code.
fn fail(f: &Failure, json: bool) -> ExitCode {
    eprintln!("telemetryctl: {}", f.message);
    if json && !f.json_printed {
        let out = JsonFailure {
            ok: false,
            error: JsonError {
                code: &f.code,
                message: &f.message,
            },
        };
        if let Ok(text) = serde_json::to_string(&out) {
            outln!("{text}");
        }
    }
    ExitCode::from(f.exit)
}

/// clap's error on one line, naming the flag and what a valid value looks
/// like, without the usage text.
fn usage_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let string = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        if let (Some(arg), Some(value)) = (
            string(ContextKind::InvalidArg),
            string(ContextKind::InvalidValue),
        ) {
            // "--timeout <DURATION>" → "--timeout"; "[MODE]" → "MODE".
            let arg = arg.split(' ').next().unwrap_or_default();
            let arg = arg.trim_matches(|c| matches!(c, '[' | ']' | '<' | '>'));
            let why = match (std::error::Error::source(e), e.get(ContextKind::ValidValue)) {
                (Some(source), _) => source.to_string(),
                (None, Some(ContextValue::Strings(valid))) if !valid.is_empty() => {
                    format!("expected one of {}", valid.join(", "))
                }
                // clap refuses an empty value with no list to offer.
                _ if value.is_empty() => "a value is required, not an empty one".to_string(),
                _ => "not valid here".to_string(),
            };
            return format!("invalid value '{value}' for {arg}: {why}");
        }
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap renders the whole help here, whose first line is the tool's
        // description, not what is wrong.
        let names: Vec<String> = <Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        return format!("a command is required: one of {}", names.join(", "));
    }
    telemetry_client::cli::error_line(e)
}

/// `argv` with a `--json` given before the command moved after it:
/// `telemetryctl --json status` as `telemetryctl status --json`, as
/// `--socket` may go on either side. Each command has its own `--json`
/// (its help says what that command prints), so clap alone would call the
/// first form a usage error.
fn json_after_command(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let command = <Cli as clap::CommandFactory>::command();
    let is_command = |a: &std::ffi::OsString| {
        a.to_str()
            .is_some_and(|a| command.get_subcommands().any(|c| c.get_name() == a))
    };
    let mut i = 1;
    let mut json_at = Vec::new();
    while i < argv.len() {
        let a = &argv[i];
        if is_command(a) {
            break;
        }
        match a.to_str() {
            Some("--json") => json_at.push(i),
            // Its value is the next word, whatever it looks like.
            Some("--socket") => i += 1,
            Some("--") => return argv,
            _ => {}
        }
        i += 1;
    }
    if json_at.is_empty() {
        return argv;
    }
    for at in json_at.iter().rev() {
        argv.remove(*at);
    }
    // No command (or an unknown one): without the `--json` clap says what
    // is wrong with the command rather than that `--json` is unexpected;
    // the error is still printed as JSON (see `main`).
    if i >= argv.len() + json_at.len() {
        return argv;
    }
    let command_at = i - json_at.len();
    argv.insert(command_at + 1, "--json".into());
    argv
}

fn main() -> ExitCode {
    // An empty TELEMETRY_* variable counts as unset.
    telemetry_platform::proc::forget_empty_vars("TELEMETRY_");
    // Rust ignores SIGPIPE, so `telemetryctl show | head -1` made every
    // later `println!` panic (exit 101). A command-line tool whose reader
    // has gone should end quietly, as the shell's own tools do.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default, before any
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Some(code) = telemetry_clidoc::generate_if_asked(
        std::env::args_os(),
        <Cli as clap::CommandFactory>::command,
    ) {
        return ExitCode::from(code);
    }
    let cli = match Cli::try_parse_from(json_after_command(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let failure = Failure::usage(usage_message(&e));
            let code = fail(&failure, telemetry_client::cli::flag_given("--json"));
            eprintln!("For more information, try '--help'.");
            return code;
        }
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(telemetry_client::default_socket_path);
    let result = match &cli.command {
        Command::Status(args) => commands::status::run(&socket, args),
        Command::Flush(args) => commands::flush::run(&socket, args),
        Command::Consent(args) => commands::consent::run(&socket, args),
        Command::Show(args) => commands::show::run(&socket, args),
        Command::Purge(args) => commands::purge::run(&socket, args),
        Command::Forget(args) => commands::forget::run(&socket, args),
        Command::Receipts(args) => commands::receipts::run(&socket, args),
        Command::Doctor(args) => commands::doctor::run(&socket, args),
        Command::Start(args) => commands::start::run(&socket, args),
        Command::Stop(args) => commands::stop::run(&socket, args),
        Command::Completions(args) => commands::completions::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(&f, cli.command.json()),
    }
}

#[cfg(test)]
mod tests {
    use super::json_after_command;

    #[test]
    fn an_empty_value_is_called_empty() {
        use clap::Parser;
        let err =
            super::Cli::try_parse_from(["telemetryctl", "status", "--socket", ""]).unwrap_err();
        let msg = super::usage_message(&err);
        assert_eq!(
            msg,
            "invalid value '' for --socket: a value is required, not an empty one"
        );
    }

    #[test]
    fn no_command_says_which_there_are() {
        use clap::Parser;
        let err = super::Cli::try_parse_from(["telemetryctl"]).unwrap_err();
        let msg = super::usage_message(&err);
        assert!(
            msg.starts_with("a command is required: one of status, ") && msg.contains("consent"),
            "{msg}"
        );
    }

    #[test]
    fn a_prompt_needs_a_product() {
        use clap::Parser;
        let err = super::Cli::try_parse_from(["telemetryctl", "consent", "--prompt"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{err}"
        );
        assert!(
            super::Cli::try_parse_from(["telemetryctl", "consent", "cfdev", "--prompt"]).is_ok()
        );
    }

    fn moved(args: &[&str]) -> Vec<String> {
        json_after_command(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_json_before_the_command_goes_after_it() {
        assert_eq!(moved(&["t", "--json", "status"]), ["t", "status", "--json"]);
        assert_eq!(
            moved(&["t", "--socket", "--json", "status"]),
            ["t", "--socket", "--json", "status"],
            "a socket path, not the flag"
        );
        assert_eq!(
            moved(&["t", "--json", "--socket", "/s", "consent", "cfdev"]),
            ["t", "--socket", "/s", "consent", "--json", "cfdev"]
        );
        assert_eq!(moved(&["t", "status", "--json"]), ["t", "status", "--json"]);
        assert_eq!(moved(&["t", "--json"]), ["t"], "no command: clap says so");
        assert_eq!(
            moved(&["t", "--json", "bogus"]),
            ["t", "bogus"],
            "an unknown command: clap says so"
        );
    }
}
