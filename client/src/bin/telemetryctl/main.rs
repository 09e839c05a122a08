//! `telemetryctl`: inspect and control the local telemetryd.
//!
//! Exit codes: 0 ok, 1 daemon unreachable (or no answer in time), 2 usage,
//! 3 refused (the daemon answered with an error).

mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use telemetry_client::ClientError;

#[derive(Debug, Parser)]
#[command(
    name = "telemetryctl",
    version,
    about = "Inspect and control the local telemetry daemon (telemetryd).",
    after_help = "Exit codes: 0 ok, 1 daemon unreachable, 2 usage, 3 refused by the daemon."
)]
struct Cli {
    /// Daemon socket (default: $XDG_RUNTIME_DIR/telemetry/telemetryd.sock).
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
}

/// A failed command: what to print and the exit code.
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failure {
    /// A usage error (exit 2).
    pub fn usage(message: String) -> Failure {
        Failure { code: 2, message }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match e {
            ClientError::Refused { .. } => 3,
            _ => 1,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("telemetryctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
