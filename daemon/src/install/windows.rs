//! `telemetryd install` / `uninstall` on Windows.
//!
//! - `--system`: one machine-wide daemon as a Windows service (automatic
//!   start, LocalSystem, restarted on failure) serving
//!   `\\.\pipe\telemetryd`, with its state in `%ProgramData%\telemetry\state`
//!   (a protected DACL: LocalSystem and the administrators only, not the
//!   readable one `%ProgramData%` hands down). Start, stop and status are
//!   the service control manager's: `sc.exe start|stop|query telemetryd`.
//! - `--user`: this user's daemon, started at each logon by the `Run` value
//!   `telemetryd`, which runs `telemetryctl start` (the same detached start
//!   a client makes, without the user's cloud credentials).
//!
//! The plan is plain data, built and tested on every platform; applying it
//! (the registry, the service control manager) is Windows-only. Neither
//! can be staged into a directory, so `--root DIR` writes what a packager
//! runs instead: `telemetryd-service.cmd` (mkdir, icacls, sc.exe) or
//! `telemetryd-logon.reg` (for `reg import`).

use super::{InstallError, Target};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use telemetry_platform::cmdline::{quote_windows_arg as quote_arg, windows_command_line};
use telemetry_proto::paths::MACHINE_PIPE_NAME;

/// The service's name for the service control manager.
pub const SERVICE_NAME: &str = "telemetryd";
/// The name the Services console shows.
pub const SERVICE_DISPLAY_NAME: &str = "telemetryd (anonymous CLI usage telemetry)";
/// The Services console's description.
pub const SERVICE_DESCRIPTION: &str = "Keeps the opt-in, anonymous usage events of command-line tools and uploads them in batches. Nothing is collected for a tool until its user opts in.";
/// The value under `HKCU\Software\Microsoft\Windows\CurrentVersion\Run`.
pub const RUN_VALUE: &str = "telemetryd";
/// Who may do what with a machine-wide path, as SDDL (for the Win32 calls
/// `install` makes) and as `icacls` arguments (for the staged script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acl {
    /// Owner and protected DACL.
    pub sddl: &'static str,
    /// The same for `icacls PATH ...` (one line each).
    pub icacls: &'static [&'static str],
}

/// `%ProgramData%\telemetry` and `catalog`: owned by the administrators;
/// LocalSystem and the administrators may change them, users only read
/// (the ACL `%ProgramData%` hands down would let every user create files
/// there: a `machine-consent` that opts everyone in, or a manifest that
/// sends everyone's events to their bucket).
pub const BASE_ACL: Acl = Acl {
    sddl: "O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)",
    icacls: &[
        r#"/inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" "*S-1-5-32-545:(OI)(CI)RX""#,
        r#"/setowner "*S-1-5-32-544""#,
    ],
};
/// The state directory: LocalSystem (the service) and the administrators
/// only; no one else may read the events.
pub const STATE_ACL: Acl = Acl {
    sddl: "O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)",
    icacls: &[
        r#"/inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F""#,
        r#"/setowner "*S-1-5-32-544""#,
    ],
};
/// The settings files (config, consent): as [`BASE_ACL`], for one file.
pub const FILE_ACL: Acl = Acl {
    sddl: "O:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;0x1200a9;;;BU)",
    icacls: &[
        r#"/inheritance:r /grant:r "*S-1-5-18:F" "*S-1-5-32-544:F" "*S-1-5-32-545:RX""#,
        r#"/setowner "*S-1-5-32-544""#,
    ],
};
/// What a new machine-wide config file says.
const CONFIG_TEMPLATE: &str = "# telemetryd, machine-wide (the Windows service). Keys as in the README's\n# configuration table; restart the service after a change:\n#   sc.exe stop telemetryd && sc.exe start telemetryd\n";

/// Where the machine-wide daemon keeps its files: `%ProgramData%\telemetry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePaths {
    /// `%ProgramData%\telemetry`.
    pub base: PathBuf,
    /// The events and the database (private).
    pub state: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The product manifests.
    pub catalog: PathBuf,
    /// The machine owner's opt-in, per product (`telemetryctl consent` run
    /// elevated with `TELEMETRY_CONSENT_FILE` set to it).
    pub consent: PathBuf,
}

impl MachinePaths {
    /// From `%ProgramData%` (default `C:\ProgramData`).
    pub fn from_env(env: &impl Fn(&str) -> Option<OsString>) -> MachinePaths {
        let data = env("ProgramData")
            .or_else(|| env("PROGRAMDATA"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
        let base = win_join(&data, "telemetry");
        MachinePaths {
            state: win_join(&base, "state"),
            config: win_join(&base, "config.toml"),
            catalog: win_join(&base, "catalog"),
            consent: win_join(&base, "machine-consent"),
            base,
        }
    }
}

/// `dir\name` with a Windows separator on every platform (the plan is
/// built and tested on Linux too).
fn win_join(dir: &Path, name: &str) -> PathBuf {
    let d = dir.to_string_lossy();
    let d = d.trim_end_matches(['\\', '/']);
    PathBuf::from(format!("{d}\\{name}"))
}

/// One thing `install` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a directory and give it `acl`, also when it exists.
    Dir {
        /// Where.
        path: PathBuf,
        /// Its owner and DACL.
        acl: Acl,
    },
    /// Write a file unless it exists (what an administrator edited stays),
    /// and give it `acl` either way.
    File {
        /// Where.
        path: PathBuf,
        /// What a new one says.
        contents: String,
        /// Its owner and DACL.
        acl: Acl,
    },
    /// Give `acl` to a file, if it exists (one made before the install
    /// keeps whatever ACL its maker chose otherwise).
    Secure {
        /// Which.
        path: PathBuf,
        /// Its owner and DACL.
        acl: Acl,
    },
    /// Register (or update) the service.
    Service {
        /// The telemetryd binary.
        bin: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Run `command` at each logon of this user.
    RunAtLogon {
        /// The command line.
        command: String,
    },
}

/// Everything `install` does on Windows, and what to run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Commands for the user to run next.
    pub next: Vec<String>,
}

/// `bin` and `args` as one Windows command line.
pub fn command_line(bin: &Path, args: &[String]) -> String {
    windows_command_line(&bin.to_string_lossy(), args.iter().map(String::as_str))
}

/// The service's arguments: machine-wide paths, passed explicitly so that
/// nothing depends on LocalSystem's environment.
pub fn service_args(paths: &MachinePaths) -> Vec<String> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        "--service".into(),
        "--socket".into(),
        MACHINE_PIPE_NAME.into(),
        "--state-dir".into(),
        s(&paths.state),
        "--config".into(),
        s(&paths.config),
        "--catalog-dir".into(),
        s(&paths.catalog),
        "--consent-file".into(),
        s(&paths.consent),
    ]
}

/// `telemetryctl.exe` next to `bin`: what the logon value runs.
pub fn telemetryctl_beside(bin: &Path) -> PathBuf {
    let b = bin.to_string_lossy();
    match b.rfind(['\\', '/']) {
        Some(i) => PathBuf::from(format!("{}telemetryctl.exe", &b[..=i])),
        None => PathBuf::from("telemetryctl.exe"),
    }
}

/// What `install` does for `target`, the daemon being `bin`.
pub fn plan(target: &Target, bin: &Path, env: impl Fn(&str) -> Option<OsString>) -> Plan {
    if target.system {
        let paths = MachinePaths::from_env(&env);
        let system_consent = win_join(&paths.base, "consent");
        let steps = vec![
            Step::Dir {
                path: paths.base.clone(),
                acl: BASE_ACL,
            },
            Step::Dir {
                path: paths.state.clone(),
                acl: STATE_ACL,
            },
            Step::Dir {
                path: paths.catalog.clone(),
                acl: BASE_ACL,
            },
            Step::File {
                path: paths.config.clone(),
                contents: CONFIG_TEMPLATE.to_string(),
                acl: FILE_ACL,
            },
            Step::Secure {
                path: paths.consent.clone(),
                acl: FILE_ACL,
            },
            Step::Secure {
                path: system_consent,
                acl: FILE_ACL,
            },
            Step::Service {
                bin: bin.to_path_buf(),
                args: service_args(&paths),
            },
        ];
        let next = vec![
            format!("sc.exe start {SERVICE_NAME}"),
            format!(
                "setx /M TELEMETRY_SOCKET {MACHINE_PIPE_NAME}   (every user's CLIs then use the machine-wide daemon)"
            ),
            format!("telemetryctl --socket {MACHINE_PIPE_NAME} status"),
        ];
        return Plan { steps, next };
    }
    let ctl = telemetryctl_beside(bin);
    let command = command_line(&ctl, &["start".to_string()]);
    Plan {
        steps: vec![Step::RunAtLogon { command }],
        next: vec![format!(
            "{} start   (now; from the next logon on, Windows runs it)",
            quote_arg(&ctl.to_string_lossy())
        )],
    }
}

/// One line per step, as `install` prints it (`verb` is "" or "would ").
pub fn describe(step: &Step, verb: &str) -> String {
    match step {
        Step::Dir { path, acl } => {
            format!("{verb}create {} (owner and DACL {})", path.display(), acl.sddl)
        }
        Step::File {
            path,
            contents,
            acl,
        } => format!(
            "{verb}write {} unless it exists (owner and DACL {}):\n{contents}",
            path.display(),
            acl.sddl
        ),
        Step::Secure { path, acl } => format!(
            "{verb}set the owner and DACL of {}, if it exists, to {}",
            path.display(),
            acl.sddl
        ),
        Step::Service { bin, args } => format!(
            "{verb}register the service {SERVICE_NAME} (automatic start, as LocalSystem, restarted on failure):\n  {}",
            command_line(bin, args)
        ),
        Step::RunAtLogon { command } => format!(
            r"{verb}set HKEY_CURRENT_USER\{}\{RUN_VALUE} = {command}",
            RUN_KEY
        ),
    }
}

/// `HKCU\` + this: the values Windows runs at each logon.
pub const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";

/// For `--root`: the files a packager runs on the target system instead of
/// what `install` would do there, with their names.
pub fn staged(plan: &Plan, root: &Path) -> Vec<(PathBuf, String)> {
    let mut cmd = String::new();
    let mut reg = String::new();
    for step in &plan.steps {
        match step {
            Step::Dir { path, acl } => {
                let p = path.display();
                cmd.push_str(&format!("if not exist \"{p}\" mkdir \"{p}\"\r\n"));
                icacls(&mut cmd, path, acl);
            }
            Step::File { path, acl, .. } => {
                // Empty: the template's text is for `install` to write;
                // cmd's echo would need every ( ) & ^ escaped.
                let p = path.display();
                cmd.push_str(&format!("if not exist \"{p}\" type nul > \"{p}\"\r\n"));
                icacls(&mut cmd, path, acl);
            }
            Step::Secure { path, acl } => {
                let p = path.display();
                cmd.push_str(&format!("if exist \"{p}\" (\r\n"));
                icacls(&mut cmd, path, acl);
                cmd.push_str(")\r\n");
            }
            Step::Service { bin, args } => {
                // sc.exe splits its own command line as the C runtime
                // does: the service's whole command line is one argument.
                let line = command_line(bin, args);
                cmd.push_str(&format!(
                    "sc.exe create {SERVICE_NAME} binPath= {} start= auto DisplayName= \"{SERVICE_DISPLAY_NAME}\"\r\n",
                    quote_arg(&line)
                ));
                cmd.push_str(&format!(
                    "sc.exe description {SERVICE_NAME} \"{SERVICE_DESCRIPTION}\"\r\n"
                ));
                cmd.push_str(&format!(
                    "sc.exe failure {SERVICE_NAME} reset= 86400 actions= restart/2000/restart/2000/restart/60000\r\n"
                ));
                // Also when it stops with an error, not only on a crash.
                cmd.push_str(&format!("sc.exe failureflag {SERVICE_NAME} 1\r\n"));
            }
            Step::RunAtLogon { command } => {
                reg.push_str("Windows Registry Editor Version 5.00\r\n\r\n");
                reg.push_str(&format!("[HKEY_CURRENT_USER\\{RUN_KEY}]\r\n"));
                let escaped = command.replace('\\', "\\\\").replace('"', "\\\"");
                reg.push_str(&format!("\"{RUN_VALUE}\"=\"{escaped}\"\r\n"));
            }
        }
    }
    let mut out = Vec::new();
    if !cmd.is_empty() {
        let header = "@echo off\r\nrem Written by `telemetryd install --system --root`: registers the\r\nrem machine-wide telemetryd service. Run it elevated on the target system.\r\nchcp 65001 >nul\r\n";
        out.push((
            root.join("telemetryd-service.cmd"),
            format!("{header}{cmd}"),
        ));
    }
    if !reg.is_empty() {
        out.push((root.join("telemetryd-logon.reg"), reg));
    }
    out
}

/// `icacls` lines giving `path` the owner and DACL of `acl`.
fn icacls(cmd: &mut String, path: &Path, acl: &Acl) {
    for args in acl.icacls {
        cmd.push_str(&format!("icacls \"{}\" {args} >nul\r\n", path.display()));
    }
}

/// A staged file's bytes: `.reg` files are UTF-16LE with a byte-order mark
/// (what `reg import` expects for non-ASCII paths), the script UTF-8 (it
/// switches its code page to 65001 first).
pub fn staged_bytes(path: &Path, contents: &str) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "reg") {
        let mut out = vec![0xFF, 0xFE];
        out.extend(contents.encode_utf16().flat_map(u16::to_le_bytes));
        out
    } else {
        contents.as_bytes().to_vec()
    }
}

/// The staged files' names for `target` (what `uninstall --root` removes).
fn staged_names(target: &Target) -> [&'static str; 1] {
    if target.system {
        ["telemetryd-service.cmd"]
    } else {
        ["telemetryd-logon.reg"]
    }
}

/// `install` or `uninstall` on Windows (or staged for it, with `--root`).
pub fn run(
    target: &Target,
    installing: bool,
    bin: &Path,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<(), InstallError> {
    let dry = target.dry_run;
    let verb = if dry { "would " } else { "" };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { what, path, source }
    };
    if let Some(root) = &target.root {
        if installing {
            for (path, contents) in staged(&plan(target, bin, &env), root) {
                if dry {
                    crate::outln!(
                        "would write {}:\n{}",
                        path.display(),
                        contents.replace("\r\n", "\n")
                    );
                } else {
                    std::fs::create_dir_all(root).map_err(io("create", root))?;
                    std::fs::write(&path, staged_bytes(&path, &contents))
                        .map_err(io("write", &path))?;
                    crate::outln!("write {}", path.display());
                }
            }
            crate::outln!(
                "{} under {}: nothing on this machine {} registered. On the target system, run the .cmd elevated, or `reg import` the .reg as the user.",
                if dry { "would be staged" } else { "staged" },
                root.display(),
                if dry { "would be" } else { "was" },
            );
        } else {
            for name in staged_names(target) {
                let path = root.join(name);
                if path.exists() {
                    if !dry {
                        std::fs::remove_file(&path).map_err(io("remove", &path))?;
                    }
                    crate::outln!("{verb}remove {}", path.display());
                }
            }
        }
        return Ok(());
    }
    if installing {
        let plan = plan(target, bin, &env);
        if target.system {
            if let Some(warning) = service_bin_warning(bin, &env) {
                eprintln!("{warning}");
            }
        }
        if !dry {
            check_can_apply(&plan, bin)?;
        }
        for step in &plan.steps {
            if !dry {
                apply(step)?;
            }
            crate::outln!("{}", describe(step, verb));
        }
        crate::outln!("next, run:");
        for n in &plan.next {
            crate::outln!("  {n}");
        }
        return Ok(());
    }
    if target.system {
        remove_service(dry)?;
        let paths = MachinePaths::from_env(&env);
        crate::outln!(
            "kept {} (events not yet uploaded, the machine's settings); delete it to forget them",
            paths.base.display()
        );
    } else {
        remove_run_value(dry)?;
        crate::outln!("a daemon running now exits by itself after 5 idle minutes; none starts at logon any more");
    }
    Ok(())
}

/// A warning when the service would run `bin` from outside the system's
/// program directories: whoever may change that directory may replace the
/// binary, and it runs as LocalSystem.
pub fn service_bin_warning(bin: &Path, env: &impl Fn(&str) -> Option<OsString>) -> Option<String> {
    let b = bin.to_string_lossy().to_lowercase();
    let safe = [
        "ProgramFiles",
        "ProgramFiles(x86)",
        "ProgramW6432",
        "SystemRoot",
    ]
    .iter()
    .filter_map(|k| env(k))
    .map(|d| d.to_string_lossy().trim_end_matches('\\').to_lowercase() + "\\")
    .any(|d| d.len() > 1 && b.starts_with(&d));
    (!safe).then(|| {
        format!(
            "warning: the service would run {} as LocalSystem; whoever may change that directory may replace it. \
             Copy telemetryd.exe and telemetryctl.exe to %ProgramFiles%\\telemetry and install from there (or pass --bin with that path).",
            bin.display()
        )
    })
}

/// Before changing anything: what the plan runs must exist.
fn check_can_apply(plan: &Plan, bin: &Path) -> Result<(), InstallError> {
    for step in &plan.steps {
        if let Step::RunAtLogon { .. } = step {
            // The logon value runs telemetryctl.exe beside the daemon.
            let ctl = telemetryctl_beside(bin);
            if !ctl.exists() {
                return Err(InstallError::Unknown(format!(
                    "{} is missing: the logon start runs telemetryctl.exe from beside telemetryd.exe; put both in one directory",
                    ctl.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn apply(step: &Step) -> Result<(), InstallError> {
    scm::apply(step)
}

#[cfg(windows)]
fn remove_service(dry: bool) -> Result<(), InstallError> {
    scm::remove_service(dry)
}

#[cfg(windows)]
fn remove_run_value(dry: bool) -> Result<(), InstallError> {
    let key = format!(r"HKEY_CURRENT_USER\{RUN_KEY}\{RUN_VALUE}");
    let there = telemetry_platform::windows::registry::run_value(RUN_VALUE).is_some();
    if !there {
        crate::outln!("{key} is not set: nothing to remove");
        return Ok(());
    }
    if !dry {
        telemetry_platform::windows::registry::delete_run_value(RUN_VALUE).map_err(|source| {
            InstallError::Io {
                what: "delete the registry value",
                path: PathBuf::from(&key),
                source,
            }
        })?;
    }
    crate::outln!("{}remove {key}", if dry { "would " } else { "" });
    Ok(())
}

#[cfg(not(windows))]
fn not_here() -> InstallError {
    InstallError::Unknown(
        "the Windows service and logon start are made on Windows; here, pass --root DIR to stage the files a Windows package runs".into(),
    )
}

#[cfg(not(windows))]
fn apply(_step: &Step) -> Result<(), InstallError> {
    Err(not_here())
}

#[cfg(not(windows))]
fn remove_service(_dry: bool) -> Result<(), InstallError> {
    Err(not_here())
}

#[cfg(not(windows))]
fn remove_run_value(_dry: bool) -> Result<(), InstallError> {
    Err(not_here())
}

/// The service control manager and the registry, for real.
#[cfg(windows)]
mod scm {
    use super::*;
    use std::time::{Duration, Instant};
    use telemetry_platform::windows::security::{create_dir_with_sddl, secure_path};
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl,
        ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType,
        ServiceState, ServiceType,
    };
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    /// `e` as the user needs it: access denied means "not elevated".
    fn scm_error(what: &str, e: windows_service::Error) -> InstallError {
        let denied =
            matches!(&e, windows_service::Error::Winapi(io) if io.raw_os_error() == Some(5));
        let hint = if denied {
            " (access denied: run it from an elevated prompt, \"Run as administrator\")"
        } else {
            ""
        };
        // The crate's message ("IO error in winapi call") hides the OS's.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        InstallError::Unknown(format!(
            "cannot {what} the service {SERVICE_NAME}: {e}{cause}{hint}"
        ))
    }

    fn os_code(e: &windows_service::Error) -> Option<i32> {
        match e {
            windows_service::Error::Winapi(io) => io.raw_os_error(),
            _ => None,
        }
    }

    pub fn apply(step: &Step) -> Result<(), InstallError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| InstallError::Io { what, path, source }
        };
        match step {
            Step::Dir { path, acl } => create_dir_with_sddl(path, acl.sddl)
                .map_err(io("create (with its owner and DACL)", path)),
            Step::File {
                path,
                contents,
                acl,
            } => {
                if !path.exists() {
                    std::fs::write(path, contents).map_err(io("write", path))?;
                }
                secure_path(path, acl.sddl).map_err(io("set the owner and DACL of", path))
            }
            Step::Secure { path, acl } => {
                if !path.exists() {
                    return Ok(());
                }
                secure_path(path, acl.sddl).map_err(io("set the owner and DACL of", path))
            }
            Step::Service { bin, args } => register(bin, args),
            Step::RunAtLogon { command } => telemetry_platform::windows::registry::set_run_value(
                RUN_VALUE, command,
            )
            .map_err(|source| InstallError::Io {
                what: "set the registry value",
                path: PathBuf::from(format!(r"HKEY_CURRENT_USER\{RUN_KEY}\{RUN_VALUE}")),
                source,
            }),
        }
    }

    fn register(bin: &Path, args: &[String]) -> Result<(), InstallError> {
        let manager = ServiceManager::local_computer(
            None::<&str>,
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        )
        .map_err(|e| scm_error("connect to the service control manager for", e))?;
        let info = ServiceInfo {
            name: SERVICE_NAME.into(),
            display_name: SERVICE_DISPLAY_NAME.into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: bin.to_path_buf(),
            launch_arguments: args.iter().map(OsString::from).collect(),
            dependencies: Vec::new(),
            // LocalSystem, whose pipe clients accept (see the client's
            // transport) and who may read an elevated client's token.
            account_name: None,
            account_password: None,
        };
        let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG;
        let service = match manager.create_service(&info, access) {
            Ok(s) => s,
            // Installed before: update it to this binary and these paths.
            Err(e) if os_code(&e) == Some(1073 /* ERROR_SERVICE_EXISTS */) => {
                let s = manager
                    .open_service(SERVICE_NAME, access)
                    .map_err(|e| scm_error("open", e))?;
                s.change_config(&info).map_err(|e| scm_error("update", e))?;
                s
            }
            Err(e) => return Err(scm_error("create", e)),
        };
        service
            .set_description(SERVICE_DESCRIPTION)
            .map_err(|e| scm_error("describe", e))?;
        // Restarted also when it stops with an error, not only on a crash.
        // Not every service manager has the flag (wine's has not): the
        // service is usable without it.
        if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
            eprintln!(
                "warning: {}; it is restarted after a crash, not after an error exit",
                scm_error("ask for restarts after an error exit of", e)
            );
        }
        let restart = |secs| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(secs),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(2), restart(2), restart(60)]),
            })
            .map_err(|e| scm_error("set the restart policy of", e))
    }

    pub fn remove_service(dry: bool) -> Result<(), InstallError> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .map_err(|e| scm_error("connect to the service control manager for", e))?;
        let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
        let service = match manager.open_service(SERVICE_NAME, access) {
            Ok(s) => s,
            Err(e) if os_code(&e) == Some(1060 /* ERROR_SERVICE_DOES_NOT_EXIST */) => {
                crate::outln!("the service {SERVICE_NAME} is not installed: nothing to remove");
                return Ok(());
            }
            Err(e) => return Err(scm_error("open", e)),
        };
        let verb = if dry { "would " } else { "" };
        let status = service.query_status().map_err(|e| scm_error("query", e))?;
        if status.current_state != ServiceState::Stopped {
            crate::outln!("{verb}stop the service {SERVICE_NAME}");
            if !dry {
                if status.current_state != ServiceState::StopPending {
                    service.stop().map_err(|e| scm_error("stop", e))?;
                }
                // Its shutdown may make a last upload (shutdown_timeout).
                let deadline = Instant::now() + Duration::from_secs(60);
                while service
                    .query_status()
                    .map_err(|e| scm_error("query", e))?
                    .current_state
                    != ServiceState::Stopped
                {
                    if Instant::now() > deadline {
                        return Err(InstallError::Unknown(format!(
                            "the service {SERVICE_NAME} did not stop within 60 s; stop it (sc.exe stop {SERVICE_NAME}) and try again"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        if !dry {
            service.delete().map_err(|e| scm_error("delete", e))?;
        }
        crate::outln!("{verb}remove the service {SERVICE_NAME}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(system: bool) -> Target {
        Target {
            user: !system,
            system,
            root: None,
            bin: None,
            dry_run: false,
        }
    }

    fn env(k: &str) -> Option<OsString> {
        (k == "ProgramData").then(|| r"D:\Data".into())
    }

    #[test]
    fn the_service_runs_machine_wide_on_the_machine_pipe() {
        let bin = PathBuf::from(r"C:\Program Files\telemetry\telemetryd.exe");
        let plan = plan(&target(true), &bin, env);
        let state = PathBuf::from(r"D:\Data\telemetry\state");
        assert!(plan.steps.contains(&Step::Dir {
            path: state.clone(),
            acl: STATE_ACL
        }));
        // Users may read the settings, not write them.
        assert!(plan.steps.contains(&Step::Dir {
            path: PathBuf::from(r"D:\Data\telemetry"),
            acl: BASE_ACL
        }));
        let Some(Step::Service { bin: b, args }) = plan.steps.last() else {
            panic!("the service is registered last, after its directories: {plan:?}");
        };
        assert_eq!(b, &bin);
        let line = command_line(b, args);
        assert!(
            line.starts_with(r#""C:\Program Files\telemetry\telemetryd.exe" --service --socket \\.\pipe\telemetryd"#),
            "{line}"
        );
        assert!(
            line.contains(r"--state-dir D:\Data\telemetry\state"),
            "{line}"
        );
        assert!(line.contains(r"--consent-file D:\Data\telemetry\machine-consent"));
        assert!(plan.next[0].starts_with("sc.exe start telemetryd"));
    }

    #[test]
    fn a_service_binary_outside_program_files_is_warned_about() {
        let env = |k: &str| (k == "ProgramFiles").then(|| OsString::from(r"C:\Program Files"));
        let safe = Path::new(r"C:\Program Files\telemetry\telemetryd.exe");
        assert_eq!(service_bin_warning(safe, &env), None);
        let unsafe_ = Path::new(r"C:\Users\a\cargo\target\debug\telemetryd.exe");
        let w = service_bin_warning(unsafe_, &env).expect("a warning");
        assert!(w.contains("%ProgramFiles%"), "{w}");
        // A sibling whose name starts the same is not inside.
        let sibling = Path::new(r"C:\Program Files Evil\telemetryd.exe");
        assert!(service_bin_warning(sibling, &env).is_some());
    }

    #[test]
    fn the_user_daemon_starts_at_logon_through_telemetryctl() {
        let bin = PathBuf::from(r"C:\Users\a b\bin\telemetryd.exe");
        let plan = plan(&target(false), &bin, env);
        assert_eq!(
            plan.steps,
            vec![Step::RunAtLogon {
                command: r#""C:\Users\a b\bin\telemetryctl.exe" start"#.into()
            }]
        );
    }

    #[test]
    fn staging_writes_a_script_and_a_reg_file() {
        let bin = PathBuf::from(r"C:\t\telemetryd.exe");
        let root = Path::new("/stage");
        let files = staged(&plan(&target(true), &bin, env), root);
        assert_eq!(files.len(), 1);
        let (path, cmd) = &files[0];
        assert_eq!(path, &root.join("telemetryd-service.cmd"));
        assert!(cmd.contains(
            r#"sc.exe create telemetryd binPath= "C:\t\telemetryd.exe --service --socket \\.\pipe\telemetryd"#
        ), "{cmd}");
        assert!(
            cmd.contains(r#"icacls "D:\Data\telemetry\state" /inheritance:r"#),
            "{cmd}"
        );
        assert!(cmd.lines().all(|l| l.len() < 400), "{cmd}");
        assert!(cmd.contains("sc.exe failureflag telemetryd 1"), "{cmd}");
        assert!(
            cmd.contains(r#"icacls "D:\Data\telemetry" /setowner "*S-1-5-32-544""#),
            "{cmd}"
        );
        // No text inside cmd's parenthesised blocks but icacls lines.
        assert!(
            !cmd.lines().any(|l| l.trim_start().starts_with("echo")),
            "{cmd}"
        );

        let files = staged(&plan(&target(false), &bin, env), root);
        let (path, reg) = &files[0];
        assert_eq!(path, &root.join("telemetryd-logon.reg"));
        assert!(reg.starts_with("Windows Registry Editor Version 5.00\r\n"));
        let bytes = staged_bytes(path, reg);
        assert_eq!(&bytes[..4], &[0xFF, 0xFE, b'W', 0], "UTF-16LE with a BOM");
        assert!(
            reg.contains(r#""telemetryd"="C:\\t\\telemetryctl.exe start""#),
            "{reg}"
        );
    }

    #[test]
    fn the_dry_run_describes_every_step() {
        let bin = PathBuf::from(r"C:\t\telemetryd.exe");
        let plan = plan(&target(true), &bin, env);
        let text: Vec<String> = plan.steps.iter().map(|s| describe(s, "would ")).collect();
        assert!(text.iter().all(|l| l.starts_with("would ")), "{text:?}");
        assert!(
            text.iter().any(|l| l.contains("(owner and DACL O:BAD:P(")),
            "{text:?}"
        );
        assert!(text
            .iter()
            .any(|l| l.contains("register the service telemetryd")));
    }
}
