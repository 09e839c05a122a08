//! `telemetryd install` / `telemetryd uninstall`: write or remove the
//! service-manager files for this OS — systemd units on Linux, a launchd
//! plist on macOS — with the real binary path filled in; on Windows,
//! register the service or the logon start ([`windows`]).
//!
//! The templates live in `systemd/` and `launchd/` at the top of the
//! repository (and are built into the binary), so what is reviewed there is
//! exactly what gets installed. `--root` stages into a directory instead of
//! `/` (like `DESTDIR`), for packagers; `--dry-run` prints every directory
//! and file (with its mode and contents) and writes nothing.
//!
//! The binary path goes into the service file, so the service breaks when
//! that file goes away: a binary inside a cargo target directory (which
//! `cargo clean` empties) gets a warning that says where to copy it.

use std::path::{Path, PathBuf};

pub mod windows;

/// `systemd/user/telemetryd.socket`.
pub const USER_SOCKET: &str = include_str!("../../../systemd/user/telemetryd.socket");
/// `systemd/user/telemetryd.service`.
pub const USER_SERVICE: &str = include_str!("../../../systemd/user/telemetryd.service");
/// `systemd/system/telemetryd.socket`.
pub const SYSTEM_SOCKET: &str = include_str!("../../../systemd/system/telemetryd.socket");
/// `systemd/system/telemetryd.service`.
pub const SYSTEM_SERVICE: &str = include_str!("../../../systemd/system/telemetryd.service");
/// `systemd/system/telemetry.sysusers.conf`.
pub const SYSUSERS: &str = include_str!("../../../systemd/system/telemetry.sysusers.conf");
/// `launchd/dev.telemetryd.agent.plist`.
pub const LAUNCH_AGENT: &str = include_str!("../../../launchd/dev.telemetryd.agent.plist");
/// `launchd/dev.telemetryd.daemon.plist`.
pub const LAUNCH_DAEMON: &str = include_str!("../../../launchd/dev.telemetryd.daemon.plist");

/// The binary path the templates carry until installed.
const TEMPLATE_BIN: &str = "/usr/local/bin/telemetryd";

/// `telemetryd install|uninstall`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write the systemd units (Linux) or launchd plist (macOS) for this binary; on Windows, register the service (--system) or the start at logon (--user).
    Install(Target),
    /// Remove what `install` wrote.
    Uninstall(Removal),
}

/// Which installation to remove: `install`'s choices that say where it
/// is (no `--bin`: nothing is written).
#[derive(Debug, Clone, clap::Args)]
pub struct Removal {
    /// The per-user service.
    #[arg(long, required_unless_present = "system", conflicts_with = "system")]
    pub user: bool,
    /// The machine-wide service (needs root; on Windows, an elevated prompt).
    #[arg(long)]
    pub system: bool,
    /// Remove what was staged under this directory instead of / (for packaging). Default: / (this machine).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print each file and link that would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accepted and ignored (nothing is written), so a script may undo an
    /// install with the same arguments.
    #[arg(long, value_name = "PATH", hide = true)]
    pub bin: Option<PathBuf>,
}

impl Removal {
    /// The same installation as `install` names it (this binary's path
    /// only fills the plan; nothing of it is written).
    fn target(&self) -> Target {
        Target {
            user: self.user,
            system: self.system,
            root: self.root.clone(),
            bin: None,
            dry_run: self.dry_run,
        }
    }
}

/// Which installation.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// A per-user service (systemctl --user / a LaunchAgent / on Windows, started at logon).
    #[arg(long, required_unless_present = "system", conflicts_with = "system")]
    pub user: bool,
    /// One machine-wide service (needs root; on Windows, an elevated prompt).
    #[arg(long)]
    pub system: bool,
    /// Stage under this directory instead of / (for packaging); nothing is enabled. Default: / (install on this machine).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The telemetryd binary the service runs, as an absolute path on the target system, e.g. /usr/local/bin/telemetryd. Default: this binary.
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Print each directory and file (path, mode, contents) that would be created, written or removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be written or removed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A needed location is unknown.
    #[error("{0}")]
    Unknown(String),
    /// `--bin` is relative: the service manager would not resolve it from
    /// the directory `install` ran in.
    #[error("--bin {}: the service manager needs an absolute path; pass e.g. --bin /usr/local/bin/telemetryd", .0.display())]
    RelativeBin(PathBuf),
}

/// One file to install: its final path, mode and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Where it goes (already under `--root`).
    pub path: PathBuf,
    /// Permissions (service files are world-readable configuration).
    pub mode: u32,
    /// What it holds.
    pub contents: String,
}

/// Mode of every installed file: the service manager reads it, nobody else
/// needs to write it.
const FILE_MODE: u32 = 0o644;

/// Mode of the missing parent directories of installed files.
const PARENT_DIR_MODE: u32 = 0o755;

/// A directory the service needs that its manager will not create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDir {
    /// Where (already under `--root`).
    pub path: PathBuf,
    /// Permissions.
    pub mode: u32,
    /// Owner (uid, gid) to give it, when not the installing user.
    pub owner: Option<(u32, u32)>,
}

/// Everything `install` does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Files to write.
    pub files: Vec<Planned>,
    /// Directories to create first.
    pub dirs: Vec<PlannedDir>,
    /// Commands to print for the user to run next.
    pub next: Vec<String>,
}

/// The account a macOS LaunchDaemon runs as and the group that may use its
/// socket, looked up by [`macos_accounts`].
pub const MACOS_USER: &str = "_telemetryd";
/// See [`MACOS_USER`].
pub const MACOS_GROUP: &str = "telemetry";

/// (uid of [`MACOS_USER`], gid of [`MACOS_GROUP`]), if both exist.
#[cfg(not(unix))]
pub fn macos_accounts() -> Option<(u32, u32)> {
    None
}

/// (uid of [`MACOS_USER`], gid of [`MACOS_GROUP`]), if both exist.
#[cfg(unix)]
pub fn macos_accounts() -> Option<(u32, u32)> {
    use std::ffi::CString;
    let user = CString::new(MACOS_USER).ok()?;
    let group = CString::new(MACOS_GROUP).ok()?;
    // SAFETY: getpwnam/getgrnam return a pointer to static storage or null;
    // we read one field right away, before any other call can reuse it.
    unsafe {
        let pw = libc::getpwnam(user.as_ptr());
        let gr = libc::getgrnam(group.as_ptr());
        (!pw.is_null() && !gr.is_null()).then(|| ((*pw).pw_uid, (*gr).gr_gid))
    }
}

fn under(root: &Option<PathBuf>, path: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The service manager to write files for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// systemd units.
    Linux,
    /// launchd plists.
    MacOs,
}

impl Os {
    /// The OS this binary was built for.
    pub fn current() -> Os {
        if cfg!(target_os = "macos") {
            Os::MacOs
        } else {
            Os::Linux
        }
    }
}

/// What `install` does for `target` on `os`. `accounts` is
/// [`macos_accounts`] (only used for a macOS LaunchDaemon).
pub fn plan(
    os: Os,
    target: &Target,
    bin: &Path,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    uid: u32,
    accounts: Option<(u32, u32)>,
) -> Result<Plan, InstallError> {
    let bin_s = bin.display().to_string();
    let home = env("HOME").map(PathBuf::from);
    if os == Os::MacOs {
        let mut dirs = Vec::new();
        let (dir, template, socket, state, logs, next) = if target.system {
            let (user, group) = accounts.ok_or_else(|| {
                InstallError::Unknown(format!(
                    "the user {MACOS_USER} and the group {MACOS_GROUP} must exist first, e.g.\n  \
                     sudo dscl . -create /Groups/{MACOS_GROUP} PrimaryGroupID 401\n  \
                     sudo dscl . -create /Users/{MACOS_USER} UniqueID 401\n  \
                     sudo dscl . -create /Users/{MACOS_USER} PrimaryGroupID 401\n  \
                     sudo dscl . -create /Users/{MACOS_USER} UserShell /usr/bin/false"
                ))
            })?;
            let state = PathBuf::from("/var/db/telemetry");
            dirs.push(PlannedDir {
                path: under(&target.root, &state),
                mode: 0o700,
                owner: Some((user, group)),
            });
            (
                PathBuf::from("/Library/LaunchDaemons"),
                LAUNCH_DAEMON.replace(
                    "<!--@SOCK_PATH_GROUP@-->",
                    &format!("<key>SockPathGroup</key>\n            <integer>{group}</integer>"),
                ),
                // /var/run itself: launchd does not create parent directories.
                PathBuf::from("/var/run/telemetryd.sock"),
                state,
                PathBuf::from("/var/log"),
                "sudo launchctl bootstrap system /Library/LaunchDaemons/dev.telemetryd.plist"
                    .to_string(),
            )
        } else {
            let home = home.ok_or_else(|| InstallError::Unknown("HOME is not set".into()))?;
            let socket = telemetry_proto::paths::default_socket_path_for(true, &env, uid);
            let state = telemetry_proto::paths::default_state_dir(&env, uid);
            for d in [socket.parent().map(Path::to_path_buf), Some(state.clone())]
                .into_iter()
                .flatten()
            {
                dirs.push(PlannedDir {
                    path: under(&target.root, &d),
                    mode: 0o700,
                    owner: None,
                });
            }
            (
                home.join("Library/LaunchAgents"),
                LAUNCH_AGENT.to_string(),
                socket,
                state,
                home.join("Library/Logs"),
                format!(
                    "launchctl bootstrap gui/{uid} {}",
                    home.join("Library/LaunchAgents/dev.telemetryd.plist")
                        .display()
                ),
            )
        };
        let contents = template
            .replace("@TELEMETRYD@", &xml_escape(&bin_s))
            .replace("@SOCKET@", &xml_escape(&socket.display().to_string()))
            .replace("@STATE_DIR@", &xml_escape(&state.display().to_string()))
            .replace("@LOG_DIR@", &xml_escape(&logs.display().to_string()));
        let path = under(&target.root, &dir.join("dev.telemetryd.plist"));
        return Ok(Plan {
            files: vec![Planned {
                path,
                mode: FILE_MODE,
                contents,
            }],
            dirs,
            next: vec![next],
        });
    }
    if bin_s.contains(['\n', '\r']) {
        return Err(InstallError::Unknown(format!(
            "the binary's path {bin_s:?} holds a line break, which a unit file cannot; pass --bin with another path"
        )));
    }
    let exec = systemd_exec_path(&bin_s);
    let with_bin = |t: &str| t.replace(TEMPLATE_BIN, &exec);
    if target.system {
        let unit_dir = Path::new("/etc/systemd/system");
        let files = vec![
            Planned {
                path: under(&target.root, &unit_dir.join("telemetryd.socket")),
                mode: FILE_MODE,
                contents: SYSTEM_SOCKET.to_string(),
            },
            Planned {
                path: under(&target.root, &unit_dir.join("telemetryd.service")),
                mode: FILE_MODE,
                contents: with_bin(SYSTEM_SERVICE),
            },
            Planned {
                path: under(&target.root, Path::new("/etc/sysusers.d/telemetry.conf")),
                mode: FILE_MODE,
                contents: SYSUSERS.to_string(),
            },
        ];
        let next = vec![
            "systemd-sysusers".to_string(),
            "systemctl daemon-reload".to_string(),
            "systemctl enable --now telemetryd.socket".to_string(),
        ];
        return Ok(Plan {
            files,
            dirs: Vec::new(),
            next,
        });
    }
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".config")))
        .ok_or_else(|| InstallError::Unknown("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    let unit_dir = config_home.join("systemd/user");
    let files = vec![
        Planned {
            path: under(&target.root, &unit_dir.join("telemetryd.socket")),
            mode: FILE_MODE,
            contents: USER_SOCKET.to_string(),
        },
        Planned {
            path: under(&target.root, &unit_dir.join("telemetryd.service")),
            mode: FILE_MODE,
            contents: with_bin(USER_SERVICE),
        },
    ];
    let next = vec![
        "systemctl --user daemon-reload".to_string(),
        "systemctl --user enable --now telemetryd.socket".to_string(),
    ];
    Ok(Plan {
        files,
        dirs: Vec::new(),
        next,
    })
}

/// The cargo target directory `bin` lies in, if any: a `target` component
/// followed by `debug` or `release` (perhaps after a target triple), or an
/// ancestor holding cargo's `.cargo-lock` or a `CACHEDIR.TAG` (a target
/// directory by another name, from `CARGO_TARGET_DIR`). `cargo clean` or
/// the next build deletes or replaces what is there.
pub fn cargo_target_dir(bin: &Path) -> Option<PathBuf> {
    let parts: Vec<_> = bin.parent()?.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let profile_follows = parts[i + 1..]
            .iter()
            .take(2)
            .any(|p| p.as_os_str() == "debug" || p.as_os_str() == "release");
        if part.as_os_str() == "target" && profile_follows {
            return Some(parts[..=i].iter().collect());
        }
    }
    bin.ancestors()
        .skip(1)
        .find(|d| d.join(".cargo-lock").exists() || d.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
}

/// `s` quoted for a POSIX shell when it needs it.
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where the service file names the binary.
fn bin_key(os: Os) -> &'static str {
    match os {
        Os::Linux => "ExecStart=",
        Os::MacOs => "ProgramArguments",
    }
}

/// The warning for a binary inside the cargo target directory `dir`, with
/// the commands that install a copy from a stable place instead.
fn target_dir_warning(os: Os, target: &Target, bin: &Path, dir: &Path) -> String {
    let scope = if target.system { "--system" } else { "--user" };
    let (copy, stable) = if target.system {
        ("sudo cp", "/usr/local/bin/telemetryd")
    } else {
        ("mkdir -p ~/.local/bin && cp", "~/.local/bin/telemetryd")
    };
    let sudo = if target.system { "sudo " } else { "" };
    format!(
        "warning: {key} would run {bin}, inside the cargo target directory {dir}: \
         `cargo clean` or the next build deletes or replaces it, and the service then fails to start.\n\
         Copy the binary to a stable place and install from there, e.g.\n  \
         {copy} {quoted} {stable}\n  \
         {sudo}{stable} install {scope}\n\
         (or keep using this binary to install and pass --bin with the copy's path)",
        key = bin_key(os),
        bin = bin.display(),
        dir = dir.display(),
        quoted = sh_quote(&bin.display().to_string()),
    )
}

/// Where the machine-wide unit cannot see a binary: it runs with
/// `ProtectHome=yes` and `PrivateTmp=yes`, so a `telemetryd` under a home
/// directory or a temporary one is missing to the service, which then
/// fails to start.
fn hidden_from_the_system_unit(os: Os, target: &Target, bin: &Path) -> Option<String> {
    if os != Os::Linux || !target.system {
        return None;
    }
    let hidden = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"]
        .iter()
        .find(|d| bin.starts_with(d))?;
    Some(format!(
        "warning: ExecStart= would run {}, under {hidden}, which the machine-wide unit does not see (ProtectHome=yes, PrivateTmp=yes): the service would fail to start.\n\
         Copy the binary to a system place and install from there, e.g.\n  \
         sudo cp {} /usr/local/bin/telemetryd\n  \
         sudo /usr/local/bin/telemetryd install --system",
        bin.display(),
        sh_quote(&bin.display().to_string()),
    ))
}

/// `path` and those of its ancestors that do not exist, parents first.
fn missing(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Every directory `install` creates, parents first: the plan's own (made
/// even when present, to set their mode and owner) after their missing
/// ancestors, which get the same mode, then the missing parents of the
/// files.
fn dirs_to_create(dirs: &[PlannedDir], files: &[Planned]) -> Vec<PlannedDir> {
    let mut out: Vec<PlannedDir> = Vec::new();
    let mut push = |d: PlannedDir| {
        if !out.iter().any(|o| o.path == d.path) {
            out.push(d);
        }
    };
    let plain = |path, mode| PlannedDir {
        path,
        mode,
        owner: None,
    };
    for d in dirs {
        for path in missing(&d.path).into_iter().filter(|p| *p != d.path) {
            push(plain(path, d.mode));
        }
        push(d.clone());
    }
    for f in files {
        for path in f.path.parent().map(missing).unwrap_or_default() {
            push(plain(path, PARENT_DIR_MODE));
        }
    }
    out
}

fn create_dir(d: &PlannedDir) -> Result<(), InstallError> {
    let io = |what: &'static str| {
        let path = d.path.clone();
        move |source| InstallError::Io { what, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&d.path)
        .map_err(io("create"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(d.mode))
            .map_err(io("set permissions on"))?;
        if let Some((uid, gid)) = d.owner {
            std::os::unix::fs::chown(&d.path, Some(uid), Some(gid))
                .map_err(io("change the owner of"))?;
        }
    }
    Ok(())
}

fn write_file(f: &Planned) -> Result<(), InstallError> {
    let io = |what: &'static str| {
        let path = f.path.clone();
        move |source| InstallError::Io { what, path, source }
    };
    std::fs::write(&f.path, &f.contents).map_err(io("write"))?;
    // An existing file keeps its old mode through write: set it.
    #[cfg(unix)]
    std::fs::set_permissions(
        &f.path,
        std::os::unix::fs::PermissionsExt::from_mode(f.mode),
    )
    .map_err(io("set permissions on"))?;
    Ok(())
}

/// What to do after installing: the commands to run here, or, with
/// `--root`, what a packager does with the staged tree.
fn print_next(os: Os, target: &Target, bin: &Path, next: &[String]) {
    let Some(root) = &target.root else {
        crate::outln!("next, run:");
        for n in next {
            crate::outln!("  {n}");
        }
        return;
    };
    let root = root.display();
    let (staged, was) = if target.dry_run {
        ("would be staged", "would be")
    } else {
        ("staged", "was")
    };
    crate::outln!("{staged} under {root}: nothing outside it {was} changed or enabled.");
    crate::outln!(
        "To ship them, install each file at its path without the {root} prefix; \
         on the target system, enable them with:"
    );
    for n in next {
        crate::outln!("  {n}");
    }
    if os == Os::Linux && target.system {
        crate::outln!(
            "To enable the socket inside the staged tree instead (e.g. for an image):\n  \
             systemctl --root={root} enable telemetryd.socket"
        );
    }
    crate::outln!(
        "{} runs {}; if the binary is elsewhere on the target system, install again with --bin PATH.",
        bin_key(os),
        bin.display()
    );
}

/// Run `install` or `uninstall`, printing what was done.
pub fn run(
    cmd: &Command,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    uid: u32,
) -> Result<(), InstallError> {
    let removal;
    let (target, installing) = match cmd {
        Command::Install(t) => (t, true),
        Command::Uninstall(r) => {
            removal = r.target();
            (&removal, false)
        }
    };
    let bin = match &target.bin {
        Some(b) if b.is_relative() => return Err(InstallError::RelativeBin(b.clone())),
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|source| InstallError::Io {
            what: "find the path of",
            path: PathBuf::from("telemetryd"),
            source,
        })?,
    };
    if cfg!(windows) {
        return windows::run(target, matches!(cmd, Command::Install(_)), &bin, env);
    }
    let os = Os::current();
    let accounts = if os == Os::MacOs && target.system {
        macos_accounts()
    } else {
        None
    };
    let Plan { files, dirs, next } = plan(os, target, &bin, env, uid, accounts)?;
    let dry = target.dry_run;
    let verb = if dry { "would " } else { "" };
    if installing {
        if let Some(dir) = cargo_target_dir(&bin) {
            eprintln!("{}", target_dir_warning(os, target, &bin, &dir));
        } else if let Some(w) = hidden_from_the_system_unit(os, target, &bin) {
            eprintln!("{w}");
        }
        for d in dirs_to_create(&dirs, &files) {
            if !dry {
                create_dir(&d)?;
            }
            let owner = d
                .owner
                .map(|(u, g)| format!(", owner {u}:{g}"))
                .unwrap_or_default();
            crate::outln!("{verb}create {} ({:o}{owner})", d.path.display(), d.mode);
        }
        for f in &files {
            if dry {
                // The whole file, so the dry run shows exactly what a real
                // run writes; a blank line ends it.
                crate::outln!("would write {} ({:o}):", f.path.display(), f.mode);
                crate::out!("{}", f.contents);
                if !f.contents.ends_with('\n') {
                    crate::outln!();
                }
                crate::outln!();
            } else {
                write_file(f)?;
                crate::outln!("write {} ({:o})", f.path.display(), f.mode);
            }
        }
        print_next(os, target, &bin, &next);
        return Ok(());
    }
    for f in &files {
        // What `systemctl enable` linked to it: once the unit is gone,
        // `systemctl disable` cannot remove those on systemd before v256
        // ("unit file does not exist"), and they would dangle.
        // The unit as the target system names it (a staged tree's links
        // point there, not into the tree).
        let named = match &target.root {
            Some(r) => f
                .path
                .strip_prefix(r)
                .map_or_else(|_| f.path.clone(), |p| Path::new("/").join(p)),
            None => f.path.clone(),
        };
        for link in enablement_links(&f.path, &named) {
            if !dry {
                std::fs::remove_file(&link).map_err(|source| InstallError::Io {
                    what: "remove",
                    path: link.clone(),
                    source,
                })?;
            }
            crate::outln!("{verb}remove {}", link.display());
        }
        if f.path.exists() {
            if !dry {
                std::fs::remove_file(&f.path).map_err(|source| InstallError::Io {
                    what: "remove",
                    path: f.path.clone(),
                    source,
                })?;
            }
            crate::outln!("{verb}remove {}", f.path.display());
        }
    }
    // The units are gone from disk but may still be loaded and running:
    // `stop` works on a loaded unit whatever is on disk.
    let stop = match os {
        Os::MacOs if target.system => "launchctl bootout system/dev.telemetryd".to_string(),
        Os::MacOs => "launchctl bootout gui/$(id -u)/dev.telemetryd".to_string(),
        Os::Linux => {
            let user = if target.system { "" } else { " --user" };
            format!(
                "systemctl{user} stop telemetryd.socket telemetryd.service && systemctl{user} daemon-reload"
            )
        }
    };
    match &target.root {
        // Nothing runs from a staged tree; the target system stops it.
        Some(root) => crate::outln!(
            "(staged under {}; on the target system, stop it first with: {stop})",
            root.display()
        ),
        None if os == Os::MacOs => crate::outln!("if it is loaded, also run: {stop}"),
        None => crate::outln!("if it was enabled, also run: {stop}"),
    }
    Ok(())
}

/// `path` as the program of a unit's `ExecStart=`: `%` (a specifier) and
/// `$` (a variable) doubled, and quoted when it holds a space, a quote or a
/// backslash (systemd splits the line at spaces).
fn systemd_exec_path(path: &str) -> String {
    let escaped = path.replace('%', "%%").replace('$', "$$");
    if escaped.contains([' ', '\t', '"', '\'', '\\']) {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// The symbolic links `systemctl enable` made to the unit at `unit`: the
/// entries named like it in the `*.wants`/`*.requires` directories beside
/// it that point to it (as `unit`, or as `named` on a staged tree's target
/// system); none for a file that is not a unit. A link to another copy of
/// the unit (the package's, under /usr/lib) is not this install's to take.
fn enablement_links(unit: &Path, named: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (unit.parent(), unit.file_name()) else {
        return Vec::new();
    };
    let is_unit = name
        .to_str()
        .is_some_and(|n| n.ends_with(".socket") || n.ends_with(".service"));
    if !is_unit {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".wants") || n.ends_with(".requires"))
        })
        .map(|e| e.path().join(name))
        .filter(|l| {
            std::fs::read_link(l).is_ok_and(|to| {
                let to = l.parent().map_or(to.clone(), |d| d.join(&to));
                to == unit || to == named
            })
        })
        .collect();
    links.sort();
    links
}

// The systemd and launchd files: Unix paths (Windows' plan is tested in
// windows.rs, on every platform).
#[cfg(all(test, unix))]
mod tests;
