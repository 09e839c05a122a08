//! Starting `telemetryd` when nothing serves the socket: a product that
//! ships only its binaries and manifest still gets its events delivered.
//!
//! The rule, used by `telemetry-emit` and [`crate::record_event`] after
//! they spooled an event:
//!
//! - **Only when nothing owns the socket.** Connecting failed with
//!   `ENOENT` (no socket) or `ECONNREFUSED` (nobody listening): a service
//!   manager's socket unit keeps the socket listening, so its daemon is
//!   never second-guessed; a busy or slow daemon is not "missing" either.
//!   Never for a product that is off (callers return before any of this).
//! - **Which binary:** `TELEMETRY_DAEMON` (a path), else `telemetryd` beside
//!   the running executable, else `telemetryd` on `PATH`. `TELEMETRY_AUTOSTART=0`
//!   (or `false`, `no`, `off`) turns autostart off.
//! - **At most once per [`INTERVAL`]**, under a lock on
//!   `STATE_DIR/autostart.stamp` (non-blocking: a client that finds it held
//!   does not start another), so fifty shims at once start one daemon.
//! - **Detached:** its own session (it can never get a controlling
//!   terminal), standard input `/dev/null`, output appended to
//!   `STATE_DIR/telemetryd.log`, every inherited descriptor above 2 closed
//!   at exec (so a `$(cli)` or an ssh session never waits on it), all
//!   signals unblocked, and no cloud credentials or service-manager
//!   variables in its environment (see [`scrubbed`]). A double fork leaves
//!   no child to reap: the caller never waits for the daemon.
//! - **`--autostarted`:** the daemon exits when idle (5 minutes unless
//!   `TELEMETRY_IDLE_EXIT` says) and steps aside quietly when another
//!   daemon serves (see telemetryd's `ondemand` module).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ClientError;

/// `TELEMETRY_AUTOSTART=0` (or `false`, `no`, `off`) turns autostart off.
pub const AUTOSTART_VAR: &str = "TELEMETRY_AUTOSTART";
/// The daemon binary to start, instead of looking beside the running
/// executable and on `PATH`.
pub const DAEMON_VAR: &str = "TELEMETRY_DAEMON";
/// Least time between two starts from one state dir.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// The autostarted daemon's output, in the state dir.
pub const LOG_FILE: &str = "telemetryd.log";
/// The rate limit's lock and timestamp, in the state dir.
pub const STAMP_FILE: &str = "autostart.stamp";

/// What [`start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Started this binary.
    Spawned(PathBuf),
    /// Another client started one less than [`INTERVAL`] ago, or is
    /// starting one now.
    Recently,
    /// `TELEMETRY_AUTOSTART` says no.
    Disabled,
    /// No `telemetryd` beside this executable or on `PATH`.
    NotFound,
    /// The socket is the machine-wide service's (`\\.\pipe\telemetryd`):
    /// a client never starts a daemon of its own there, which would take
    /// the name from the service (and admit only its own user).
    Service,
}

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    /// The state dir, the stamp or the log could not be used.
    #[error("cannot use {path} to start telemetryd: {source}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon could not be run.
    #[error("cannot run {daemon} (set {DAEMON_VAR} to telemetryd's path, or {AUTOSTART_VAR}=0 to stop trying): {source}")]
    Spawn {
        /// The binary.
        daemon: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether `err` means nothing owns the socket (see the module docs).
pub fn nothing_serves(err: &ClientError) -> bool {
    use std::io::ErrorKind;
    matches!(err, ClientError::Unreachable { source, .. }
        if matches!(source.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused))
}

/// Start `telemetryd --autostarted --socket SOCKET` detached, unless
/// disabled, not found or started recently. Returns once the daemon's
/// process is exec'd (about a millisecond), never waiting for it to serve.
pub fn start(socket: &Path) -> Result<Started, AutostartError> {
    start_as(socket, Asked::ByClient)
}

/// [`start`] for a person who asked for it (`telemetryctl start`): not held
/// off by a start less than [`INTERVAL`] ago, which is there so that
/// fifty shims at once (or a daemon that keeps failing) do not start fifty;
/// `stop` then `start` must start one. Another client starting one at this
/// very moment still counts ([`Started::Recently`]).
pub fn start_now(socket: &Path) -> Result<Started, AutostartError> {
    start_as(socket, Asked::ByPerson)
}

/// Who asks for a start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    ByClient,
    ByPerson,
}

fn start_as(socket: &Path, asked: Asked) -> Result<Started, AutostartError> {
    if disabled(std::env::var_os(AUTOSTART_VAR).as_deref()) {
        return Ok(Started::Disabled);
    }
    if telemetry_proto::paths::is_machine_pipe(socket) {
        return Ok(Started::Service);
    }
    let Some(daemon) = find_daemon() else {
        return Ok(Started::NotFound);
    };
    let state = crate::state_dir();
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AutostartError::File { path, source }
    };
    telemetry_platform::fs::create_private_dir(&state).map_err(file_err(&state))?;
    let stamp_path = state.join(STAMP_FILE);
    // Plain files only (`open_plain`): a FIFO in the stamp's place would
    // block its read, in the log's its open, and the host with either.
    let mut stamp = telemetry_platform::fs::open_plain(
        &stamp_path,
        telemetry_platform::fs::with_mode(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            0o600,
        ),
    )
    .map_err(file_err(&stamp_path))?;
    // Held until this function returns (the file closes): another client
    // finding it held is starting one right now.
    if stamp.try_lock().is_err() {
        return Ok(Started::Recently);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut text = String::new();
    let _ = stamp.read_to_string(&mut text);
    if let Ok(last) = text.trim().parse::<u64>() {
        // A stamp in the future (clock set back) does not hold anyone off.
        if asked == Asked::ByClient && last <= now && now - last < INTERVAL.as_millis() as u64 {
            return Ok(Started::Recently);
        }
    }
    stamp
        .set_len(0)
        .and_then(|()| stamp.rewind())
        .and_then(|()| stamp.write_all(now.to_string().as_bytes()))
        .map_err(file_err(&stamp_path))?;
    let log_path = state.join(LOG_FILE);
    let log = telemetry_platform::fs::open_plain(
        &log_path,
        telemetry_platform::fs::with_mode(
            std::fs::OpenOptions::new().append(true).create(true),
            0o600,
        ),
    )
    .map_err(file_err(&log_path))?;
    spawn_detached(&daemon, socket, log).map_err(|source| AutostartError::Spawn {
        daemon: daemon.clone(),
        source,
    })?;
    Ok(Started::Spawned(daemon))
}

/// `TELEMETRY_AUTOSTART`: unset, empty or anything else means on.
fn disabled(value: Option<&std::ffi::OsStr>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str()) else {
        return false;
    };
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// `TELEMETRY_DAEMON`, else `telemetryd` beside this executable, else on
/// `PATH`.
fn find_daemon() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(DAEMON_VAR).filter(|v| !v.is_empty()) {
        // Named explicitly: a wrong path is reported by the spawn.
        return Some(PathBuf::from(p));
    }
    let name = format!("telemetryd{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&name));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// Environment variables the daemon must not inherit: cloud credentials
/// (an autostarted daemon uploads through its product's manifest, never
/// with the user's own cloud identity), CI and API tokens and secrets, the
/// ssh agent, and a service manager's variables meant for the caller
/// (`NOTIFY_SOCKET` would report our readiness as the caller's).
/// `TELEMETRY_*` are always kept.
pub fn scrubbed(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AWS_",
        "AZURE_",
        "GOOGLE_",
        "GCLOUD_",
        "CLOUDSDK_",
        "ALIBABA_CLOUD_",
        "OCI_",
        "DIGITALOCEAN_",
    ];
    const SUFFIXES: &[&str] = &[
        "_TOKEN",
        "_SECRET",
        "_SECRET_KEY",
        "_ACCESS_KEY",
        "_API_KEY",
        "_PASSWORD",
        "_CREDENTIALS",
        // GH_PAT and the like; npm_config__authToken.
        "_PAT",
        "_AUTHTOKEN",
    ];
    const NAMES: &[&str] = &[
        // A connection string, with its password.
        "DATABASE_URL",
        "SSH_AUTH_SOCK",
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    ];
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("TELEMETRY_") {
        return false;
    }
    PREFIXES.iter().any(|p| upper.starts_with(p))
        || SUFFIXES.iter().any(|s| upper.ends_with(s))
        || NAMES.contains(&upper.as_str())
}

/// Start the daemon with no console and nothing of ours: Windows.
///
/// std's `Command` passes `bInheritHandles=TRUE` whenever it sets up stdio,
/// and with it every inheritable handle of this process, the host's own
/// stdout among them when the host's parent reads it through a pipe: that
/// parent would then wait for the daemon to exit (minutes) before it sees
/// the end of the host's output. So `CreateProcessW` with no inheritance at
/// all, in its own process group, detached from any console; the daemon
/// opens its log (`LOG_FILE` in the state dir) itself.
#[cfg(windows)]
fn spawn_detached(daemon: &Path, socket: &Path, _log: File) -> std::io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        CreateProcessW, CREATE_NEW_PROCESS_GROUP, CREATE_UNICODE_ENVIRONMENT, DETACHED_PROCESS,
        PROCESS_INFORMATION, STARTUPINFOW,
    };
    let line = telemetry_platform::cmdline::windows_command_line(
        &daemon.to_string_lossy(),
        ["--autostarted", "--socket", &socket.to_string_lossy()],
    );
    let mut line: Vec<u16> = std::ffi::OsStr::new(&line)
        .encode_wide()
        .chain(Some(0))
        .collect();
    // NAME=VALUE\0 ... \0: ours, scrubbed, with the AWS chain sent
    // nowhere, sorted by name without case as Windows expects a block.
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| !scrubbed(&k.to_string_lossy()))
        .chain(aws_nowhere().map(|(k, v)| (k.into(), v.into())))
        .collect();
    vars.sort_by_key(|(k, _)| k.to_string_lossy().to_uppercase());
    let mut block: Vec<u16> = Vec::new();
    for (k, v) in &vars {
        block.extend(k.encode_wide());
        block.push(u16::from(b'='));
        block.extend(v.encode_wide());
        block.push(0);
    }
    block.push(0);
    let program: Vec<u16> = daemon.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: NUL-terminated program and (mutable, as CreateProcessW
    // requires) command line; a double-NUL-terminated UTF-16 environment
    // block; zeroed STARTUPINFOW with its size set; both returned handles
    // are closed.
    unsafe {
        let mut si: STARTUPINFOW = std::mem::zeroed();
        si.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        let mut pi: PROCESS_INFORMATION = std::mem::zeroed();
        let ok = CreateProcessW(
            program.as_ptr(),
            line.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_UNICODE_ENVIRONMENT,
            block.as_ptr() as *const std::ffi::c_void,
            std::ptr::null(),
            &si,
            &mut pi,
        );
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        CloseHandle(pi.hProcess);
        CloseHandle(pi.hThread);
    }
    Ok(())
}

/// The AWS chain's files and the instance role, turned off for the daemon:
/// it would otherwise still find ~/.aws/credentials (HOME is kept) or the
/// metadata service.
fn aws_nowhere() -> [(&'static str, &'static str); 3] {
    let nowhere = if cfg!(windows) { "NUL" } else { "/dev/null" };
    [
        ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ("AWS_CONFIG_FILE", nowhere),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Start the daemon detached: Unix (a double fork, see [`detach`]).
#[cfg(unix)]
fn spawn_detached(daemon: &Path, socket: &Path, log: File) -> std::io::Result<()> {
    let mut cmd = Command::new(daemon);
    cmd.arg("--autostarted")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (name, _) in std::env::vars_os() {
        if scrubbed(&name.to_string_lossy()) {
            cmd.env_remove(name);
        }
    }
    cmd.envs(aws_nowhere());
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (setsid, fork, _exit, sigprocmask, fcntl,
    // close_range); it allocates nothing.
    unsafe {
        cmd.pre_exec(detach);
    }
    // The process spawned is the intermediate, which exits at once; the
    // daemon is its child, adopted by init (or a subreaper). `spawn`
    // returns once the daemon exec'd (or reports why it could not).
    let mut child = cmd.spawn()?;
    match child.wait() {
        // A host that ignores SIGCHLD hands that on: the kernel reaps the
        // intermediate itself, and there is nothing to wait for. `spawn`
        // has already said the exec succeeded.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        other => other.map(drop),
    }
}

/// In the forked child: a new session, then fork again and let the
/// intermediate exit, so the daemon is nobody's child here and, not being a
/// session leader, can never acquire a controlling terminal.
#[cfg(unix)]
fn detach() -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls only (see spawn_detached).
    unsafe {
        if libc::setsid() == -1 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        // A blocked mask survives exec; the daemon needs SIGTERM.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        cloexec_from(3);
    }
    Ok(())
}

/// Mark every descriptor from `first` up close-on-exec: whatever the host
/// let us inherit (a `$(cli)` pipe, an ssh channel) is closed when the
/// daemon starts. (Closing them here would also close the pipe through
/// which `spawn` learns that exec failed.)
#[cfg(unix)]
unsafe fn cloexec_from(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        // close_range(first, ~0, CLOSE_RANGE_CLOEXEC), Linux 5.11+.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
    }
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        (lim.rlim_cur as u64).min(65_536) as libc::c_int
    } else {
        1024
    };
    for fd in first..max {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_service_variables_are_scrubbed_and_ours_kept() {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "AZURE_CLIENT_SECRET",
            "GITHUB_TOKEN",
            "CI_JOB_TOKEN",
            "NOTIFY_SOCKET",
            "SSH_AUTH_SOCK",
            "GH_PAT",
            "npm_config__authToken",
            "DATABASE_URL",
        ] {
            assert!(scrubbed(name), "{name} must not reach the daemon");
        }
        for name in [
            "TELEMETRY_S3_TOKEN",
            "PATH",
            "HOME",
            "XDG_STATE_HOME",
            "LANG",
        ] {
            assert!(!scrubbed(name), "{name} must reach the daemon");
        }
    }

    #[test]
    fn the_switch_turns_off_only_on_a_clear_no() {
        use std::ffi::OsStr;
        assert!(!disabled(None));
        assert!(!disabled(Some(OsStr::new(""))));
        assert!(!disabled(Some(OsStr::new("1"))));
        for no in ["0", "false", "No", "OFF"] {
            assert!(disabled(Some(OsStr::new(no))), "{no}");
        }
    }
}
