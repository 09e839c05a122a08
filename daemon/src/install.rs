//! `telemetryd install` / `telemetryd uninstall`: write or remove the
//! service-manager files for this OS — systemd units on Linux, a launchd
//! plist on macOS — with the real binary path filled in.
//!
//! The templates live in `systemd/` and `launchd/` at the top of the
//! repository (and are built into the binary), so what is reviewed there is
//! exactly what gets installed. `--root` stages into a directory instead of
//! `/` (like `DESTDIR`), for packagers.

use std::path::{Path, PathBuf};

/// `systemd/user/telemetryd.socket`.
pub const USER_SOCKET: &str = include_str!("../../systemd/user/telemetryd.socket");
/// `systemd/user/telemetryd.service`.
pub const USER_SERVICE: &str = include_str!("../../systemd/user/telemetryd.service");
/// `systemd/system/telemetryd.socket`.
pub const SYSTEM_SOCKET: &str = include_str!("../../systemd/system/telemetryd.socket");
/// `systemd/system/telemetryd.service`.
pub const SYSTEM_SERVICE: &str = include_str!("../../systemd/system/telemetryd.service");
/// `systemd/system/telemetry.sysusers.conf`.
pub const SYSUSERS: &str = include_str!("../../systemd/system/telemetry.sysusers.conf");
/// `launchd/dev.telemetryd.agent.plist`.
pub const LAUNCH_AGENT: &str = include_str!("../../launchd/dev.telemetryd.agent.plist");
/// `launchd/dev.telemetryd.daemon.plist`.
pub const LAUNCH_DAEMON: &str = include_str!("../../launchd/dev.telemetryd.daemon.plist");

/// The binary path the templates carry until installed.
const TEMPLATE_BIN: &str = "/usr/local/bin/telemetryd";

/// `telemetryd install|uninstall`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the systemd units (Linux) or launchd plist (macOS) for this binary.
    Install(Target),
    /// Remove what `install` wrote.
    Uninstall(Target),
}

/// Which installation.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// A per-user service (systemctl --user / a LaunchAgent).
    #[arg(long, required_unless_present = "system", conflicts_with = "system")]
    pub user: bool,
    /// One machine-wide service (needs root).
    #[arg(long)]
    pub system: bool,
    /// Stage under this directory instead of / (for packaging).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The telemetryd binary the service runs. Default: this binary.
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Print what would be written or removed, change nothing.
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
}

/// One file to install: its final path and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Where it goes (already under `--root`).
    pub path: PathBuf,
    /// What it holds.
    pub contents: String,
}

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
            files: vec![Planned { path, contents }],
            dirs,
            next: vec![next],
        });
    }
    let with_bin = |t: &str| t.replace(TEMPLATE_BIN, &bin_s);
    if target.system {
        let unit_dir = Path::new("/etc/systemd/system");
        let files = vec![
            Planned {
                path: under(&target.root, &unit_dir.join("telemetryd.socket")),
                contents: SYSTEM_SOCKET.to_string(),
            },
            Planned {
                path: under(&target.root, &unit_dir.join("telemetryd.service")),
                contents: with_bin(SYSTEM_SERVICE),
            },
            Planned {
                path: under(&target.root, Path::new("/etc/sysusers.d/telemetry.conf")),
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
            contents: USER_SOCKET.to_string(),
        },
        Planned {
            path: under(&target.root, &unit_dir.join("telemetryd.service")),
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

fn create_dir(d: &PlannedDir) -> Result<(), InstallError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |what: &'static str| {
        let path = d.path.clone();
        move |source| InstallError::Io { what, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(d.mode)
        .create(&d.path)
        .map_err(io("create"))?;
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(d.mode))
        .map_err(io("set permissions on"))?;
    if let Some((uid, gid)) = d.owner {
        std::os::unix::fs::chown(&d.path, Some(uid), Some(gid))
            .map_err(io("change the owner of"))?;
    }
    Ok(())
}

/// Run `install` or `uninstall`, printing what was done.
pub fn run(
    cmd: &Command,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    uid: u32,
) -> Result<(), InstallError> {
    let (target, installing) = match cmd {
        Command::Install(t) => (t, true),
        Command::Uninstall(t) => (t, false),
    };
    let bin = match &target.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|source| InstallError::Io {
            what: "find the path of",
            path: PathBuf::from("telemetryd"),
            source,
        })?,
    };
    let os = Os::current();
    let accounts = if os == Os::MacOs && target.system {
        macos_accounts()
    } else {
        None
    };
    let Plan { files, dirs, next } = plan(os, target, &bin, env, uid, accounts)?;
    let verb = if target.dry_run { "would " } else { "" };
    if installing {
        for d in &dirs {
            if !target.dry_run {
                create_dir(d)?;
            }
            println!("{verb}create {} ({:o})", d.path.display(), d.mode);
        }
    }
    for f in &files {
        if installing {
            if !target.dry_run {
                if let Some(dir) = f.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| InstallError::Io {
                        what: "create",
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                std::fs::write(&f.path, &f.contents).map_err(|source| InstallError::Io {
                    what: "write",
                    path: f.path.clone(),
                    source,
                })?;
            }
            println!("{verb}write {}", f.path.display());
        } else if f.path.exists() {
            if !target.dry_run {
                std::fs::remove_file(&f.path).map_err(|source| InstallError::Io {
                    what: "remove",
                    path: f.path.clone(),
                    source,
                })?;
            }
            println!("{verb}remove {}", f.path.display());
        }
    }
    if installing {
        println!("next, run:");
        for n in &next {
            println!("  {n}");
        }
    } else if Os::current() == Os::MacOs {
        println!(
            "if it is loaded, also run: launchctl bootout {}",
            if target.system {
                "system/dev.telemetryd"
            } else {
                "gui/$(id -u)/dev.telemetryd"
            }
        );
    } else {
        let user = if target.system { "" } else { " --user" };
        println!("if it was enabled, also run: systemctl{user} disable --now telemetryd.socket telemetryd.service");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(system: bool, root: &Path) -> Target {
        Target {
            user: !system,
            system,
            root: Some(root.to_path_buf()),
            bin: None,
            dry_run: false,
        }
    }

    fn mac_env(k: &str) -> Option<std::ffi::OsString> {
        match k {
            "HOME" => Some("/Users/a".into()),
            "TMPDIR" => Some("/var/folders/x/T".into()),
            _ => None,
        }
    }

    #[test]
    fn launch_agent_gets_real_paths_and_the_clients_default_socket() {
        let bin = Path::new("/opt/homebrew/bin/telemetryd");
        let plan = plan(
            Os::MacOs,
            &target(false, Path::new("/")),
            bin,
            mac_env,
            501,
            None,
        )
        .unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(
            plan.files[0].path,
            PathBuf::from("/Users/a/Library/LaunchAgents/dev.telemetryd.plist")
        );
        let c = &plan.files[0].contents;
        for placeholder in ["@TELEMETRYD@", "@SOCKET@", "@STATE_DIR@", "@LOG_DIR@"] {
            assert!(!c.contains(placeholder), "{placeholder} left in: {c}");
        }
        assert!(c.contains("<string>/opt/homebrew/bin/telemetryd</string>"));
        // launchd owns the socket where clients look for it by default.
        let socket = telemetry_proto::paths::default_socket_path_for(true, mac_env, 501);
        assert!(
            c.contains(&format!("<string>{}</string>", socket.display())),
            "{c}"
        );
        // ...and its directory exists, since launchd does not create it.
        assert!(plan
            .dirs
            .iter()
            .any(|d| Some(d.path.as_path()) == socket.parent() && d.mode == 0o700));
        assert!(plan.next[0].starts_with("launchctl bootstrap gui/501 "));
    }

    #[test]
    fn launch_daemon_needs_its_accounts_and_gets_the_socket_group() {
        let bin = Path::new("/usr/local/bin/telemetryd");
        let err = plan(
            Os::MacOs,
            &target(true, Path::new("/")),
            bin,
            mac_env,
            0,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("dscl"), "{err}");
        let plan = plan(
            Os::MacOs,
            &target(true, Path::new("/")),
            bin,
            mac_env,
            0,
            Some((401, 402)),
        )
        .unwrap();
        let c = &plan.files[0].contents;
        assert!(
            c.contains("<key>SockPathGroup</key>\n            <integer>402</integer>"),
            "{c}"
        );
        assert!(c.contains("<string>/var/run/telemetryd.sock</string>"));
        assert_eq!(
            plan.dirs,
            vec![PlannedDir {
                path: PathBuf::from("/var/db/telemetry"),
                mode: 0o700,
                owner: Some((401, 402))
            }]
        );
    }

    #[test]
    fn user_units_go_to_the_config_dir_with_the_real_binary() {
        let env = |k: &str| (k == "HOME").then(|| std::ffi::OsString::from("/home/u"));
        let bin = Path::new("/opt/t/telemetryd");
        let plan = plan(
            Os::Linux,
            &target(false, Path::new("/stage")),
            bin,
            env,
            1000,
            None,
        )
        .unwrap();
        let paths: Vec<_> = plan
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            vec![
                "/stage/home/u/.config/systemd/user/telemetryd.socket",
                "/stage/home/u/.config/systemd/user/telemetryd.service"
            ]
        );
        assert!(plan.files[1]
            .contents
            .contains("ExecStart=/opt/t/telemetryd\n"));
        assert!(!plan.files[1].contents.contains(TEMPLATE_BIN));
        assert!(plan
            .next
            .iter()
            .any(|n| n.contains("enable --now telemetryd.socket")));
    }

    #[test]
    fn system_units_and_sysusers() {
        let bin = Path::new("/usr/bin/telemetryd");
        let plan = plan(
            Os::Linux,
            &target(true, Path::new("/s")),
            bin,
            |_| None,
            0,
            None,
        )
        .unwrap();
        assert_eq!(plan.files.len(), 3);
        assert!(plan
            .files
            .iter()
            .any(|f| f.path.ends_with("etc/sysusers.d/telemetry.conf")));
        assert!(plan
            .files
            .iter()
            .any(|f| f.contents.contains("SocketGroup=telemetry")));
    }
}
