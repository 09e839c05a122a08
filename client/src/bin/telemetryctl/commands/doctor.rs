//! `telemetryctl doctor [--json]`: check that everything works, and say
//! what to fix.
//!
//! The checks, in the order they are printed:
//! 1. `socket`: the daemon answers `status` within 2 s (or none runs and
//!    none is needed: no product is on for this user).
//! 2. `consent P`: each product's mode and the layer that decided it.
//! 3. `manifest P` / `manifests`: manifests that cannot be used.
//! 4. `destination D: ...`: the daemon's probe of every destination
//!    (`Request::Probe`: DNS, connection, TLS, credentials, bucket or
//!    broker, clock; it writes nothing), and whether uploads there have
//!    been failing.
//! 5. `consent file`, `system consent file`, `environment`: a consent
//!    file that cannot be read or has lines not understood, and an opt-out
//!    variable in this shell (the daemon only logs the first two and cannot
//!    see the third).
//! 6. `shim`: what `telemetry-emit` costs on this machine.
//! 7. `drops`: events dropped because the spool or the store was full.
//! 8. `refusals`: events the daemon refused since it started, by product
//!    and reason.
//! 9. `state dir`: this user's state directory can be written.
//! 10. `spool`: events shims spooled, in this user's state directory, for
//!     a socket other than this one, which no daemon here will take in.
//!
//! Exit code: 0 when no check failed, 3 when one did, 1 when the daemon
//! is unreachable (the checks that need no daemon still run and print).

use crate::Failure;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::{Client, Layer, StatusReport};
use telemetry_proto::{Check, CheckOutcome, ProbeReport};

/// Flags of `doctor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each check prints PASS, WARN or FAIL, its name and what was found; a check that did not pass is followed by `fix:` and what to do.\n\
                  The destination checks are made by the daemon, through the same proxy, CA bundle and credentials as its uploads, and write nothing (a HEAD of the bucket, HeadBucket, the broker's /healthz).\n\
                  Exit codes: 0 no check failed (warnings allowed), 3 a check failed, 1 the daemon is unreachable."
)]
pub struct Args {
    /// Print the result as JSON: {"ok": BOOL, "checks": [{"name", "outcome": "pass"|"warn"|"fail", "detail", "fix"}...], "destinations": the daemon's ProbeReport or null}.
    #[arg(long)]
    pub json: bool,
}

/// How long the daemon has to answer `status`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the daemon's probe of every destination may take: destinations
/// are probed side by side and each network step is capped at 5 s, so
/// this is a generous bound, not an expected time.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Times the shim is run to measure it.
const SHIM_RUNS: usize = 5;

/// Median shim time above which `shim` warns.
const SHIM_WARN_MS: u64 = 50;

/// The shim's default time budget (`telemetry-emit --timeout-ms`).
const SHIM_DEFAULT_BUDGET_MS: u64 = 100;

/// The exit code with `--strict` when consent is off (`telemetry-emit`).
const SHIM_EXIT_CONSENT_OFF: i32 = 4;

/// Exit code when a check failed (telemetryctl's "refused").
const EXIT_FAILED: u8 = 3;

/// Exit code when the daemon is unreachable.
const EXIT_UNREACHABLE: u8 = 1;

/// The `--json` output.
#[derive(Serialize)]
struct Output<'a> {
    ok: bool,
    checks: &'a [Check],
    destinations: Option<&'a ProbeReport>,
}

/// Run `doctor`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let mut checks = Vec::new();
    // For people, each check is printed as soon as it is made: the
    // destinations' probe can take a while, and what was found before it
    // is worth reading meanwhile. `--json` prints one document at the end.
    let mut shown = 0;
    let mut show = |checks: &[Check]| {
        if !args.json {
            print_checks(&checks[shown..]);
            shown = checks.len();
        }
    };
    let reach = socket_check(socket, &mut checks);
    let status = match &reach {
        Reach::Answered(s) => Some(s.as_ref()),
        Reach::NotNeeded | Reach::Failed => None,
    };
    let mut probe = None;
    if let Some(s) = &status {
        consent_checks(s, &mut checks);
        manifest_checks(s, &mut checks);
        show(&checks);
        if !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("checking each destination the way uploads go…");
        }
        probe = destination_checks(socket, s, &mut checks);
        show(&checks);
    }
    consent_file_checks(status, &mut checks);
    checks.push(shim_check(socket));
    if let Some(s) = &status {
        drop_checks(s, &mut checks);
        refusal_checks(s, &mut checks);
    }
    state_dir_check(&telemetry_client::state_dir(), &mut checks);
    spool_check(socket, &telemetry_client::state_dir(), &mut checks);
    show(&checks);

    let failed = checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Fail)
        .count();
    let warned = checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Warn)
        .count();
    if args.json {
        let out = Output {
            ok: failed == 0,
            checks: &checks,
            destinations: probe.as_ref(),
        };
        super::print_json(&out)?;
    } else {
        outln!("{}", summary(checks.len(), failed, warned));
    }
    // No daemon is a failure only where one is needed.
    let unreachable = matches!(reach, Reach::Failed);
    let exit = if unreachable {
        EXIT_UNREACHABLE
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        return Ok(());
    };
    Err(Failure {
        exit,
        code: if unreachable {
            "unreachable".into()
        } else {
            "doctor".into()
        },
        message: format!("doctor: {}", summary(checks.len(), failed, warned)),
        // The checks object is this command's whole answer on stdout.
        json_printed: args.json,
    })
}

/// "12 checks: 10 passed, 1 warning, 1 failed".
fn summary(total: usize, failed: usize, warned: usize) -> String {
    format!(
        "{total} checks: {} passed, {warned} {}, {failed} failed",
        total - failed - warned,
        if warned == 1 { "warning" } else { "warnings" }
    )
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let tag = match c.outcome {
            CheckOutcome::Pass => "PASS",
            CheckOutcome::Warn => "WARN",
            CheckOutcome::Fail => "FAIL",
        };
        outln!("{tag} {}: {}", c.name, c.detail);
        if c.outcome != CheckOutcome::Pass && !c.fix.is_empty() {
            outln!("     fix: {}", c.fix);
        }
    }
    // Seen at once even when stdout is a pipe (`doctor | tee`).
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// What the `socket` check found.
enum Reach {
    /// The daemon answered, with its status.
    Answered(Box<StatusReport>),
    /// None answers, and none is needed (no product is on).
    NotNeeded,
    /// None answers where one is needed, or the socket is refused.
    Failed,
}

/// `socket`: the daemon answers `status` in time; its status, if so.
fn socket_check(socket: &Path, checks: &mut Vec<Check>) -> Reach {
    match Client::connect(socket).and_then(|mut c| c.status(STATUS_TIMEOUT)) {
        Ok(s) => {
            checks.push(Check::pass(
                "socket",
                format!(
                    "telemetryd {} answers at {} (up {})",
                    s.daemon_version,
                    socket.display(),
                    humantime::format_duration(Duration::from_secs(s.uptime_secs))
                ),
            ));
            Reach::Answered(Box::new(s))
        }
        Err(e) => {
            // Before any product is on, no daemon is the expected state.
            if let Some(why) = super::no_daemon_needed(&e) {
                checks.push(Check::pass("socket", why));
                return Reach::NotNeeded;
            }
            let fix = match &e {
                telemetry_client::ClientError::Unreachable { source, path }
                    if telemetry_client::is_not_open_to_this_user(source, path) =>
                {
                    "the socket is a machine-wide telemetryd's, open to the members of its group: ask the administrator to add you (usermod -aG telemetry USER, then log in again), or use a daemon of your own (unset TELEMETRY_SOCKET)"
                }
                _ => "start it with `telemetryctl start`, or run it as a service (`telemetryd install --user`, then the commands it prints); if it runs elsewhere, point TELEMETRY_SOCKET or --socket at its socket",
            };
            // A daemon a CLI started writes its log here: why the last one
            // stopped, or never came up, is there.
            let log = telemetry_client::state_dir().join(telemetry_client::autostart::LOG_FILE);
            let fix = if log.is_file() {
                format!(
                    "{fix}; the log of the last one a CLI started is {}",
                    log.display()
                )
            } else {
                fix.to_string()
            };
            checks.push(Check::fail("socket", e.to_string(), fix));
            Reach::Failed
        }
    }
}

/// `consent P`: each product's mode and who decided it. Events awaiting a
/// decision warn. An undecided product passes: off is where opt-in
/// telemetry starts, not a fault to fix (a warning would press the user
/// to opt in to products they may never have run). A product whose
/// manifest cannot be used is left to its `manifest` check, unless
/// decided: its name may not even be one `consent` takes.
fn consent_checks(s: &StatusReport, checks: &mut Vec<Check>) {
    if s.consent.is_empty() {
        checks.push(Check::pass(
            "consent",
            "no product is known yet (no manifest and no decision)".to_string(),
        ));
    }
    for p in &s.consent {
        let name = format!("consent {}", p.product);
        let decided = format!("{}, decided by the {}", p.mode, p.layer.as_str());
        if p.layer == Layer::Default {
            if p.manifest_error.is_none() {
                checks.push(Check::pass(
                    name,
                    format!(
                        "undecided: off by default, so nothing of {0} is recorded (`telemetryctl consent {0} off|local|on` decides)",
                        p.product
                    ),
                ));
            }
        } else if p.mode != telemetry_client::Mode::Off
            && p.manifest.is_empty()
            && p.manifest_error.is_none()
        {
            // A decision for a name no manifest here has: not installed
            // yet, or a slip of the name while the product meant stays off.
            let known: Vec<&str> = s
                .consent
                .iter()
                .filter(|c| !c.manifest.is_empty() || c.manifest_error.is_some())
                .map(|c| c.product.as_str())
                .collect();
            checks.push(Check::warn(
                name,
                format!(
                    "{decided}, but no manifest here describes {}, so nothing of it is recorded (products with one: {})",
                    p.product,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
                format!(
                    "if the name is a slip, `telemetryctl consent {} off` and decide for the right one; otherwise it applies once the product is installed",
                    p.product
                ),
            ));
        } else if super::changed_without_a_new_version(p) {
            checks.push(Check::warn(
                name,
                format!(
                    "{decided}; changed in its manifest without a new catalogue version (still {}), so kept on this machine: {}",
                    p.version,
                    p.new_events.join(", ")
                ),
                format!(
                    "consenting again changes nothing: {}'s vendor must raise `[consent] version` in its manifest ({}), then `telemetryctl consent {} on` uploads them too",
                    p.product, p.manifest, p.product
                ),
            ));
        } else if !p.new_events.is_empty() {
            checks.push(Check::warn(
                name,
                format!(
                    "{decided}; {} new in manifest version {} {} kept on this machine until you decide again: {}",
                    p.new_events.len(),
                    p.version,
                    if p.new_events.len() == 1 { "event is" } else { "events are" },
                    p.new_events.join(", ")
                ),
                format!(
                    "`telemetryctl consent {}` shows them; `telemetryctl consent {} on` uploads them too, off or local decides otherwise",
                    p.product, p.product
                ),
            ));
        } else {
            checks.push(Check::pass(name, decided));
        }
    }
}

/// `consent file` and `system consent file` when either cannot be read or
/// has lines not understood (the user's as the daemon names it, else as
/// this environment does), and `environment` when an opt-out variable is
/// set in this shell.
fn consent_file_checks(status: Option<&StatusReport>, checks: &mut Vec<Check>) {
    use telemetry_client::consent::{self, file_trouble, FileTrouble};
    let paths = consent::ConsentPaths::from_env();
    let user = status.map_or(paths.user.clone(), |s| PathBuf::from(&s.consent_file));
    match file_trouble(&user) {
        Some(FileTrouble::Unreadable(_)) => checks.push(Check::fail(
            "consent file",
            consent::user_file_warning(&user).unwrap_or_default(),
            format!(
                "make {} readable text again, or record a decision with `telemetryctl consent PRODUCT on|off|local` (the file is kept aside and the decisions that can still be read from it are kept; check them with `telemetryctl consent`)",
                user.display()
            ),
        )),
        Some(FileTrouble::BadLines(_)) => checks.push(Check::warn(
            "consent file",
            consent::user_file_warning(&user).unwrap_or_default(),
            "write each line as `PRODUCT on|off|local` (the README's consent section), or record the decision with `telemetryctl consent PRODUCT on|off|local`".to_string(),
        )),
        None => {}
    }
    let system = &paths.system;
    let trouble = match file_trouble(system) {
        Some(FileTrouble::Unreadable(why)) => Some(format!("cannot be read ({why})")),
        Some(FileTrouble::BadLines(lines)) => Some(format!(
            "has lines not understood ({})",
            lines
                .iter()
                .map(|(n, l)| format!("line {n}: `{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => None,
    };
    if let Some(trouble) = trouble {
        checks.push(Check::fail(
            "system consent file",
            format!(
                "the administrator's consent file {} {trouble}, so every product is off here (it fails closed)",
                system.display()
            ),
            "if that is not what the administrator meant, ask them to fix the file (one `PRODUCT off` or `* off` per line, readable by every user)".to_string(),
        ));
    }
    if let Some(var) = consent::env_opt_out_var() {
        checks.push(Check::warn(
            "environment",
            format!(
                "{var} is set in this shell: CLIs run from it record nothing, whatever the consent file says; the daemon does not see it"
            ),
            format!(
                "nothing to fix if you meant it; unset {var} to let CLIs run from here follow the consent file, or `telemetryctl consent PRODUCT off` to stop a product everywhere"
            ),
        ));
    }
}

/// `manifest P` for each manifest that cannot be used; `manifests` when
/// all can.
fn manifest_checks(s: &StatusReport, checks: &mut Vec<Check>) {
    let mut good = Vec::new();
    let (mut broken, mut warned) = (0, 0);
    for p in &s.consent {
        match &p.manifest_error {
            Some(error) => {
                broken += 1;
                let file = if p.manifest.is_empty() {
                    format!("{}'s manifest", p.product)
                } else {
                    p.manifest.clone()
                };
                checks.push(Check::fail(
                    format!("manifest {}", p.product),
                    format!("{file} cannot be used: {error}"),
                    format!(
                        "fix or replace {file} (a vendor's manifest comes with its CLI: reinstall or update the CLI); until then {}'s events are refused and nothing of it is uploaded",
                        p.product
                    ),
                ));
            }
            None if !p.manifest.is_empty() => {
                good.push(p.product.as_str());
                if !p.manifest_warnings.is_empty() {
                    warned += 1;
                    checks.push(Check::warn(
                        format!("manifest {}", p.product),
                        format!(
                            "{} loads, with warnings: {}",
                            p.manifest,
                            p.manifest_warnings.join("; ")
                        ),
                        format!(
                            "for {}'s vendor: fix the manifest (an older or newer telemetryd may read it otherwise); its events are taken meanwhile",
                            p.product
                        ),
                    ));
                }
            }
            None => {}
        }
    }
    if broken == 0 && warned == 0 {
        checks.push(Check::pass(
            "manifests",
            if good.is_empty() {
                "no manifest is installed".to_string()
            } else {
                format!("every manifest loads ({})", good.join(", "))
            },
        ));
    }
}

/// The daemon's probe of every destination, and whether uploads there
/// have been failing; the probe report, when the daemon made one.
fn destination_checks(
    socket: &Path,
    s: &StatusReport,
    checks: &mut Vec<Check>,
) -> Option<ProbeReport> {
    let report = match Client::connect(socket).and_then(|mut c| c.probe(PROBE_TIMEOUT)) {
        Ok(r) => r,
        // Not this user's to check (a member of a machine-wide daemon's
        // group): skipped, not failed; nothing here is theirs to fix.
        Err(telemetry_client::ClientError::Refused {
            code: telemetry_client::ErrorCode::PermissionDenied,
            ..
        }) => {
            checks.push(Check::warn(
                "destinations",
                "not checked: only the daemon's user or root may have it check its destinations".to_string(),
                "run doctor as the user telemetryd runs as, or as root (on a machine-wide daemon: the administrator)".to_string(),
            ));
            return None;
        }
        Err(e) => {
            checks.push(Check::fail(
                "destinations",
                format!("the daemon did not check its destinations: {e}"),
                "see telemetryd's log; an older telemetryd cannot check its destinations (update it)".to_string(),
            ));
            return None;
        }
    };
    for d in &report.destinations {
        let prefix = format!("destination {}", d.destination);
        if d.checks.is_empty() {
            checks.push(Check::warn(
                prefix.clone(),
                format!("({}) the daemon made no check", d.auth),
                "update telemetryd".to_string(),
            ));
        }
        for c in &d.checks {
            checks.push(Check {
                name: format!("{prefix}: {}", c.name),
                ..c.clone()
            });
        }
        let failing = s
            .destinations
            .iter()
            .find(|st| st.destination == d.destination && st.consecutive_failures > 0);
        if let Some(st) = failing {
            let next = st
                .next_attempt_us
                .map(|t| format!("; next attempt at {}", super::when(t)))
                .unwrap_or_default();
            checks.push(Check::warn(
                format!("{prefix}: uploads"),
                format!(
                    "the last {} failed{next}: {}",
                    super::count(st.consecutive_failures.into(), "upload", "uploads"),
                    st.last_error.as_deref().unwrap_or("(no message)")
                ),
                "fix what the checks above name, then `telemetryctl flush` to upload now (events stay queued meanwhile)".to_string(),
            ));
        }
    }
    Some(report)
}

/// Where `telemetry-emit` should be: next to this `telemetryctl`.
fn shim_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(
        exe.parent()?
            .join(format!("telemetry-emit{}", std::env::consts::EXE_SUFFIX)),
    )
}

/// The shim's time budget here: `TELEMETRY_EMIT_TIMEOUT_MS` when it is a
/// number, else its default.
fn shim_budget_ms() -> u64 {
    std::env::var("TELEMETRY_EMIT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .unwrap_or(SHIM_DEFAULT_BUDGET_MS)
}

/// `shim`: the median wall time of [`SHIM_RUNS`] runs of the shim with
/// consent forced off (`TELEMETRY_OPTOUT=1`): it starts, reads its
/// arguments and the consent layers, and exits without connecting or
/// writing anything, so nothing is stored or counted. That is the part of
/// every emit this machine decides (process start); the socket round trip
/// of a real emit comes on top.
fn shim_check(socket: &Path) -> Check {
    let Some(path) = shim_path().filter(|p| p.is_file()) else {
        return Check::warn(
            "shim",
            format!(
                "telemetry-emit is not next to telemetryctl ({}), so its cost was not measured",
                shim_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "unknown path".into())
            ),
            "install telemetry-emit beside telemetryctl (CLIs find it on PATH)".to_string(),
        );
    };
    let mut times = Vec::with_capacity(SHIM_RUNS);
    for _ in 0..SHIM_RUNS {
        let started = Instant::now();
        let out = Command::new(&path)
            .args(["--product", "telemetry_doctor", "--strict", "--socket"])
            .arg(socket)
            .arg("doctor_probe")
            .env("TELEMETRY_OPTOUT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let elapsed = started.elapsed();
        match out {
            Ok(o) if o.status.code() == Some(SHIM_EXIT_CONSENT_OFF) => times.push(elapsed),
            Ok(o) => {
                return Check::warn(
                    "shim",
                    format!(
                        "{} did not answer as expected with consent off (exit {}): {}",
                        path.display(),
                        o.status
                            .code()
                            .map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    "install the telemetry-emit that came with this telemetryctl".to_string(),
                )
            }
            Err(e) => {
                return Check::fail(
                    "shim",
                    format!("cannot run {}: {e}", path.display()),
                    "reinstall telemetry-emit (it must be executable by this user)".to_string(),
                )
            }
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let ms = median.as_secs_f64() * 1000.0;
    let budget = shim_budget_ms();
    let detail = format!(
        "{} starts, checks consent and exits in {ms:.1} ms (median of {SHIM_RUNS} runs; a real emit adds the socket round trip; budget {budget} ms)",
        path.display()
    );
    if median > Duration::from_millis(budget) {
        Check::fail(
            "shim",
            detail,
            format!("over its time budget, events are lost: install a release build of telemetry-emit, look for what slows process start here (antivirus, a slow disk, a loaded machine), or raise TELEMETRY_EMIT_TIMEOUT_MS (now {budget} ms)"),
        )
    } else if median > Duration::from_millis(SHIM_WARN_MS) {
        Check::warn(
            "shim",
            detail,
            format!("over {SHIM_WARN_MS} ms, CLIs feel it: use a release build of telemetry-emit and look for what slows process start here (antivirus, a slow disk, a loaded machine); CLIs can pass --no-wait"),
        )
    } else {
        Check::pass("shim", detail)
    }
}

/// `drops`: events lost because a spool or the store was full, a
/// destination refused their batch for good, or the vendor retired their
/// product.
fn drop_checks(s: &StatusReport, checks: &mut Vec<Check>) {
    let before = checks.len();
    for d in &s.destinations {
        for (product, n) in &d.retired {
            checks.push(Check::warn(
                "drops",
                format!(
                    "{} retired {product}: nothing more is uploaded for it on this machine ({} dropped)",
                    d.destination,
                    super::count(*n, "event", "events")
                ),
                format!(
                    "nothing to fix here: its vendor switched it off; `telemetryctl consent {product} off` stops collecting it too"
                ),
            ));
        }
    }
    for d in s.destinations.iter().filter(|d| d.refused_events > 0) {
        checks.push(Check::warn(
            "drops",
            format!(
                "{} refused batches for good: {} dropped (the latest: {})",
                d.destination,
                super::count(d.refused_events, "event", "events"),
                d.refused_why.as_deref().unwrap_or("see the daemon's log")
            ),
            "nothing to fix here if the vendor retired those builds (update the CLI); a day refused as too old means this machine was offline past the vendor's window".to_string(),
        ));
    }
    for (product, n) in &s.counters.spool_full_drops {
        let product = if product.is_empty() {
            "no product"
        } else {
            product
        };
        checks.push(Check::warn(
            "drops",
            format!(
                "clients dropped {} of {product}: they could not spool them (their spool was full, or a burst waited past their time budget for a turn at it)",
                super::count(*n, "event", "events")
            ),
            super::why_the_spool_filled(s),
        ));
    }
    if s.counters.store_full_drops > 0 {
        checks.push(Check::warn(
            "drops",
            format!(
                "the store dropped {} since start to stay under max_store_bytes",
                super::count(s.counters.store_full_drops, "event", "events")
            ),
            "fix the destination so uploads drain the store (see the destination checks), or raise TELEMETRY_MAX_STORE_BYTES (max_store_bytes)".to_string(),
        ));
    } else {
        for (product, n) in &s.dropped {
            checks.push(Check::warn(
                "drops",
                format!(
                    "{} of {product} were dropped because the store was full (the count goes out with the next upload)",
                    super::count(*n, "event", "events")
                ),
                "if the store was full: fix the destination so uploads drain it, or raise TELEMETRY_MAX_STORE_BYTES (max_store_bytes)".to_string(),
            ));
        }
    }
    for (product, n) in &s.counters.local_full_drops {
        checks.push(Check::warn(
            "drops",
            format!(
                "the store dropped {} of {product} kept on this machine only (local) so far to stay under max_store_bytes, oldest first",
                super::count(*n, "event", "events")
            ),
            "raise TELEMETRY_MAX_STORE_BYTES (max_store_bytes) to keep more of what is local".to_string(),
        ));
    }
    if checks.len() == before {
        checks.push(Check::pass("drops", "no event was dropped".to_string()));
    }
}

/// What to do about refusals with `code`.
fn refusal_fix(code: &str, product: &str) -> String {
    match code {
        "not_in_catalogue" => format!("the CLI sends events, keys or values its manifest does not list: update {product}'s manifest or the CLI so they match (the daemon's log names the first one)"),
        "consent_off" => format!("expected while {product} is off, and nothing was stored; the CLI should check consent before it connects (the shim and the SDKs do)"),
        "busy" => "the daemon was at its connection limit: raise TELEMETRY_MAX_CONNECTIONS (max_connections); refused events were spooled".to_string(),
        "store_full" => "raise TELEMETRY_MAX_STORE_BYTES (max_store_bytes), or fix the destination so uploads drain the store".to_string(),
        "invalid" => "the CLI sends malformed events: the daemon's log says which and why; update the CLI".to_string(),
        "storage" => "the daemon could not write its database: check the disk holding its state directory".to_string(),
        "malformed" | "frame_too_large" | "unsupported_version" => "a client speaks another protocol version or sends garbage: update the CLI, shim or SDK to match this telemetryd".to_string(),
        _ => "the daemon's log says which requests and why".to_string(),
    }
}

/// `refusals`: one warning per product and reason.
fn refusal_checks(s: &StatusReport, checks: &mut Vec<Check>) {
    if s.refusals.is_empty() {
        checks.push(Check::pass(
            "refusals",
            "the daemon refused nothing since it started".to_string(),
        ));
    }
    for r in &s.refusals {
        let product = if r.product.is_empty() {
            "(no product)"
        } else {
            &r.product
        };
        let code = r.code.to_string();
        // The catalogue refuses a product whose manifest is broken or
        // missing with the same code as an unlisted event: the cause, and
        // so the fix, is the manifest then, not the CLI.
        let manifest = s.consent.iter().find(|c| c.product == r.product);
        let fix = match manifest {
            Some(c) if code == "not_in_catalogue" && c.manifest_error.is_some() => format!(
                "{product}'s manifest cannot be used, so all of its events are refused: fix {} (its `manifest` check says what is wrong)",
                c.manifest
            ),
            _ if code == "not_in_catalogue"
                && !r.product.is_empty()
                && manifest.is_none_or(|c| c.manifest.is_empty() && c.manifest_error.is_none()) =>
            {
                format!(
                "no manifest here describes {product}: install the product's manifest, or correct the product name the CLI sends"
                )
            }
            _ => refusal_fix(&code, product),
        };
        checks.push(Check::warn(
            format!("refusals {product}"),
            format!(
                "{} refused since start: {code}{}",
                super::count(r.count, "request", "requests"),
                super::the_latest(r)
            ),
            fix,
        ));
    }
}

/// `state dir`: this user's state directory, where shims spool and a
/// started daemon keeps its store and log, can be written (by trying, as
/// permissions alone do not say: root, ACLs, a read-only mount). Nothing is
/// said of one not made yet: the first client makes it.
fn state_dir_check(dir: &Path, checks: &mut Vec<Check>) {
    if !dir.is_dir() {
        return;
    }
    // A name no earlier doctor left behind (one killed before it removed
    // its probe, with the same pid): "File exists" is no answer.
    let mut n = 0;
    let (probe, tried) = loop {
        let probe = dir.join(format!(".doctor-{}-{n}", std::process::id()));
        let tried = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe);
        match tried {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            tried => break (probe, tried),
        }
    };
    match tried {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            checks.push(Check::pass(
                "state dir",
                format!("{} can be written", dir.display()),
            ));
        }
        Err(e) => checks.push(Check::fail(
            "state dir",
            format!(
                "{} cannot be written ({e}): shims cannot spool there and no daemon can be started on it",
                dir.display()
            ),
            format!(
                "give it back to this user (e.g. `chmod u+rwx {0}`, or `chown` it if another user made it), or point TELEMETRY_STATE_DIR at a directory of yours",
                dir.display()
            ),
        )),
    }
}

/// Most spool entries `spool` looks at, and files it counts in one.
const SPOOL_LOOK_LIMIT: usize = 1000;

/// `spool`: a spool is named for the socket its shim tried, and only a
/// daemon on that socket with this state directory takes it in. Events
/// spooled for another one (a CLI run with another `TELEMETRY_SOCKET` or
/// `XDG_RUNTIME_DIR`) would wait there unseen: said, since nothing else
/// would say it.
fn spool_check(socket: &Path, state_dir: &Path, checks: &mut Vec<Check>) {
    use telemetry_proto::paths;
    let ours = [
        paths::spool_file_for(state_dir, socket),
        paths::spool_dir_for(state_dir, socket),
    ];
    let before = checks.len();
    let entries = std::fs::read_dir(state_dir.join("spool"));
    for entry in entries
        .into_iter()
        .flatten()
        .flatten()
        .take(SPOOL_LOOK_LIMIT)
    {
        let path = entry.path();
        let name = entry.file_name();
        let Some((_, is_dir)) = name.to_str().and_then(paths::spool_of_name) else {
            continue;
        };
        if ours.contains(&path) {
            continue;
        }
        // Not through a link: only what is really there.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let held = if is_dir && meta.is_dir() {
            let n = std::fs::read_dir(&path).map_or(0, |d| d.take(SPOOL_LOOK_LIMIT).count());
            (n > 0).then(|| super::count(n as u64, "file", "files"))
        } else if !is_dir && meta.is_file() && meta.len() > 0 {
            Some(format!("{} bytes", meta.len()))
        } else {
            None
        };
        let Some(held) = held else { continue };
        checks.push(Check::warn(
            "spool",
            format!(
                "events spooled for another socket wait in {} ({held}): only a telemetryd on the socket they were sent to, with this state directory, takes them in",
                path.display()
            ),
            format!(
                "run the CLIs and telemetryd with the same socket (TELEMETRY_SOCKET, XDG_RUNTIME_DIR) and a daemon there takes them in; or delete {} to drop them",
                path.display()
            ),
        ));
    }
    if checks.len() == before {
        checks.push(Check::pass(
            "spool",
            "nothing is spooled for another socket".to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_outcome() {
        assert_eq!(summary(4, 1, 1), "4 checks: 2 passed, 1 warning, 1 failed");
        assert_eq!(summary(3, 0, 2), "3 checks: 1 passed, 2 warnings, 0 failed");
    }

    #[test]
    fn common_refusals_say_what_to_do() {
        assert!(refusal_fix("not_in_catalogue", "p").contains("manifest"));
        assert!(refusal_fix("consent_off", "p").contains("expected"));
        assert!(refusal_fix("busy", "p").contains("max_connections"));
        assert!(refusal_fix("store_full", "p").contains("max_store_bytes"));
    }

    /// Tried, not read off the mode bits: even root cannot make a file in
    /// `/proc/self`, and the probe leaves nothing behind where it can.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_state_dir_that_cannot_be_written_fails_with_its_fix() {
        let mut checks = Vec::new();
        state_dir_check(Path::new("/proc/self"), &mut checks);
        let dir = tempfile::tempdir().unwrap();
        // A probe a killed doctor of the same pid left is no failure.
        let left = dir.path().join(format!(".doctor-{}-0", std::process::id()));
        std::fs::write(&left, "").unwrap();
        state_dir_check(dir.path(), &mut checks);
        std::fs::remove_file(&left).unwrap();
        state_dir_check(&dir.path().join("not-made-yet"), &mut checks);
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert_eq!(checks[0].outcome, CheckOutcome::Fail);
        assert!(
            checks[0].detail.contains("/proc/self cannot be written"),
            "{checks:?}"
        );
        assert!(checks[0].fix.contains("TELEMETRY_STATE_DIR"), "{checks:?}");
        assert_eq!(checks[1].outcome, CheckOutcome::Pass);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
