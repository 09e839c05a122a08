//! `telemetryd`: parse configuration, bind the socket, run until SIGTERM or
//! SIGINT.

use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
use telemetryd::{config, socket};

fn main() -> ExitCode {
    let (args, matches) = config::parse_args();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEMETRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main(&args, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetryd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: &config::Args, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let config = config::load(args, Some(matches), |k| std::env::var_os(k), uid)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut bound = socket::bind(&config.socket_path)?;
        let listener = bound
            .take_listener()
            .context("socket listener already taken")?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .with_context(|| format!("cannot listen on {}", config.socket_path.display()))?;
        tracing::info!(
            socket = %config.socket_path.display(),
            state_dir = %config.state_dir.display(),
            destination = %config.destination(),
            "telemetryd listening"
        );
        telemetryd::run(config, listener, shutdown_signal()).await?;
        drop(bound);
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
