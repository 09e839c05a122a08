//! `telemetryd`: parse configuration, take the socket (from the service
//! manager, or bind it), run until SIGTERM, SIGINT or the idle exit.

use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
#[cfg(unix)]
use telemetryd::socket;
use telemetryd::{config, install, ondemand};

/// For the commands that only print and exit (`--check-config`, an
/// `install --dry-run`):
/// Rust ignores SIGPIPE, so `telemetryd --check-config | head -1` made the
/// next `println!` panic (exit 101); a reader that has gone should end the
/// command quietly, as the shell's own tools do. Never for the daemon
/// itself, whose writes to a client that left must fail, not kill it.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default, before any
    // thread exists (the runtime is not built on these paths).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    // An empty TELEMETRY_* variable counts as unset.
    telemetry_platform::proc::forget_empty_vars("TELEMETRY_");
    if let Some(code) = telemetry_clidoc::generate_if_asked(std::env::args_os(), || {
        <config::Args as clap::CommandFactory>::command()
    }) {
        return ExitCode::from(code);
    }
    let (args, matches) = config::parse_args();
    // Started by a client: nothing it passed on beyond stdio is ours (the
    // Rust clients mark theirs close-on-exec; other clients may not).
    #[cfg(unix)]
    if args.autostarted {
        telemetry_platform::proc::close_inherited();
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    #[cfg(unix)]
    let uid = unsafe { libc::getuid() };
    // Windows has no uid; nothing there uses it.
    #[cfg(not(unix))]
    let uid = 0;
    if let Some(cmd) = &args.command {
        // Only a dry run, which prints and changes nothing: a real install
        // killed by SIGPIPE between its steps would stop half done, silently.
        let dry_run = match cmd {
            install::Command::Install(t) => t.dry_run,
            install::Command::Uninstall(r) => r.dry_run,
        };
        if dry_run {
            end_quietly_on_a_closed_pipe();
        }
        return match install::run(cmd, |k| std::env::var_os(k), uid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("telemetryd: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.check_config {
        end_quietly_on_a_closed_pipe();
        return check_config(&args, &matches, uid);
    }
    if args.service {
        #[cfg(windows)]
        return service::dispatch();
        #[cfg(not(windows))]
        {
            eprintln!(
                "telemetryd: error: --service is for Windows' service control manager; here, run telemetryd under systemd or launchd (telemetryd install --system)"
            );
            return ExitCode::FAILURE;
        }
    }
    // Started by a client on Windows, the daemon has no stderr (it inherits
    // no handles, see the client's autostart): it opens its log itself.
    let to_file = cfg!(windows) && args.autostarted;
    if to_file {
        log_to_file(&args, uid);
    } else {
        init_log(&args, std::io::stderr, std::io::stderr().is_terminal());
    }
    match real_main(&args, &matches, uid, shutdown_signal(), || {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if to_file {
                // The log is the only place anyone will look.
                tracing::error!("{}", telemetryd::error_chain(e.as_ref()));
            }
            eprintln!("telemetryd: error: {}", telemetryd::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the settings a start would use and the manifests'
/// state, on stdout; a setting that cannot be used on stderr, as a start
/// would say it.
fn check_config(args: &config::Args, matches: &clap::ArgMatches, uid: u32) -> ExitCode {
    let config = match config::load(args, Some(matches), |k| std::env::var_os(k), uid) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telemetryd: error: {}", telemetryd::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let checked = telemetryd::check::check(&config);
    for line in &checked.lines {
        telemetryd::outln!("{line}");
    }
    if let Some(e) = &checked.setting_error {
        eprintln!("telemetryd: error: {e}");
        return ExitCode::FAILURE;
    }
    let warnings = match checked.manifest_warnings {
        0 => String::new(),
        1 => " (1 manifest warning above)".to_string(),
        n => format!(" ({n} manifest warnings above)"),
    };
    let code = if !checked.manifests_ok {
        telemetryd::outln!("settings OK; a product manifest is broken: only the products of broken manifests are disabled, until they are fixed{warnings}");
        ExitCode::from(3)
    } else if args.strict && checked.manifest_warnings > 0 {
        telemetryd::outln!("settings OK; manifests FAIL --strict{warnings}");
        ExitCode::from(3)
    } else {
        telemetryd::outln!("configuration OK{warnings}");
        ExitCode::SUCCESS
    };
    // The output is the answer: one that could not be written is a failure.
    if let Some(e) = telemetryd::output_error() {
        eprintln!("telemetryd: error: cannot write the output: {e}");
        return ExitCode::FAILURE;
    }
    code
}

/// Install the log: `--log-format json` (`TELEMETRY_LOG_FORMAT`) writes one
/// JSON object per line (`timestamp`, `level`, `fields.message` and the
/// event's fields, `target`) for log collectors; unset or `text`, lines for
/// people. `--log` (`TELEMETRY_LOG`) filters. A value that is neither is
/// logged as a warning and the default used: a typo in a log setting must
/// not stop the daemon.
fn init_log<W>(args: &config::Args, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let format = args.log_format.clone().unwrap_or_default();
    let json = format.trim().eq_ignore_ascii_case("json");
    let (filter, bad_filter) = match args.log.as_deref().map(str::trim) {
        None | Some("") => (
            tracing_subscriber::EnvFilter::new(telemetry_sink::DEFAULT_LOG_FILTER),
            None,
        ),
        Some(f) => match tracing_subscriber::EnvFilter::try_new(f) {
            Ok(filter) => (filter, None),
            Err(e) => (
                tracing_subscriber::EnvFilter::new(telemetry_sink::DEFAULT_LOG_FILTER),
                Some(format!("{f:?} ({e})")),
            ),
        },
    };
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(writer)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(ansi)
            .init();
    }
    let plain = format.trim().is_empty() || format.trim().eq_ignore_ascii_case("text");
    if !json && !plain {
        tracing::warn!(
            "--log-format / TELEMETRY_LOG_FORMAT={format:?} is not a log format (text or json); logging as text"
        );
    }
    if let Some(bad) = bad_filter {
        tracing::warn!(
            "--log / TELEMETRY_LOG={bad} is not a log filter (e.g. debug, or telemetryd=debug,info); logging at info"
        );
    }
}

/// Log to `STATE_DIR/telemetryd.log` (the previous one kept as `.old` once
/// it passes 8 MiB), for a daemon with nowhere else to write: the Windows
/// service, and on Windows the daemon a client started. The state dir is
/// the flag's or the variable's, else the default (a config file's
/// `state_dir` is not read yet: the log then goes to the default's).
fn log_to_file(args: &config::Args, uid: u32) {
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| telemetry_proto::paths::default_state_dir(|k| std::env::var_os(k), uid));
    let _ = telemetry_platform::fs::create_private_dir(&state);
    let path = state.join("telemetryd.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 8 << 20) {
        let _ = std::fs::rename(&path, state.join("telemetryd.log.old"));
    }
    let file = telemetry_platform::fs::with_mode(
        std::fs::OpenOptions::new().create(true).append(true),
        0o600,
    )
    .open(&path);
    if let Ok(file) = file {
        init_log(args, std::sync::Mutex::new(file), false);
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

/// How to stop this daemon where a service manager runs it (`Stop` is
/// refused with this): one that handed over the socket, Windows' service
/// control manager, or systemd's notify socket without socket activation.
fn supervisor(activated: bool, service: bool, config: &config::Config, uid: u32) -> Option<String> {
    if service {
        return Some("the Windows service telemetryd runs it: stop it with `sc.exe stop telemetryd` as an administrator".into());
    }
    if !activated && config.notify_socket.is_none() {
        return None;
    }
    Some(if cfg!(target_os = "macos") {
        // The LaunchDaemon runs as _telemetryd on /var/run/telemetryd.sock
        // (`install --system`): the system domain's, whatever its uid.
        if uid == 0 || config.socket_path.starts_with("/var/run") {
            "launchd runs it: stop it with `sudo launchctl bootout system/dev.telemetryd`".into()
        } else {
            format!("launchd runs it: stop it with `launchctl bootout gui/{uid}/dev.telemetryd`")
        }
    } else if uid == 0 || config.socket_path.starts_with("/run/telemetry") {
        // The machine-wide units (the daemon runs as its own user there).
        "systemd runs it: stop it with `sudo systemctl stop telemetryd.socket telemetryd.service`"
            .into()
    } else {
        "systemd runs it: stop it with `systemctl --user stop telemetryd.socket telemetryd.service`"
            .into()
    })
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

/// Run the daemon until `shutdown` resolves (or the idle exit);
/// `listening` is called once clients can connect.
fn real_main(
    args: &config::Args,
    matches: &clap::ArgMatches,
    uid: u32,
    shutdown: impl std::future::Future<Output = ()>,
    listening: impl FnOnce(),
) -> anyhow::Result<()> {
    // Every client connection is a descriptor.
    telemetry_platform::proc::raise_fd_limit();
    // Honoured whoever started us: under a service manager the socket
    // brings us back, autostarted the next client does.
    let autostarted = args.autostarted;
    let load = {
        let (mut args, matches) = (args.clone(), matches.clone());
        if autostarted {
            // It leaves the directory it was started in (below); relative
            // paths still mean what they meant there, also at a reload.
            args.base_dir = std::env::current_dir().ok();
            if let Some(base) = &args.base_dir {
                anchor_tls_variables(base);
            }
        }
        move || -> anyhow::Result<config::Config> {
            let mut config = config::load(&args, Some(&matches), |k| std::env::var_os(k), uid)?;
            if autostarted && config.idle_exit.is_none() {
                config.idle_exit = Some(ondemand::DEFAULT_IDLE_EXIT);
            }
            Ok(config)
        }
    };
    let mut config = load()?;
    let reload_requests = std::sync::Arc::new(tokio::sync::Notify::new());
    config.reload = Some(telemetryd::reload::Reload {
        requests: reload_requests.clone(),
        load: std::sync::Arc::new(move || load().map_err(|e| telemetryd::error_chain(e.as_ref()))),
    });
    let activated = service_manager_listener()?;
    config.supervisor = supervisor(activated.is_some(), args.service, &config, uid);
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
    // Before anything in it is read or run: a state directory another user
    // made or can write (the default /tmp/telemetry-UID/state without
    // HOME, made first by someone else) could hold a planted record of a
    // "newer" binary to hand over to, a consent file, or read the spool.
    if let Some(why) = telemetry_platform::fs::untrusted_dir(&config.state_dir) {
        anyhow::bail!(
            "refusing the state directory {}: {why}; set HOME, XDG_STATE_HOME or TELEMETRY_STATE_DIR (--state-dir, or state_dir in the config file) to a directory of this user's own",
            config.state_dir.display()
        );
    }
    // Before any socket is bound: a second daemon on this state directory
    // stops here, saying which lock is held; an autostarted one steps
    // aside quietly, also for a store newer than it knows (see ondemand).
    let lock = if args.autostarted {
        if let Some(store) = ondemand::newer_store(&config.state_dir) {
            if ondemand::on_newer_store(&config.state_dir, store) == ondemand::OnNewer::StepAside {
                return Ok(());
            }
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
        forward_reload_signals(reload_requests);
        let activated_here = activated.is_some();
        let (listener, bound) = listen(&config, activated, args.service)?;
        if autostarted {
            leave_the_starting_directory(&config.state_dir);
        }
        listening();
        tracing::info!(
            pid = std::process::id(),
            socket = %config.socket_path.display(),
            activated = activated_here,
            autostarted = args.autostarted,
            state_dir = %config.state_dir.display(),
            destination = %config.destination(),
            "telemetryd listening"
        );
        telemetryd::run_locked(lock, config, listener, shutdown).await?;
        // Removes the socket file, only if we bound it ourselves.
        drop(bound);
        Ok(())
    })
}

/// The variables that name extra CA certificates for uploads
/// (`rustls-native-certs` reads them at each client it builds), made
/// absolute from `base`: an autostarted daemon leaves the directory a
/// relative one meant. `SSL_CERT_DIR` may list several, as `PATH` does.
/// Called before any thread is started (the environment is not
/// synchronised on Unix); the Windows service is never autostarted.
fn anchor_tls_variables(base: &std::path::Path) {
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        let Some(value) = std::env::var_os(var) else {
            continue;
        };
        let paths: Vec<std::path::PathBuf> = std::env::split_paths(&value)
            .map(|p| {
                if p.is_relative() && !p.as_os_str().is_empty() {
                    base.join(p)
                } else {
                    p
                }
            })
            .collect();
        if let Ok(joined) = std::env::join_paths(paths) {
            if joined != value {
                std::env::set_var(var, joined);
            }
        }
    }
}

/// An autostarted daemon was started in whatever directory a CLI was run
/// from, and would hold it for its whole life: on Windows that folder could
/// then not be deleted or renamed, on Unix a USB stick or a network share
/// it is on not unmounted ("target is busy"). It moves to the root of its
/// state dir's drive (`/` on Unix), as a service manager starts one. Its
/// paths were made absolute first (`Args::base_dir`), but for its socket,
/// bound as given just before this; a hand-over to a newer binary, which
/// passes the arguments on as given, happens before too.
fn leave_the_starting_directory(state_dir: &std::path::Path) {
    let root = state_dir
        .ancestors()
        .last()
        .filter(|r| r.has_root())
        .unwrap_or(std::path::Path::new("/"));
    if let Err(e) = std::env::set_current_dir(root) {
        tracing::warn!(dir = %root.display(), error = %e, "cannot leave the directory this telemetryd was started in");
    }
}

/// The listener: the socket a service manager handed over, else the one
/// we bind (removed again when the returned guard drops).
#[cfg(unix)]
fn listen(
    config: &config::Config,
    activated: Option<Activated>,
    _service: bool,
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
/// same name fails here); the service's admits every signed-in user.
#[cfg(windows)]
fn listen(
    config: &config::Config,
    activated: Option<Activated>,
    machine_wide: bool,
) -> anyhow::Result<(telemetryd::transport::Listener, Option<NothingToRemove>)> {
    if let Some(never) = activated {
        match never {}
    }
    let listener = telemetryd::transport::Listener::bind(
        config.socket_path.as_os_str(),
        machine_wide,
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

/// Each SIGHUP asks for the configuration file to be read again (see
/// `telemetryd::reload`).
#[cfg(unix)]
fn forward_reload_signals(requests: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    requests.notify_one();
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload by restarting")
        }
    }
}

/// Windows has no SIGHUP: restart the service to reload.
#[cfg(windows)]
fn forward_reload_signals(_requests: std::sync::Arc<tokio::sync::Notify>) {}

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

/// Running as the Windows service: the service control manager starts the
/// process, which hands its main thread to the dispatcher; the dispatcher
/// calls `service_main` on another thread, which runs the daemon until the
/// manager says stop (or the system shuts down), reporting each state.
#[cfg(windows)]
mod service {
    use super::*;
    use std::ffi::OsString;
    use std::sync::Arc;
    use std::time::Duration;
    use telemetryd::install::windows::SERVICE_NAME;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};

    windows_service::define_windows_service!(ffi_service_main, service_main);

    /// Hand this thread to the service control manager.
    pub fn dispatch() -> ExitCode {
        match windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "telemetryd: error: --service runs only when the service control manager starts it (sc.exe start {SERVICE_NAME}); in a console, run telemetryd without it: {e}"
                );
                ExitCode::FAILURE
            }
        }
    }

    fn status(state: ServiceState, exit: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: if exit == 0 {
                ServiceExitCode::Win32(0)
            } else {
                ServiceExitCode::ServiceSpecific(exit)
            },
            checkpoint: 0,
            // Long enough for a last upload (shutdown_timeout) when stopping.
            wait_hint: Duration::from_secs(60),
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        // The process's own arguments (the service's command line), not
        // the start parameters the manager passes here.
        let (args, matches) = config::parse_args();
        // Deleted since the install: made again with the DACL the install
        // gives it, not the readable one %ProgramData% hands down.
        if let Some(state) = args.state_dir.as_deref().filter(|d| !d.exists()) {
            let sddl = telemetryd::install::windows::STATE_ACL.sddl;
            let _ = telemetry_platform::windows::security::create_dir_with_sddl(state, sddl);
        }
        log_to_file(&args, 0);
        let stop = Arc::new(tokio::sync::Notify::new());
        let on_control = {
            let stop = stop.clone();
            move |control| match control {
                ServiceControl::Stop | ServiceControl::Shutdown => {
                    // notify_one keeps the permit if the daemon is not
                    // waiting yet.
                    stop.notify_one();
                    ServiceControlHandlerResult::NoError
                }
                ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
                _ => ServiceControlHandlerResult::NotImplemented,
            }
        };
        let handle = match service_control_handler::register(SERVICE_NAME, on_control) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot register with the service control manager");
                return;
            }
        };
        let report = |state, exit| {
            if let Err(e) = handle.set_service_status(status(state, exit)) {
                tracing::warn!(error = %e, ?state, "cannot report the service's state");
            }
        };
        report(ServiceState::StartPending, 0);
        let stopping = {
            let stop = stop.clone();
            async move {
                stop.notified().await;
                tracing::info!("the service control manager asked to stop");
                report(ServiceState::StopPending, 0);
            }
        };
        let result = real_main(&args, &matches, 0, stopping, || {
            report(ServiceState::Running, 0)
        });
        let exit = match result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{}", telemetryd::error_chain(e.as_ref()));
                1
            }
        };
        report(ServiceState::Stopped, exit);
    }
}
