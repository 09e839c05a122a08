//! `telemetryd`: parse configuration, take the socket (from the service
//! manager, or bind it), run until SIGTERM, SIGINT or the idle exit.

use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
#[cfg(unix)]
use telemetryd::socket;
use telemetryd::{config, install, ondemand};

fn main() -> ExitCode {
    let (args, matches) = config::parse_args();
    // SAFETY: getuid has no preconditions and cannot fail.
    #[cfg(unix)]
    let uid = unsafe { libc::getuid() };
    // Windows has no uid; nothing there uses it.
    #[cfg(not(unix))]
    let uid = 0;
    if let Some(cmd) = &args.command {
        return match install::run(cmd, |k| std::env::var_os(k), uid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("telemetryd: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEMETRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main(&args, &matches, uid) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetryd: error: {}", telemetryd::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A listener handed over by a service manager (systemd, launchd).
#[cfg(unix)]
type Activated = std::os::unix::net::UnixListener;
/// Windows' service control manager hands over no pipe.
#[cfg(not(unix))]
type Activated = std::convert::Infallible;

#[cfg(not(unix))]
fn service_manager_listener() -> anyhow::Result<Option<Activated>> {
    Ok(None)
}

/// The listening socket handed over by a service manager, if any.
#[cfg(unix)]
fn service_manager_listener() -> anyhow::Result<Option<Activated>> {
    #[cfg(target_os = "macos")]
    if let Some(l) = socket::launchd_listener("Listener")? {
        return Ok(Some(l));
    }
    let listener = socket::activated_listener(|k| std::env::var(k).ok(), std::process::id())?;
    if listener.is_some() {
        // Not for anything we might start. Safe here: no other thread yet.
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
    }
    Ok(listener)
}

/// Raise the soft open-file limit to the hard one: every client connection
/// is a descriptor, and the default soft limit (often 1024) is low for a
/// daemon that many CLIs talk to at once. (Windows has no such limit.)
#[cfg(not(unix))]
fn raise_fd_limit() {}

/// Raise the soft open-file limit to the hard one (see above).
#[cfg(unix)]
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn real_main(args: &config::Args, matches: &clap::ArgMatches, uid: u32) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut config = config::load(args, Some(matches), |k| std::env::var_os(k), uid)?;
    let activated = service_manager_listener()?;
    // Honoured whoever started us: under a service manager the socket
    // brings us back, autostarted the next client does.
    if args.autostarted && config.idle_exit.is_none() {
        config.idle_exit = Some(ondemand::DEFAULT_IDLE_EXIT);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    #[cfg(unix)]
    if activated.is_none() {
        // A default path too long to bind (from a long $XDG_RUNTIME_DIR or
        // $TMPDIR) is refused before the state directory is created.
        socket::check_path_len(&config.socket_path)?;
    }
    // Before any socket is bound: a second daemon on this state directory
    // stops here, saying which lock is held; an autostarted one steps
    // aside quietly, also for a store newer than it knows (see ondemand).
    let lock = if args.autostarted {
        if let Some(found) = ondemand::newer_store(&config.state_dir) {
            ondemand::hand_over_or_step_aside(&config.state_dir, found);
            return Ok(());
        }
        match ondemand::take_lock(&config.state_dir, &config.socket_path)? {
            ondemand::Start::Serve(lock) => lock,
            ondemand::Start::StepAside => return Ok(()),
        }
    } else {
        telemetryd::store::StateLock::acquire(&config.state_dir)?
    };
    if ondemand::newer_store(&config.state_dir).is_none() {
        ondemand::record_current(&config.state_dir);
    }
    runtime.block_on(async {
        let (listener, bound) = listen(&config, activated)?;
        tracing::info!(
            pid = std::process::id(),
            socket = %config.socket_path.display(),
            activated = bound.is_none(),
            autostarted = args.autostarted,
            state_dir = %config.state_dir.display(),
            destination = %config.destination(),
            "telemetryd listening"
        );
        telemetryd::run_locked(lock, config, listener, shutdown_signal()).await?;
        // Removes the socket file, only if we bound it ourselves.
        drop(bound);
        Ok(())
    })
}

/// The listener: the socket a service manager handed over, else the one
/// we bind (removed again when the returned guard drops).
#[cfg(unix)]
fn listen(
    config: &config::Config,
    activated: Option<Activated>,
) -> anyhow::Result<(telemetryd::transport::Listener, Option<socket::BoundSocket>)> {
    let (std_listener, bound) = match activated {
        Some(l) => (l, None),
        None => {
            let mut bound = socket::bind(&config.socket_path)?;
            let l = bound
                .take_listener()
                .context("socket listener already taken")?;
            (l, Some(bound))
        }
    };
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .with_context(|| format!("cannot listen on {}", config.socket_path.display()))?;
    Ok((listener.into(), bound))
}

/// A pipe leaves nothing behind to remove.
#[cfg(windows)]
struct NothingToRemove;

/// The listener: the named pipe's first instance (a second daemon on the
/// same name fails here).
#[cfg(windows)]
fn listen(
    config: &config::Config,
    activated: Option<Activated>,
) -> anyhow::Result<(telemetryd::transport::Listener, Option<NothingToRemove>)> {
    if let Some(never) = activated {
        match never {}
    }
    let listener = telemetryd::transport::Listener::bind(
        config.socket_path.as_os_str(),
        false,
        config.max_connections,
    )
    .with_context(|| {
        format!(
            "cannot create the named pipe {} (another telemetryd serves it already, or the name is not \\\\.\\pipe\\NAME)",
            config.socket_path.display()
        )
    })?;
    Ok((listener, None))
}

/// Resolves on Ctrl-C, or when the console closes or the system shuts down.
#[cfg(windows)]
async fn shutdown_signal() {
    use tokio::signal::windows::{ctrl_c, ctrl_close, ctrl_shutdown};
    let (Ok(mut c), Ok(mut close), Ok(mut shutdown)) = (ctrl_c(), ctrl_close(), ctrl_shutdown())
    else {
        tracing::error!("cannot install console handlers; stop the process to stop it");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = c.recv() => tracing::info!("Ctrl-C received"),
        _ = close.recv() => tracing::info!("console closed"),
        _ = shutdown.recv() => tracing::info!("system shutting down"),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
#[cfg(unix)]
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
