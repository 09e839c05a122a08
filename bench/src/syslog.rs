//! syslog-ng as the baseline for streaming ingest (issue #18): how many
//! events per second a private syslog-ng instance takes from `conns`
//! unix-stream connections and commits to SQLite, measured in the same run
//! as the daemon's streaming rows.
//!
//! What is measured: `conns` client threads each connect to syslog-ng's
//! `unix-stream()` socket and write their share of the events as
//! newline-terminated lines of [`MSG_BYTES`] bytes (plus the newline), all
//! of a thread's lines built before the clock starts and handed to the
//! socket in large writes, so the clients cost as little CPU as they can on
//! a 2-core machine and syslog-ng is the bottleneck. The clock runs from the
//! moment the threads start writing until SQLite holds every line, seen
//! through a read-only connection (`SELECT max(rowid)` every millisecond:
//! O(log n), where `count(*)` would scan the table on a core syslog-ng
//! needs). Connection set-up, the table's creation and SQLite's switch to
//! WAL are out of the clock: one warm-up line is committed first. Then
//! syslog-ng is stopped, and the run is only returned if the table holds
//! exactly the lines sent (`count(*)`, `count(DISTINCT msg)`, each line's
//! length) and the database is in WAL mode; otherwise it is an error.
//!
//! The configuration ([`config`]), option by option:
//! - no `@include "scl.conf"`, no `system()` or `internal()` source: the
//!   instance reads only the bench's socket, never `/dev/log` or the
//!   kernel log; its own messages go to a file (`-e`, stderr) that is
//!   quoted when something fails. It runs in the foreground (`-F`) with its
//!   own `--cfgfile`, `--persist-file`, `--pidfile` and `--control` socket
//!   in a temporary directory, and `--no-caps` (it needs no privilege).
//! - `unix-stream(... flags(no-parse))`: each line is stored as it came
//!   (`${MESSAGE}` is the whole line without its newline), with no syslog
//!   header parsing that our lines would not have anyway.
//! - `max-connections()`: the clients plus one (the warm-up connection);
//!   `log-iw-size()`: 2,000 lines per connection (syslog-ng splits the
//!   window evenly between the connections), twice a batch, so reading need
//!   not stop while a transaction is open; `log-fetch-limit(100)`: read up
//!   to 100 lines from a connection per poll instead of the default 10.
//!   (Tried on the 2-core VM, 4 connections, 100,000 lines: windows of
//!   1,000 and 5,000 and fetch limits of 10 and 1,000 were within the noise
//!   of this; 100 used slightly less CPU per line than 1,000.)
//! - `flags(flow-control)` in the log path: when the destination's queue is
//!   full syslog-ng stops reading the sockets instead of dropping lines, so
//!   a fast client is slowed to the database's pace and nothing is lost
//!   (checked at the end). `log-fifo-size()` is at least the sum of the
//!   windows, as syslog-ng's documentation asks.
//! - `sql(type(sqlite3) ...)`: one text column, and `indexes()` empty
//!   (by default syslog-ng indexes four columns); `flags(explicit-commits)`
//!   with `batch-lines(1000)`: 1,000 `INSERT`s per transaction, where
//!   without the flag syslog-ng commits every line on its own. No
//!   `batch-timeout()`: without one a partial batch is committed as soon as
//!   the queue runs empty, and a timeout only made the last batch wait
//!   (no faster in the same trial);
//!   `session-statements("PRAGMA journal_mode=WAL", "PRAGMA
//!   synchronous=NORMAL")`: run on every connection before its first
//!   insert, the settings the daemon's `sync=normal` rows use. WAL is read
//!   back from the file; a failing session statement makes syslog-ng
//!   disconnect and insert nothing, so rows arriving shows that
//!   `synchronous=NORMAL` was accepted. `time-reopen(1)`: retry a failed
//!   connection after one second, not sixty.
//! - `stats-freq(0)`, `mark-freq(0)`, `use-dns(no)`: no periodic messages,
//!   no lookups.
//!
//! What syslog-ng does not do that the daemon does: it acknowledges
//! nothing to the sender. A client's write returns when the kernel has the
//! bytes, and the client never learns whether or when its line was
//! committed (or whether it was, if syslog-ng dies with lines in its queue
//! or in an open transaction); the bench's daemon rows count an event only
//! when its client has read the acknowledgement the daemon sends after the
//! commit. syslog-ng also checks nothing in a line (no schema, catalogue or
//! consent), renders nothing, and writes one column where the daemon writes
//! its own row; and its `INSERT`s are SQL text built and parsed per line
//! (libdbi), which is its own cost.

use anyhow::{bail, ensure, Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Bytes of one stored message; on the wire each is followed by `\n`.
pub const MSG_BYTES: usize = 200;
/// Rows per transaction (`batch-lines()`).
const BATCH: usize = 1000;
/// Flow-control window per connection, in messages (`log-iw-size()` is
/// this times `max-connections()`).
const WINDOW_PER_CONN: usize = 2 * BATCH;
/// Lines read from one connection per poll (`log-fetch-limit()`).
const FETCH_LIMIT: usize = 100;
/// Debian's packages: the daemon, its SQL destination (libdbi) and
/// libdbi's SQLite 3 driver.
const PACKAGES: [&str; 3] = ["syslog-ng-core", "syslog-ng-mod-sql", "libdbd-sqlite3"];
/// Give up when the table has not grown for this long.
const STALL: Duration = Duration::from_secs(30);

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Lines committed per second, from the first write until SQLite held
    /// them all.
    pub events_per_s: f64,
    /// syslog-ng's CPU time (user and system, all threads, from
    /// `/proc/PID/stat`, 10 ms ticks) over that window per line, in µs:
    /// steadier than the rate on a busy machine.
    pub cpu_us_per_event: f64,
}

/// A syslog-ng that can write to SQLite.
pub struct SyslogNg {
    pub bin: PathBuf,
    /// As `syslog-ng -V` says it, e.g. `3.38.1`.
    pub version: String,
}

/// Find syslog-ng with its SQL module and libdbi's SQLite driver; if any
/// is missing and we are root (or `sudo -n` works) on a system with
/// `apt-get`, install Debian's packages (saying so in one line) without
/// leaving a system syslog-ng service running. `Err` says why it cannot
/// be had; the bench prints `syslog-ng: not available (why)` and goes on.
pub fn available() -> std::result::Result<SyslogNg, String> {
    let before = find_bin();
    let missing = match &before {
        Some(bin) => missing_parts(bin),
        None => vec!["syslog-ng"],
    };
    if missing.is_empty() {
        let bin = before.expect("found");
        let version = version(&bin)?;
        return Ok(SyslogNg { bin, version });
    }
    let what = missing.join(", ");
    let Some(apt) = which("apt-get") else {
        return Err(format!(
            "{what} not installed, and no apt-get to install it"
        ));
    };
    let root = root_prefix().ok_or_else(|| {
        format!(
            "{what} not installed, and installing needs root (not root; `sudo -n` does not work)"
        )
    })?;
    println!(
        "syslog-ng: installing Debian's {} with apt-get ({what} not installed; \
         --no-install-recommends, its system service kept from starting)",
        PACKAGES.join(" ")
    );
    install(&root, &apt, before.is_none())?;
    let bin = find_bin()
        .ok_or("apt-get install succeeded but no syslog-ng binary is on PATH or in /usr/sbin")?;
    let missing = missing_parts(&bin);
    if !missing.is_empty() {
        return Err(format!(
            "still missing after installing: {}",
            missing.join(", ")
        ));
    }
    let version = version(&bin)?;
    Ok(SyslogNg { bin, version })
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn find_bin() -> Option<PathBuf> {
    which("syslog-ng").or_else(|| {
        [
            "/usr/sbin/syslog-ng",
            "/sbin/syslog-ng",
            "/usr/local/sbin/syslog-ng",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
    })
}

/// `syslog-ng -V`, whose first line is like `syslog-ng 3 (3.38.1)` and
/// which lists the modules it can load.
fn version_text(bin: &Path) -> std::result::Result<String, String> {
    let out = Command::new(bin)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("`{} -V` failed: {}", bin.display(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn version(bin: &Path) -> std::result::Result<String, String> {
    let text = version_text(bin)?;
    let first = text.lines().next().unwrap_or_default();
    first
        .rsplit_once('(')
        .and_then(|(_, v)| v.strip_suffix(')'))
        .map(str::to_string)
        .ok_or_else(|| format!("cannot read a version from `{first}`"))
}

/// What the SQLite destination needs beyond the binary: the `afsql`
/// module (syslog-ng-mod-sql) and libdbi's sqlite3 driver
/// (libdbd-sqlite3), looked for where libdbi's builds put it.
fn missing_parts(bin: &Path) -> Vec<&'static str> {
    let mut missing = vec![];
    let has_sql = version_text(bin).is_ok_and(|t| {
        t.lines()
            .filter(|l| l.starts_with("Available-Modules:"))
            .any(|l| l.split([' ', ',', ':']).any(|m| m == "afsql"))
    });
    if !has_sql {
        missing.push("syslog-ng's SQL module");
    }
    let mut dirs = vec![
        PathBuf::from("/usr/lib/dbd"),
        PathBuf::from("/usr/lib64/dbd"),
        PathBuf::from("/usr/local/lib/dbd"),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path().join("dbd")));
    }
    if !dirs.iter().any(|d| d.join("libdbdsqlite3.so").exists()) {
        missing.push("libdbi's sqlite3 driver");
    }
    missing
}

/// How to run a command as root: directly, through `sudo -n`, or not at all.
fn root_prefix() -> Option<Vec<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(vec![]);
    }
    let sudo = which("sudo")?;
    let ok = Command::new(&sudo)
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| vec![sudo.display().to_string(), "-n".to_string()])
}

fn as_root(root: &[String], program: &str) -> Command {
    match root.split_first() {
        None => Command::new(program),
        Some((sudo, args)) => {
            let mut c = Command::new(sudo);
            c.args(args).arg(program);
            c
        }
    }
}

/// The last `n` lines of `text`, for an error message.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Process ids of running syslog-ng processes (by command name; not
/// zombies, which Debian's supervisor process can leave behind).
fn running_syslog_ng() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.split_once(" (")
                    .and_then(|(_, rest)| rest.rsplit_once(") "))
                    .is_some_and(|(comm, rest)| comm == "syslog-ng" && !rest.starts_with('Z'))
            })
        })
        .collect()
}

/// Install the packages with apt-get, refusing if that would remove any
/// package (syslog-ng-core replaces other system loggers, rsyslog among
/// them). Service starts are denied during the install with a
/// `policy-rc.d` that exits 101 (created only if there is none, and removed
/// after). If the install brought syslog-ng itself (`new_core`), any
/// syslog-ng it started anyway (a `policy-rc.d` that allows starts) is
/// stopped and its service disabled, so the machine keeps the logger it had
/// (none: apt would have removed any other); a syslog-ng that was there
/// before is left as it was.
fn install(root: &[String], apt: &Path, new_core: bool) -> std::result::Result<(), String> {
    const LOCK_WAIT: &str = "-oDPkg::Lock::Timeout=120";
    let apt = apt.display().to_string();
    let simulate = || {
        as_root(root, &apt)
            .args(["install", "-s", "-q", "--no-install-recommends", LOCK_WAIT])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    // Package lists may never have been fetched on this machine, or be
    // stale: update them once if the install cannot go ahead without.
    let update = || {
        let up = as_root(root, &apt)
            .args(["update", "-q", LOCK_WAIT])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get update: {e}"))?;
        if !up.status.success() {
            return Err(format!(
                "apt-get update failed: {}",
                tail(&String::from_utf8_lossy(&up.stderr), 3)
            ));
        }
        Ok(())
    };
    let mut updated = false;
    let mut sim = simulate()?;
    if !sim.status.success() {
        update()?;
        updated = true;
        sim = simulate()?;
    }
    let sim_out = String::from_utf8_lossy(&sim.stdout);
    if !sim.status.success() {
        return Err(format!(
            "apt-get cannot install {}: {}",
            PACKAGES.join(" "),
            tail(&String::from_utf8_lossy(&sim.stderr), 3)
        ));
    }
    let removed: Vec<&str> = sim_out
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if !removed.is_empty() {
        return Err(format!(
            "installing {} would remove {}; not doing that",
            PACKAGES.join(" "),
            removed.join(" ")
        ));
    }

    let pids_before = running_syslog_ng();
    let dev_log = Path::new("/dev/log");
    let dev_log_before = dev_log.symlink_metadata().is_ok();
    let script = r#"set -e
created=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created=1
fi
trap 'if [ -n "$created" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
lock="$1"
shift
DEBIAN_FRONTEND=noninteractive "$0" install -y -q --no-install-recommends "$lock" \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
"#;
    let install = || {
        as_root(root, "sh")
            .args(["-c", script, &apt, LOCK_WAIT])
            .args(PACKAGES)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get install: {e}"))
    };
    let mut out = install()?;
    if !out.status.success() && !updated {
        update()?;
        out = install()?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get install failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 3)
        ));
    }

    if !new_core {
        return Ok(());
    }
    // Stop what the install started, and keep it from starting at boot.
    let started: Vec<u32> = running_syslog_ng()
        .into_iter()
        .filter(|p| !pids_before.contains(p))
        .collect();
    let systemd = Path::new("/run/systemd/system").is_dir();
    let quiet = |mut c: Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if systemd {
        if !started.is_empty() {
            let mut c = as_root(root, "systemctl");
            c.args(["stop", "syslog-ng.service"]);
            quiet(c);
        }
        let mut c = as_root(root, "systemctl");
        c.args(["disable", "syslog-ng.service"]);
        quiet(c);
    } else {
        if !started.is_empty() && Path::new("/etc/init.d/syslog-ng").exists() {
            let mut c = as_root(root, "/etc/init.d/syslog-ng");
            c.arg("stop");
            quiet(c);
        }
        if which("update-rc.d").is_some() {
            let mut c = as_root(root, "update-rc.d");
            c.args(["syslog-ng", "disable"]);
            quiet(c);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = running_syslog_ng()
            .into_iter()
            .filter(|p| started.contains(p))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "syslog-ng: warning: the system syslog-ng the install started is still running (pid {left:?})"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Debian's syslog-ng leaves its /dev/log socket behind when stopped.
    if !started.is_empty() && !dev_log_before && running_syslog_ng().is_empty() {
        use std::os::unix::fs::FileTypeExt;
        if dev_log
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_socket())
        {
            let mut c = as_root(root, "rm");
            c.args(["-f", "/dev/log"]);
            quiet(c);
        }
    }
    Ok(())
}

/// The configuration for a run with `conns` clients (see the module's
/// documentation for why each option is there).
pub fn config(version: &str, sock: &Path, db: &Path, conns: usize) -> String {
    let major_minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let max_conns = conns + 1;
    let window = WINDOW_PER_CONN * max_conns;
    format!(
        r#"@version: {major_minor}
options {{
    threaded(yes);
    use-dns(no);
    use-fqdn(no);
    dns-cache(no);
    keep-hostname(yes);
    chain-hostnames(no);
    create-dirs(no);
    stats-freq(0);
    mark-freq(0);
}};
source s_bench {{
    unix-stream("{sock}"
        flags(no-parse)
        max-connections({max_conns})
        log-iw-size({window})
        log-fetch-limit({FETCH_LIMIT})
    );
}};
destination d_sqlite {{
    sql(
        type(sqlite3)
        database("{db}")
        table("messages")
        columns("msg text")
        values("${{MESSAGE}}")
        indexes()
        flags(explicit-commits)
        batch-lines({BATCH})
        session-statements("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
        log-fifo-size({window})
        time-reopen(1)
    );
}};
log {{
    source(s_bench);
    destination(d_sqlite);
    flags(flow-control);
}};
"#,
        sock = sock.display(),
        db = db.display(),
    )
}

/// Message `seq` of connection `conn`: exactly [`MSG_BYTES`] printable
/// bytes, unique across the run, then `\n`.
fn message(out: &mut Vec<u8>, conn: usize, seq: usize) {
    let start = out.len();
    write!(out, "bench conn={conn:03} seq={seq:010} ").expect("write to a Vec");
    let pad = MSG_BYTES - (out.len() - start);
    out.extend(std::iter::repeat_n(b'x', pad));
    out.push(b'\n');
}

/// How many of `events` connection `i` of `conns` sends.
fn share(events: usize, conns: usize, i: usize) -> usize {
    events / conns + usize::from(i < events % conns)
}

/// A running syslog-ng, stopped (SIGTERM, then SIGKILL after 10 s) when
/// dropped.
struct Instance {
    child: Option<Child>,
    log: PathBuf,
}

impl Instance {
    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 5)
    }

    /// CPU time (user and system, all its threads) it has used so far.
    fn cpu_secs(&self) -> Result<f64> {
        let pid = self.child.as_ref().context("syslog-ng stopped")?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name in parentheses: state is field 3, utime
        // and stime are fields 14 and 15, in clock ticks.
        let rest = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz)
    }

    /// Fail (with its last messages) if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("syslog-ng already stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!("syslog-ng exited ({status}): {}", self.log_tail());
        }
        Ok(())
    }

    /// Stop it with SIGTERM; its exit status.
    fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("syslog-ng already stopped")?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("syslog-ng did not stop within 10 s of SIGTERM (killed)");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Poll `f` every millisecond until it returns `Some`, failing after
/// `limit` or if syslog-ng exits.
fn wait_for<T>(
    ng: &mut Instance,
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        ng.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{what}: not within {limit:?}; syslog-ng says: {}",
                ng.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl SyslogNg {
    /// Events per second that a fresh private syslog-ng commits to SQLite
    /// from `conns` connections writing `events` lines in all (see the
    /// module's documentation). Fails unless every line was stored once.
    pub fn rate(&self, events: usize, conns: usize) -> Result<Run> {
        ensure!(conns >= 1 && events >= conns, "need 1 ≤ conns ≤ events");
        let dir = tempfile::Builder::new()
            .prefix("syslog-ng-bench")
            .tempdir()?;
        let sock = dir.path().join("in.sock");
        // sun_path holds 108 bytes with the terminating NUL.
        ensure!(
            sock.as_os_str().len() < 108,
            "socket path too long: {}",
            sock.display()
        );
        let db = dir.path().join("events.db");
        let cfg = dir.path().join("syslog-ng.conf");
        std::fs::write(&cfg, config(&self.version, &sock, &db, conns))?;
        let log = dir.path().join("syslog-ng.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&self.bin)
            .arg("-F")
            .arg("-e")
            .arg("--no-caps")
            .arg(format!("--cfgfile={}", cfg.display()))
            .arg(format!(
                "--persist-file={}",
                dir.path().join("persist").display()
            ))
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg(format!("--control={}", dir.path().join("ctl").display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let mut ng = Instance {
            child: Some(child),
            log,
        };

        // Warm-up, untimed: one line makes syslog-ng open the database, run
        // the session statements and create the table.
        let mut first = wait_for(
            &mut ng,
            "syslog-ng listening",
            Duration::from_secs(10),
            || UnixStream::connect(&sock).ok(),
        )?;
        let mut line = Vec::new();
        message(&mut line, conns, 0);
        first.write_all(&line)?;
        drop(first);
        let wal = db.with_extension("db-wal");
        let reader = wait_for(
            &mut ng,
            "the warm-up line in SQLite",
            Duration::from_secs(30),
            || {
                // Not before the switch to WAL: a reader could make it fail.
                if !wal.exists() {
                    return None;
                }
                let c = rusqlite::Connection::open_with_flags(
                    &db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .ok()?;
                let n: Option<i64> = c
                    .query_row("SELECT max(rowid) FROM messages", [], |r| r.get(0))
                    .ok()?;
                (n == Some(1)).then_some(c)
            },
        )?;
        let mut max_rowid = reader.prepare("SELECT max(rowid) FROM messages")?;

        // The clients: connected and with their lines built before the clock.
        let start = Arc::new(Barrier::new(conns + 1));
        let clients: Vec<_> = (0..conns)
            .map(|c| {
                let stream = UnixStream::connect(&sock).context("connect to syslog-ng")?;
                let start = start.clone();
                let n = share(events, conns, c);
                Ok(std::thread::spawn(move || -> Result<()> {
                    let mut buf = Vec::with_capacity(n * (MSG_BYTES + 1));
                    for seq in 0..n {
                        message(&mut buf, c, seq);
                    }
                    let mut stream = stream;
                    start.wait();
                    stream.write_all(&buf)?;
                    stream.shutdown(std::net::Shutdown::Write)?;
                    Ok(())
                }))
            })
            .collect::<Result<_>>()?;
        start.wait();
        let t0 = Instant::now();
        let cpu0 = ng.cpu_secs()?;
        let target = events as i64 + 1;
        let (mut seen, mut progress) = (1, Instant::now());
        loop {
            let n: Option<i64> = max_rowid.query_row([], |r| r.get(0))?;
            let n = n.unwrap_or(0);
            if n >= target {
                break;
            }
            if n > seen {
                (seen, progress) = (n, Instant::now());
            } else if progress.elapsed() > STALL {
                bail!(
                    "syslog-ng stored {} of {events} lines, then nothing for {STALL:?}: {}",
                    seen - 1,
                    ng.log_tail()
                );
            }
            ng.check_alive()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = ng.cpu_secs()? - cpu0;
        for c in clients {
            c.join().expect("client thread panicked")?;
        }
        drop(max_rowid);

        // Untimed checks: every line stored once, as sent, in WAL mode.
        let status = ng.stop()?;
        ensure!(
            status.success(),
            "syslog-ng exited with {status} when stopped: {}",
            ng.log_tail()
        );
        let (rows, distinct, exact): (i64, i64, i64) = reader.query_row(
            "SELECT count(*), count(DISTINCT msg), sum(length(msg) = ?1) FROM messages",
            [MSG_BYTES as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        ensure!(
            rows == target && distinct == target && exact == target,
            "syslog-ng stored {rows} rows ({distinct} distinct, {exact} of {MSG_BYTES} bytes) for {target} lines sent"
        );
        let mode: String = reader.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        ensure!(
            mode == "wal",
            "syslog-ng's database is in {mode} mode, not WAL"
        );
        Ok(Run {
            events_per_s: events as f64 / secs,
            cpu_us_per_event: cpu * 1e6 / events as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_fixed_size_lines_and_shares_add_up() {
        let mut buf = Vec::new();
        message(&mut buf, 7, 123_456);
        assert_eq!(buf.len(), MSG_BYTES + 1);
        assert_eq!(buf.last(), Some(&b'\n'));
        assert!(buf.starts_with(b"bench conn=007 seq=0000123456 x"));
        for (events, conns) in [(100_000, 4), (10, 3), (7, 7), (1, 1)] {
            let total: usize = (0..conns).map(|i| share(events, conns, i)).sum();
            assert_eq!(total, events);
        }
    }
}
