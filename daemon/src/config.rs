//! Configuration: one [`Config`] struct that everything else receives.
//!
//! Every setting has a flag, an environment variable and a config-file key;
//! precedence is flag > environment > file > embedded default. Errors name
//! the key and where the bad value came from (the file path, the variable or
//! the flag), so the fix is obvious.
//!
//! Time and the machine identity are injected here too, so tests drive the
//! daemon through the same struct instead of test-only switches.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A source of wall-clock time (injectable for tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Microseconds since the Unix epoch on `clock` (0 before the epoch).
pub fn now_us(clock: &Clock) -> i64 {
    clock()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// How fsync-heavy SQLite commits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous=FULL`: an acknowledged event survives power loss.
    Full,
    /// `synchronous=NORMAL`: survives a crash of the daemon, not power loss.
    Normal,
}

/// Where the anonymous machine ID is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The OS identity: `/etc/machine-id`, then `/var/lib/dbus/machine-id`,
    /// else a random identity generated once and kept in the state dir.
    Os,
    /// Read the identity from this file.
    File(PathBuf),
}

pub use telemetry_sink::S3Settings as S3Config;

/// Everything the daemon needs to run.
#[derive(Clone)]
pub struct Config {
    /// Unix socket path.
    pub socket_path: PathBuf,
    /// Directory for the SQLite database and other state.
    pub state_dir: PathBuf,
    /// Local destination for batches when no bucket is configured.
    pub outbox_dir: PathBuf,
    /// S3 destination; `None` means the local outbox.
    pub s3: Option<S3Config>,
    /// A batch is sealed once its oldest event is this old.
    pub upload_interval: Duration,
    /// A batch is sealed once it has this many events.
    pub batch_max_events: usize,
    /// A batch is sealed once its NDJSON reaches this many bytes.
    pub batch_max_bytes: usize,
    /// First retry delay after a failed upload.
    pub retry_min: Duration,
    /// Longest one S3 request may take (connect, send, answer).
    pub s3_timeout: Duration,
    /// Proxy (from the environment) and extra CA bundle for every S3 and
    /// broker client.
    pub net: telemetry_sink::net::NetOptions,
    /// A client must deliver each complete request within this time, or
    /// its connection is closed (idle clients, slow senders).
    pub connection_timeout: Duration,
    /// Connections served at once; more are refused with a `Busy` error.
    pub max_connections: usize,
    /// Most NDJSON bytes the store keeps; past it the oldest pending events
    /// are dropped and counted.
    pub max_store_bytes: u64,
    /// While clients connect, look for spooled events this often.
    pub spool_check_interval: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
    /// How long shutdown may spend on a last upload.
    pub shutdown_timeout: Duration,
    /// SQLite durability.
    pub sync: SyncMode,
    /// Where the machine identity comes from.
    pub identity: IdentitySource,
    /// The user's directory of product manifests (`PRODUCT.toml`), first
    /// on the search path (see [`crate::catalog`]).
    pub catalog_dir: PathBuf,
    /// The system directories of product manifests, searched after
    /// `catalog_dir` (from `$XDG_DATA_DIRS`, see
    /// [`crate::catalog::system_dirs`]).
    pub manifest_system_dirs: Vec<PathBuf>,
    /// The user's consent file.
    pub consent_file: PathBuf,
    /// The spool shims write for this daemon's socket while it is not
    /// reachable (`paths::spool_file_for`).
    pub spool_file: PathBuf,
    /// The portable spool (one JSON line per file) the SDKs write for this
    /// daemon's socket (`paths::spool_dir_for`).
    pub spool_dir: PathBuf,
    /// The administrator's machine-wide consent file.
    pub system_consent_file: PathBuf,
    /// `DO_NOT_TRACK` / `TELEMETRY_OPTOUT` set in the daemon's environment.
    pub env_opt_out: bool,
    /// Exit after this long without connections once nothing is pending.
    /// Only honoured when socket-activated (the service manager starts us
    /// again on the next connection).
    pub idle_exit: Option<Duration>,
    /// After this long without connections, hand the pages of the
    /// daemon's own code back to the kernel (`platform::mem`); `None`
    /// keeps them mapped.
    pub idle_trim: Option<Duration>,
    /// `NOTIFY_SOCKET`: where to send `READY=1` and friends.
    pub notify_socket: Option<String>,
    /// `WATCHDOG_USEC`: ping the service manager at half this interval.
    pub watchdog: Option<Duration>,
    /// Wall clock.
    pub clock: Clock,
    /// Where reload requests come from (SIGHUP in `main`); `None`: never.
    pub reload: Option<crate::reload::Reload>,
    /// How to stop this daemon under the service manager that runs it
    /// (which would start it again at the next connection); `None` when
    /// none does, and `telemetryctl stop` may stop it. Set by `main`.
    pub supervisor: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("socket_path", &self.socket_path)
            .field("state_dir", &self.state_dir)
            .field("outbox_dir", &self.outbox_dir)
            .field("s3", &self.s3)
            .field("upload_interval", &self.upload_interval)
            .field("batch_max_events", &self.batch_max_events)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("sync", &self.sync)
            .field("catalog_dir", &self.catalog_dir)
            .field("manifest_system_dirs", &self.manifest_system_dirs)
            .field("consent_file", &self.consent_file)
            .field("spool_file", &self.spool_file)
            .field("system_consent_file", &self.system_consent_file)
            .field("env_opt_out", &self.env_opt_out)
            .field("idle_exit", &self.idle_exit)
            .field("idle_trim", &self.idle_trim)
            .field("notify_socket", &self.notify_socket)
            .field("watchdog", &self.watchdog)
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

/// How long without connections before the daemon hands its mapped code
/// back (`idle_trim`): longer than the gaps between a CLI's runs in one
/// session, so a burst of runs keeps its code mapped.
pub const DEFAULT_IDLE_TRIM: Duration = Duration::from_secs(30);

impl Config {
    /// The embedded defaults, with paths under `state_dir` and the socket
    /// at `socket_path`. Used by tests and as the base of [`load`].
    pub fn with_paths(socket_path: PathBuf, state_dir: PathBuf) -> Config {
        let consent_file = telemetry_proto::paths::default_consent_file(&state_dir);
        let spool_file = telemetry_proto::paths::spool_file_for(&state_dir, &socket_path);
        let spool_dir = telemetry_proto::paths::spool_dir_for(&state_dir, &socket_path);
        Config {
            outbox_dir: state_dir.join("outbox"),
            socket_path,
            state_dir,
            s3: None,
            upload_interval: Duration::from_secs(3600),
            batch_max_events: 10_000,
            batch_max_bytes: 4 * 1024 * 1024,
            retry_min: Duration::from_secs(1),
            s3_timeout: Duration::from_secs(60),
            net: telemetry_sink::net::NetOptions::default(),
            connection_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_store_bytes: 64 * 1024 * 1024,
            spool_check_interval: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(5),
            sync: SyncMode::Full,
            identity: IdentitySource::Os,
            catalog_dir: PathBuf::from("/etc/telemetry/catalog"),
            manifest_system_dirs: crate::catalog::system_dirs(None, None),
            consent_file,
            spool_file,
            spool_dir,
            system_consent_file: telemetry_proto::paths::system_consent_file(|_| None),
            env_opt_out: false,
            idle_exit: None,
            idle_trim: Some(DEFAULT_IDLE_TRIM),
            notify_socket: None,
            watchdog: None,
            clock: system_clock(),
            reload: None,
            supervisor: None,
        }
    }

    /// Human-readable destination, free of credentials.
    pub fn destination(&self) -> String {
        match &self.s3 {
            Some(s3) => s3.url(),
            None => format!("outbox:{}", self.outbox_dir.display()),
        }
    }
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is present but invalid.
    #[error("{origin}: invalid value {value:?} for `{key}`: {reason}")]
    Invalid {
        /// The config key, e.g. `upload_interval` or `s3.bucket`.
        key: &'static str,
        /// Where the value came from: the file path, the env var or the flag.
        origin: String,
        /// The value as given.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// The CA bundle or a proxy variable cannot be used (the error names
    /// the file or variable).
    #[error(transparent)]
    Net(#[from] telemetry_sink::net::NetError),
}

/// Command-line flags of `telemetryd`. Each also reads an environment
/// variable; the config file fills in what neither sets.
#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "telemetryd",
    version,
    about = "Opt-in, anonymous usage-telemetry collector: stores events from CLI shims in SQLite and uploads compressed batches to S3.",
    after_help = "Precedence: flag > environment variable > config file > embedded default.\nWith no bucket configured, batches are written to the local outbox directory."
)]
pub struct Args {
    /// The directory the daemon was started in, when it has left it (an
    /// autostarted daemon moves to the root, see `main`): relative paths,
    /// from flags, variables or the file, are taken from here, also at a
    /// reload.
    #[arg(skip)]
    pub base_dir: Option<PathBuf>,
    /// Config file (TOML). Default: $XDG_CONFIG_HOME/telemetry/config.toml, else ~/.config/telemetry/config.toml (Windows: %APPDATA%\telemetry\config.toml).
    #[arg(long, env = "TELEMETRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket to listen on (at most 107 bytes on Linux, 103 on macOS). Default: $XDG_RUNTIME_DIR/telemetry/telemetryd.sock, else ${TMPDIR:-/tmp}/telemetry-UID/telemetryd.sock (macOS: ~/Library/Application Support/telemetry/telemetryd.sock; Windows: the named pipe \\.\pipe\telemetryd-%USERNAME%).
    #[arg(long, env = "TELEMETRY_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Directory for the SQLite store. Default: $XDG_STATE_HOME/telemetry, else ~/.local/state/telemetry (Windows: %LOCALAPPDATA%\telemetry).
    #[arg(long, env = "TELEMETRY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Local destination for batches when no bucket is set. Default: STATE_DIR/outbox.
    #[arg(long, env = "TELEMETRY_OUTBOX_DIR", value_name = "DIR")]
    pub outbox_dir: Option<PathBuf>,
    /// S3 bucket to upload batches to. Default: none (batches go to the outbox directory).
    #[arg(long, env = "TELEMETRY_S3_BUCKET", value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket. Default: none (keys start with v1/).
    #[arg(long, env = "TELEMETRY_S3_PREFIX", value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Endpoint URL of an S3-compatible store, e.g. http://127.0.0.1:9000. Default: AWS S3.
    #[arg(long, env = "TELEMETRY_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region. Default: from the AWS chain, else us-east-1.
    #[arg(long, env = "TELEMETRY_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Use path-style addressing (true/false); most self-hosted stores need it. Default: true with --s3-endpoint, else false.
    #[arg(long, env = "TELEMETRY_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<String>,
    /// Seal and upload a batch once its oldest event is this old, e.g. 30s, 15m (default 1h).
    #[arg(long, env = "TELEMETRY_UPLOAD_INTERVAL", value_name = "DURATION")]
    pub upload_interval: Option<String>,
    /// Seal a batch once it holds this many events (default 10000).
    #[arg(long, env = "TELEMETRY_BATCH_MAX_EVENTS", value_name = "N")]
    pub batch_max_events: Option<String>,
    /// Seal a batch once its NDJSON reaches this many bytes (default 4194304).
    #[arg(long, env = "TELEMETRY_BATCH_MAX_BYTES", value_name = "BYTES")]
    pub batch_max_bytes: Option<String>,
    /// Longest delay between upload retries (default 5m).
    #[arg(long, env = "TELEMETRY_RETRY_MAX", value_name = "DURATION")]
    pub retry_max: Option<String>,
    /// First delay after a failed upload; doubles up to the maximum (default 1s).
    #[arg(long, env = "TELEMETRY_RETRY_MIN", value_name = "DURATION")]
    pub retry_min: Option<String>,
    /// Longest one S3 request may take (default 60s).
    #[arg(long, env = "TELEMETRY_S3_TIMEOUT", value_name = "DURATION")]
    pub s3_timeout: Option<String>,
    /// Extra CA certificates (PEM) to trust for S3 and brokers, added to the platform's roots, e.g. for a TLS-inspecting proxy. Default: none (the platform's roots only).
    #[arg(long, env = "TELEMETRY_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Close a connection that does not deliver a whole request in this time (default 30s).
    #[arg(long, env = "TELEMETRY_CONNECTION_TIMEOUT", value_name = "DURATION")]
    pub connection_timeout: Option<String>,
    /// Connections served at once, 1 to 1000000; more are refused with a busy error (default 512).
    #[arg(long, env = "TELEMETRY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Most bytes of events kept locally; the oldest pending are dropped past it (default 67108864).
    #[arg(long, env = "TELEMETRY_MAX_STORE_BYTES", value_name = "BYTES")]
    pub max_store_bytes: Option<String>,
    /// While clients connect, look for events shims spooled this often (default 10s).
    #[arg(long, env = "TELEMETRY_SPOOL_CHECK_INTERVAL", value_name = "DURATION")]
    pub spool_check_interval: Option<String>,
    /// SQLite durability (default full): full, an acknowledged event survives power loss; normal, it survives a daemon crash.
    #[arg(long, env = "TELEMETRY_SYNC", value_name = "MODE")]
    pub sync: Option<String>,
    /// Read the machine identity from this file. Default: the OS's (/etc/machine-id, /var/lib/dbus/machine-id; IOPlatformUUID on macOS), else one generated once in the state dir.
    #[arg(long, env = "TELEMETRY_MACHINE_ID_FILE", value_name = "FILE")]
    pub machine_id_file: Option<PathBuf>,
    /// The user's directory of product manifests (PRODUCT.toml), searched first. Default: $XDG_CONFIG_HOME/telemetry/catalog, else ~/.config/telemetry/catalog (Windows: %APPDATA%\telemetry\catalog). DIR/telemetry/products for each DIR in $XDG_DATA_DIRS (Windows: %ProgramData%\telemetry\products) are searched after it either way.
    #[arg(long, env = "TELEMETRY_CATALOG_DIR", value_name = "DIR")]
    pub catalog_dir: Option<PathBuf>,
    /// The user's consent file. Default: STATE_DIR/consent.
    #[arg(long, env = "TELEMETRY_CONSENT_FILE", value_name = "FILE")]
    pub consent_file: Option<PathBuf>,
    /// The administrator's consent file, which can force products off. Default: /etc/telemetry/consent (Windows: %ProgramData%\telemetry\consent).
    #[arg(long, env = "TELEMETRY_SYSTEM_CONSENT_FILE", value_name = "FILE")]
    pub system_consent_file: Option<PathBuf>,
    /// Exit after this long idle with nothing pending, e.g. 5m. Default: none (stay up); 5m with --autostarted.
    #[arg(long, env = "TELEMETRY_IDLE_EXIT", value_name = "DURATION")]
    pub idle_exit: Option<String>,
    /// After this long without connections, hand the daemon's mapped code back to the kernel (its resident memory falls to a few MiB; the next request maps what it uses again), or off (default 30s).
    #[arg(long, env = "TELEMETRY_IDLE_TRIM", value_name = "DURATION")]
    pub idle_trim: Option<String>,
    /// What to log, as a tracing filter: a level (error, warn, info, debug, trace) or per module (telemetryd=debug,info). Set with the flag or the variable only: the log starts before the config file is read [default: info].
    #[arg(long, env = "TELEMETRY_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// The log's format: text (lines for people) or json (one object per line: timestamp, level, fields, target). Flag or variable only, as --log [default: text].
    #[arg(long, env = "TELEMETRY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Started on demand by a client (telemetry-emit, telemetry-client) with no service manager: exit when idle, and step aside quietly (exit 0) when another telemetryd serves or the store is newer than this binary.
    #[arg(long)]
    pub autostarted: bool,
    /// Run as the Windows service: started by the service control manager (as `telemetryd install --system` registers it), which stops it; machine-wide pipe permissions. Windows only.
    #[arg(long)]
    pub service: bool,
    /// Check the settings (flags, environment, config file) and the product manifests, print what a start would use, and exit without changing anything: 0 when all is usable, 1 when a setting is not (named with its key and file), 3 when a manifest is broken (or, with --strict, has warnings). Run it before a reload (SIGHUP) or a restart, and in a vendor's CI with --strict.
    #[arg(long)]
    pub check_config: bool,
    /// With --check-config: a manifest's warnings (a key the daemon ignores, such as a misspelt limit or `[event.x]` for `[events.x]`, or a limit every emit would exceed) fail the check too, with exit 3: for a vendor's CI.
    #[arg(long, requires = "check_config")]
    pub strict: bool,
    /// Install or remove the service-manager files instead of running.
    #[command(subcommand)]
    pub command: Option<crate::install::Command>,
}

/// The config file's shape. Unknown keys are errors, so typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    outbox_dir: Option<PathBuf>,
    upload_interval: Option<String>,
    batch_max_events: Option<i64>,
    batch_max_bytes: Option<i64>,
    retry_max: Option<String>,
    retry_min: Option<String>,
    connection_timeout: Option<String>,
    max_connections: Option<i64>,
    max_store_bytes: Option<i64>,
    spool_check_interval: Option<String>,
    sync: Option<String>,
    machine_id_file: Option<PathBuf>,
    catalog_dir: Option<PathBuf>,
    consent_file: Option<PathBuf>,
    system_consent_file: Option<PathBuf>,
    idle_exit: Option<String>,
    idle_trim: Option<String>,
    ca_bundle: Option<PathBuf>,
    s3: Option<FileS3>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    timeout: Option<String>,
}

/// Parse `std::env::args_os()` into [`Args`], keeping the matches so
/// [`load`] can tell a flag from an environment variable in messages.
pub fn parse_args() -> (Args, ArgMatches) {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (args, matches)
}

/// Where a value came from, for error messages.
struct Origins<'a> {
    matches: Option<&'a ArgMatches>,
    file: Option<&'a Path>,
}

impl Origins<'_> {
    fn cli(&self, id: &str, flag: &str, env: &str) -> String {
        match self.matches.and_then(|m| m.value_source(id)) {
            Some(ValueSource::EnvVariable) => format!("environment variable {env}"),
            _ => format!("flag --{flag}"),
        }
    }
    fn file(&self) -> String {
        match self.file {
            Some(p) => format!("config file {}", p.display()),
            None => "config file".to_string(),
        }
    }
}

pub use telemetry_sink::settings::{parse_bool, parse_duration, MAX_DURATION};

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => usize::try_from(n).map_err(|_| "too large".to_string()),
        _ => Err("expected a whole number greater than zero".into()),
    }
}

/// The most connections a daemon may be told to serve at once: far past
/// any open-file limit (each takes one or two descriptors), and small
/// enough that the arithmetic and semaphores sized by it cannot overflow.
pub const MAX_CONNECTIONS: usize = 1_000_000;

fn parse_connections(s: &str) -> Result<usize, String> {
    match parse_count(s) {
        Ok(n) if n <= MAX_CONNECTIONS => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_CONNECTIONS}"
        )),
    }
}

fn parse_sync(s: &str) -> Result<SyncMode, String> {
    match s.trim() {
        "full" => Ok(SyncMode::Full),
        "normal" => Ok(SyncMode::Normal),
        _ => Err("expected full or normal".into()),
    }
}

/// Resolve one setting: the flag/env value if given, else the file value.
/// `parse` turns the raw string into the typed value; its error is wrapped
/// with the key and the origin.
#[allow(clippy::too_many_arguments)]
fn pick<T>(
    key: &'static str,
    cli_value: Option<&String>,
    file_value: Option<String>,
    origins: &Origins<'_>,
    id: &str,
    flag: &str,
    env: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let (raw, origin) = match (cli_value, file_value) {
        (Some(v), _) => (v.clone(), origins.cli(id, flag, env)),
        (None, Some(v)) => (v, origins.file()),
        (None, None) => return Ok(None),
    };
    parse(&raw)
        .map(Some)
        .map_err(|reason| ConfigError::Invalid {
            key,
            origin,
            value: raw,
            reason,
        })
}

/// Build the [`Config`] from parsed flags (with their environment
/// fallbacks), the config file and the embedded defaults.
///
/// `env` is the process environment lookup (for XDG defaults), `uid` the
/// current user; both injected so this stays testable.
pub fn load(
    args: &Args,
    matches: Option<&ArgMatches>,
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> Result<Config, ConfigError> {
    use telemetry_proto::paths;

    let at = |p: PathBuf| anchored(args.base_dir.as_deref(), p);
    let (file_path, explicit) = match &args.config {
        Some(p) => (Some(at(p.clone())), true),
        None => (paths::default_config_file(&env).map(at), false),
    };
    let file = match &file_path {
        Some(path) => match telemetry_platform::fs::read_config_text(path) {
            Ok(text) => toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string().trim_end().to_string(),
            })?,
            // A missing default file is normal; a missing named file is not.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                FileConfig::default()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source,
                })
            }
        },
        None => FileConfig::default(),
    };
    let origins = Origins {
        matches,
        file: file_path.as_deref(),
    };
    let fs3 = file.s3.unwrap_or_default();

    let socket = match (&args.socket, file.socket) {
        (Some(p), _) => Some((
            p.clone(),
            origins.cli("socket", "socket", "TELEMETRY_SOCKET"),
        )),
        (None, Some(p)) => Some((p, origins.file())),
        (None, None) => None,
    };
    let socket = match socket {
        Some((path, origin)) => {
            check_socket_len(&path, origin, &env, uid)?;
            path
        }
        // The default is checked when it is bound: a socket-activated
        // daemon never binds it, so it must not fail on it here.
        None => paths::default_socket_path(&env, uid),
    };
    let state_dir = args
        .state_dir
        .clone()
        .or(file.state_dir)
        .unwrap_or_else(|| paths::default_state_dir(&env, uid));
    // The socket is kept as given: an autostarted daemon binds it before it
    // leaves the folder a relative one was given in (anchored, it could
    // pass the length a socket path may have), and clients name the spool
    // they keep for it by that path too.
    let socket_as_named = socket.clone();
    let mut cfg = Config::with_paths(socket, at(state_dir));
    if let Some(dir) = args.outbox_dir.clone().or(file.outbox_dir) {
        cfg.outbox_dir = at(dir);
    }
    if let Some(d) = pick(
        "upload_interval",
        args.upload_interval.as_ref(),
        file.upload_interval,
        &origins,
        "upload_interval",
        "upload-interval",
        "TELEMETRY_UPLOAD_INTERVAL",
        parse_duration,
    )? {
        cfg.upload_interval = d;
    }
    let retry_min_raw = args.retry_min.clone().or(file.retry_min.clone());
    let retry_max_origin = match args.retry_max {
        Some(_) => origins.cli("retry_max", "retry-max", "TELEMETRY_RETRY_MAX"),
        None => origins.file(),
    };
    let retry_max = pick(
        "retry_max",
        args.retry_max.as_ref(),
        file.retry_max,
        &origins,
        "retry_max",
        "retry-max",
        "TELEMETRY_RETRY_MAX",
        parse_duration,
    )?;
    if let Some(d) = retry_max {
        cfg.retry_max = d;
        cfg.retry_min = cfg.retry_min.min(d);
    }
    if let Some(d) = pick(
        "retry_min",
        args.retry_min.as_ref(),
        file.retry_min,
        &origins,
        "retry_min",
        "retry-min",
        "TELEMETRY_RETRY_MIN",
        parse_duration,
    )? {
        // Both given and at odds: said, not silently resolved (one of
        // them is not what its writer meant). One given alone moves the
        // other's default out of its way.
        if let Some(max) = retry_max.filter(|max| d > *max) {
            return Err(ConfigError::Invalid {
                key: "retry_min",
                origin: match args.retry_min {
                    Some(_) => origins.cli("retry_min", "retry-min", "TELEMETRY_RETRY_MIN"),
                    None => origins.file(),
                },
                value: retry_min_raw.unwrap_or_default(),
                reason: format!(
                    "longer than retry_max ({}, from {retry_max_origin}): the first retry's wait cannot exceed the longest",
                    humantime::format_duration(max)
                ),
            });
        }
        cfg.retry_min = d;
    }
    cfg.retry_max = cfg.retry_max.max(cfg.retry_min);
    if let Some(d) = pick(
        "s3.timeout",
        args.s3_timeout.as_ref(),
        fs3.timeout.clone(),
        &origins,
        "s3_timeout",
        "s3-timeout",
        "TELEMETRY_S3_TIMEOUT",
        parse_duration,
    )? {
        cfg.s3_timeout = d;
    }
    if let Some(d) = pick(
        "connection_timeout",
        args.connection_timeout.as_ref(),
        file.connection_timeout,
        &origins,
        "connection_timeout",
        "connection-timeout",
        "TELEMETRY_CONNECTION_TIMEOUT",
        parse_duration,
    )? {
        cfg.connection_timeout = d;
    }
    if let Some(n) = pick(
        "max_connections",
        args.max_connections.as_ref(),
        file.max_connections.map(|n| n.to_string()),
        &origins,
        "max_connections",
        "max-connections",
        "TELEMETRY_MAX_CONNECTIONS",
        parse_connections,
    )? {
        cfg.max_connections = n;
    }
    if let Some(d) = pick(
        "spool_check_interval",
        args.spool_check_interval.as_ref(),
        file.spool_check_interval,
        &origins,
        "spool_check_interval",
        "spool-check-interval",
        "TELEMETRY_SPOOL_CHECK_INTERVAL",
        parse_duration,
    )? {
        cfg.spool_check_interval = d;
    }
    if let Some(n) = pick(
        "max_store_bytes",
        args.max_store_bytes.as_ref(),
        file.max_store_bytes.map(|n| n.to_string()),
        &origins,
        "max_store_bytes",
        "max-store-bytes",
        "TELEMETRY_MAX_STORE_BYTES",
        parse_count,
    )? {
        cfg.max_store_bytes = n as u64;
    }
    if let Some(n) = pick(
        "batch_max_events",
        args.batch_max_events.as_ref(),
        file.batch_max_events.map(|n| n.to_string()),
        &origins,
        "batch_max_events",
        "batch-max-events",
        "TELEMETRY_BATCH_MAX_EVENTS",
        parse_count,
    )? {
        cfg.batch_max_events = n;
    }
    if let Some(n) = pick(
        "batch_max_bytes",
        args.batch_max_bytes.as_ref(),
        file.batch_max_bytes.map(|n| n.to_string()),
        &origins,
        "batch_max_bytes",
        "batch-max-bytes",
        "TELEMETRY_BATCH_MAX_BYTES",
        parse_count,
    )? {
        cfg.batch_max_bytes = n;
    }
    if let Some(s) = pick(
        "sync",
        args.sync.as_ref(),
        file.sync,
        &origins,
        "sync",
        "sync",
        "TELEMETRY_SYNC",
        parse_sync,
    )? {
        cfg.sync = s;
    }
    if let Some(p) = args.machine_id_file.clone().or(file.machine_id_file) {
        cfg.identity = IdentitySource::File(at(p));
    }
    cfg.consent_file = at(args
        .consent_file
        .clone()
        .or(file.consent_file)
        .unwrap_or_else(|| paths::default_consent_file(&cfg.state_dir)));
    cfg.spool_file = paths::spool_file_for(&cfg.state_dir, &socket_as_named);
    cfg.spool_dir = paths::spool_dir_for(&cfg.state_dir, &socket_as_named);
    cfg.system_consent_file = at(args
        .system_consent_file
        .clone()
        .or(file.system_consent_file)
        .unwrap_or_else(|| paths::system_consent_file(&env)));
    if let Some(dir) = args
        .catalog_dir
        .clone()
        .or(file.catalog_dir)
        .or_else(|| paths::default_catalog_dir(&env))
    {
        cfg.catalog_dir = at(dir);
    }
    cfg.manifest_system_dirs = crate::catalog::system_dirs(
        env("XDG_DATA_DIRS")
            .and_then(|v| v.into_string().ok())
            .as_deref(),
        env("ProgramData").map(PathBuf::from).as_deref(),
    )
    .into_iter()
    .map(at)
    .collect();
    cfg.idle_exit = pick(
        "idle_exit",
        args.idle_exit.as_ref(),
        file.idle_exit,
        &origins,
        "idle_exit",
        "idle-exit",
        "TELEMETRY_IDLE_EXIT",
        parse_duration,
    )?;
    if let Some(trim) = pick(
        "idle_trim",
        args.idle_trim.as_ref(),
        file.idle_trim,
        &origins,
        "idle_trim",
        "idle-trim",
        "TELEMETRY_IDLE_TRIM",
        |s| match s.trim() {
            "off" => Ok(None),
            d => parse_duration(d)
                .map(Some)
                .map_err(|e| format!("{e}, or off")),
        },
    )? {
        cfg.idle_trim = trim;
    }
    cfg.notify_socket = env("NOTIFY_SOCKET")
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty());
    let watchdog_for_us = env("WATCHDOG_PID")
        .and_then(|p| p.into_string().ok())
        .is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
    cfg.watchdog = env("WATCHDOG_USEC")
        .and_then(|v| v.into_string().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|us| *us > 0 && watchdog_for_us)
        .map(Duration::from_micros);
    // Read and checked now, so a bad bundle or proxy stops the start with
    // the file's or variable's name instead of failing every upload.
    let ca_bundle = match (&args.ca_bundle, file.ca_bundle) {
        (Some(p), _) => Some((
            at(p.clone()),
            origins.cli("ca_bundle", "ca-bundle", telemetry_sink::net::CA_BUNDLE_VAR),
        )),
        (None, Some(p)) => Some((at(p), format!("`ca_bundle` in {}", origins.file()))),
        (None, None) => None,
    };
    cfg.net = telemetry_sink::net::NetOptions::from_env(
        &env,
        ca_bundle.as_ref().map(|(p, o)| (p.as_path(), o.as_str())),
    )?;
    // An autostarted daemon's environment is whichever client's started
    // it: an opt-out there belongs to that shell (whose clients check it
    // themselves), and must not turn every product off for every other
    // CLI and shell until the daemon exits.
    cfg.env_opt_out = !args.autostarted
        && telemetry_proto::consent::OPT_OUT_VARS
            .iter()
            .any(|v| telemetry_proto::consent::env_opts_out_os(env(v).as_deref()));

    let bucket = pick(
        "s3.bucket",
        args.s3_bucket.as_ref(),
        fs3.bucket,
        &origins,
        "s3_bucket",
        "s3-bucket",
        "TELEMETRY_S3_BUCKET",
        telemetry_sink::s3::parse_bucket,
    )?;
    let prefix = args
        .s3_prefix
        .clone()
        .or(fs3.prefix)
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_default();
    let endpoint = pick(
        "s3.endpoint",
        args.s3_endpoint.as_ref(),
        fs3.endpoint,
        &origins,
        "s3_endpoint",
        "s3-endpoint",
        "TELEMETRY_S3_ENDPOINT",
        telemetry_sink::s3::parse_endpoint,
    )?;
    let region = args
        .s3_region
        .clone()
        .or(fs3.region)
        .filter(|r| !r.is_empty());
    let path_style = pick(
        "s3.path_style",
        args.s3_path_style.as_ref(),
        fs3.path_style.map(|b| b.to_string()),
        &origins,
        "s3_path_style",
        "s3-path-style",
        "TELEMETRY_S3_PATH_STYLE",
        parse_bool,
    )?
    // Custom endpoints are almost always self-hosted stores that need
    // path-style; AWS itself prefers virtual-hosted.
    .unwrap_or(endpoint.is_some());
    cfg.s3 = bucket.map(|bucket| S3Config {
        bucket,
        prefix,
        endpoint,
        region,
        path_style,
    });
    Ok(cfg)
}

/// `path` taken from `base`, when the daemon has left the directory it was
/// started in and `path` is relative.
fn anchored(base: Option<&Path>, path: PathBuf) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

/// Refuse a given socket path that cannot be bound, naming where it came
/// from, before anything (socket or state directory) is created.
#[cfg(unix)]
fn check_socket_len(
    path: &Path,
    origin: String,
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> Result<(), ConfigError> {
    let Err(crate::socket::SocketError::PathTooLong { len, max, .. }) =
        crate::socket::check_path_len(path)
    else {
        return Ok(());
    };
    let default = telemetry_proto::paths::default_socket_path(env, uid);
    let example = if default.as_os_str().len() <= max {
        default
    } else {
        crate::socket::short_example(uid)
    };
    Err(ConfigError::Invalid {
        key: "socket",
        origin,
        value: path.display().to_string(),
        reason: format!(
            "{}; pass a shorter --socket or TELEMETRY_SOCKET, e.g. {}",
            crate::socket::too_long_reason(len, max),
            example.display()
        ),
    })
}

/// A pipe name has no length limit short of Windows' 256 characters, which
/// opening it reports.
#[cfg(not(unix))]
fn check_socket_len(
    _path: &Path,
    _origin: String,
    _env: impl Fn(&str) -> Option<OsString>,
    _uid: u32,
) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn args_from(argv: &[&str]) -> (Args, ArgMatches) {
        let m = Args::command().try_get_matches_from(argv).unwrap();
        (Args::from_arg_matches(&m).unwrap(), m)
    }

    /// telemetry-report reads this file too, and refuses keys that are
    /// neither its nor this daemon's: its list must be this one.
    #[test]
    fn the_reports_list_of_the_daemons_keys_is_this_one() {
        let e = toml::from_str::<FileConfig>("no_such_key = 1\n")
            .map(|_| ())
            .expect_err("an unknown key is refused")
            .to_string();
        let expected = e
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("serde's message changed: {e}"));
        let mut ours: Vec<&str> = expected
            .split(',')
            .map(|k| k.trim().trim_matches('`'))
            .map(|k| k.split('`').next().unwrap_or(k))
            .filter(|k| !k.is_empty())
            .collect();
        ours.sort_unstable();
        let mut theirs = telemetry_sink::settings::DAEMON_KEYS.to_vec();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "{e}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_base_dir_but_the_socket_is_kept_as_named() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("c.toml"), "outbox_dir = \"o\"\n").unwrap();
        let (mut args, m) = args_from(&[
            "telemetryd",
            "--config",
            "c.toml",
            "--state-dir",
            "s",
            "--socket",
            "r/x.sock",
        ]);
        args.base_dir = Some(base.path().to_path_buf());
        let cfg = load(&args, Some(&m), no_env, 1).unwrap();
        let b = base.path();
        assert_eq!(cfg.state_dir, b.join("s"));
        assert_eq!(
            cfg.socket_path,
            Path::new("r/x.sock"),
            "bound before the move"
        );
        assert_eq!(
            cfg.outbox_dir,
            b.join("o"),
            "read from the file named relative"
        );
        // A client given `r/x.sock` keeps its spool under that name.
        assert_eq!(
            cfg.spool_file,
            telemetry_proto::paths::spool_file_for(&b.join("s"), Path::new("r/x.sock"))
        );
    }

    #[test]
    fn file_fills_what_flags_leave_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "upload_interval = \"10m\"\nbatch_max_events = 7\n[s3]\nbucket = \"from-file\"\nendpoint = \"http://127.0.0.1:9000/\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let (args, m) = args_from(&[
            "telemetryd",
            "--config",
            f,
            "--batch-max-events",
            "9",
            "--socket",
            "/s",
        ]);
        let cfg = load(&args, Some(&m), no_env, 1).unwrap();
        assert_eq!(cfg.upload_interval, Duration::from_secs(600));
        assert_eq!(cfg.batch_max_events, 9);
        assert_eq!(cfg.socket_path, PathBuf::from("/s"));
        let s3 = cfg.s3.unwrap();
        assert_eq!(s3.bucket, "from-file");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.path_style, "custom endpoints default to path-style");
    }

    #[test]
    fn idle_trim_takes_a_duration_or_off_and_names_itself_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let f = file.to_str().unwrap();
        std::fs::write(&file, "idle_trim = \"off\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", f]);
        assert_eq!(load(&args, Some(&m), no_env, 1).unwrap().idle_trim, None);
        let (args, m) = args_from(&["telemetryd", "--config", f, "--idle-trim", "2m"]);
        assert_eq!(
            load(&args, Some(&m), no_env, 1).unwrap().idle_trim,
            Some(Duration::from_secs(120)),
            "the flag wins"
        );
        std::fs::write(&file, "idle_trim = \"never\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", f]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("idle_trim") && err.contains("c.toml") && err.contains("or off"),
            "{err}"
        );
    }

    #[test]
    fn bad_file_value_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "upload_interval = \"soon\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(err.contains("upload_interval"), "{err}");
        assert!(err.contains(file.to_str().unwrap()), "{err}");
    }

    #[test]
    fn a_retry_min_longer_than_the_retry_max_given_beside_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "retry_min = \"10m\"\nretry_max = \"1m\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("retry_min")
                && err.contains("retry_max (1m, from config file ")
                && err.contains("c.toml"),
            "{err}"
        );
        let (args, m) = args_from(&[
            "telemetryd",
            "--config",
            file.to_str().unwrap(),
            "--retry-min",
            "2m",
        ]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("--retry-min") && err.contains("\"2m\""),
            "{err}"
        );
        assert!(err.contains("retry_max (1m, from config file "), "{err}");
        // Alone, either moves the other's default out of its way.
        std::fs::write(&file, "retry_min = \"10m\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let cfg = load(&args, Some(&m), no_env, 1).unwrap();
        assert_eq!(
            (cfg.retry_min, cfg.retry_max),
            (Duration::from_secs(600), Duration::from_secs(600))
        );
        std::fs::write(&file, "retry_max = \"500ms\"\n").unwrap();
        let cfg = load(&args, Some(&m), no_env, 1).unwrap();
        assert_eq!(
            (cfg.retry_min, cfg.retry_max),
            (Duration::from_millis(500), Duration::from_millis(500))
        );
    }

    #[test]
    fn unknown_key_and_wrong_type_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[s3]\nbuckett = \"x\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(err.contains("buckett") && err.contains("c.toml"), "{err}");

        std::fs::write(&file, "batch_max_events = \"many\"\n").unwrap();
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("batch_max_events") && err.contains("c.toml"),
            "{err}"
        );
    }

    #[test]
    fn missing_named_file_is_an_error_but_missing_default_is_not() {
        let (args, m) = args_from(&["telemetryd", "--config", "/nonexistent/telemetry.toml"]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/telemetry.toml"), "{err}");

        let (args, m) = args_from(&["telemetryd"]);
        let env = |k: &str| (k == "HOME").then(|| OsString::from("/nonexistent-home"));
        let cfg = load(&args, Some(&m), env, 1).unwrap();
        assert_eq!(
            cfg.state_dir,
            PathBuf::from("/nonexistent-home/.local/state/telemetry")
        );
        assert!(cfg.s3.is_none());
        assert_eq!(cfg.outbox_dir, cfg.state_dir.join("outbox"));
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        let (args, m) = args_from(&[
            "telemetryd",
            "--s3-bucket",
            "Not_A_Bucket",
            "--config",
            "/dev/null",
        ]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("--s3-bucket") && err.contains("s3.bucket"),
            "{err}"
        );
    }

    #[test]
    fn a_config_file_that_is_a_device_is_refused_naming_it() {
        let (args, m) = args_from(&["telemetryd", "--config", "/dev/zero"]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        assert!(
            err.contains("/dev/zero") && err.contains("larger than"),
            "{err}"
        );
    }

    #[test]
    fn an_absurd_connection_count_is_refused_naming_the_flag() {
        for n in [
            "9223372036854775807",
            "18446744073709551616",
            "1000001",
            "0",
        ] {
            let (args, m) = args_from(&[
                "telemetryd",
                "--max-connections",
                n,
                "--config",
                "/dev/null",
            ]);
            let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
            assert!(
                err.contains("--max-connections") && err.contains("1 to 1000000"),
                "{n}: {err}"
            );
        }
        let (args, m) = args_from(&[
            "telemetryd",
            "--max-connections",
            "1000000",
            "--config",
            "/dev/null",
        ]);
        assert_eq!(
            load(&args, Some(&m), no_env, 1).unwrap().max_connections,
            1_000_000
        );
    }

    #[test]
    fn service_manager_variables() {
        let (args, m) = args_from(&["telemetryd", "--config", "/dev/null"]);
        let me = std::process::id().to_string();
        let env = |pid: &str| {
            let pid = pid.to_string();
            move |k: &str| match k {
                "NOTIFY_SOCKET" => Some(OsString::from("@sd")),
                "WATCHDOG_USEC" => Some(OsString::from("2000000")),
                "WATCHDOG_PID" => Some(OsString::from(pid.clone())),
                _ => None,
            }
        };
        let cfg = load(&args, Some(&m), env(&me), 1).unwrap();
        assert_eq!(cfg.notify_socket.as_deref(), Some("@sd"));
        assert_eq!(cfg.watchdog, Some(Duration::from_secs(2)));
        let other = load(&args, Some(&m), env("1"), 1).unwrap();
        assert_eq!(other.watchdog, None, "the watchdog is for another process");
    }

    /// Every argument of `cmd` and its subcommands that takes a value.
    fn value_args(cmd: &clap::Command) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = cmd
            .get_arguments()
            // A hidden argument shows no help to state a default in.
            .filter(|a| a.get_action().takes_values() && !a.is_hide_set())
            .map(|a| {
                let name = format!("{} {}", cmd.get_name(), a.get_id());
                (
                    name,
                    a.get_help().map(|h| h.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        for sub in cmd.get_subcommands() {
            out.extend(value_args(sub));
        }
        out
    }

    #[test]
    fn every_flag_with_a_value_states_its_default_in_help() {
        let args = value_args(&Args::command());
        assert!(args.len() > 25, "{args:?}");
        for (name, help) in &args {
            assert!(
                help.to_ascii_lowercase().contains("default"),
                "{name}: help states no default: {help:?}"
            );
        }
        // The stated defaults are the real ones.
        let real = Config::with_paths("/s".into(), "/d".into());
        let help = |id: &str| {
            let (_, h) = args
                .iter()
                .find(|(n, _)| n == &format!("telemetryd {id}"))
                .unwrap();
            h.clone()
        };
        let stated = |id: &str| {
            let h = help(id);
            let from = h.find("(default ").unwrap_or_else(|| panic!("{id}: {h}")) + 9;
            h[from..from + h[from..].find(')').unwrap()].to_string()
        };
        for (id, value) in [
            ("upload_interval", real.upload_interval),
            ("retry_max", real.retry_max),
            ("retry_min", real.retry_min),
            ("s3_timeout", real.s3_timeout),
            ("connection_timeout", real.connection_timeout),
            ("spool_check_interval", real.spool_check_interval),
            ("idle_trim", real.idle_trim.expect("on by default")),
        ] {
            assert_eq!(parse_duration(&stated(id)).unwrap(), value, "{id}");
        }
        for (id, value) in [
            ("batch_max_events", real.batch_max_events as u64),
            ("batch_max_bytes", real.batch_max_bytes as u64),
            ("max_connections", real.max_connections as u64),
            ("max_store_bytes", real.max_store_bytes),
        ] {
            assert_eq!(parse_count(&stated(id)).unwrap() as u64, value, "{id}");
        }
        assert_eq!(parse_sync(&stated("sync")).unwrap(), real.sync);
        // The help names the Unix default (on Windows it is %ProgramData%).
        #[cfg(unix)]
        assert!(
            help("system_consent_file").contains(&real.system_consent_file.display().to_string())
        );
        #[cfg(unix)]
        {
            let max = crate::socket::max_path_len();
            assert!(
                help("socket").contains(&max.to_string()),
                "{}",
                help("socket")
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_path_over_the_limit_is_refused_naming_its_origin() {
        let max = crate::socket::max_path_len();
        let long = format!("/tmp/{}", "s".repeat(max - 4));
        assert_eq!(long.len(), max + 1);
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| OsString::from("/run/user/7"));

        let (args, m) = args_from(&["telemetryd", "--config", "/dev/null", "--socket", &long]);
        let err = load(&args, Some(&m), env, 7).unwrap_err().to_string();
        for want in [
            "flag --socket",
            "`socket`",
            long.as_str(),
            &format!("{} bytes long", max + 1),
            &format!("at most {max} bytes"),
            "e.g. /run/user/7/telemetry/telemetryd.sock",
        ] {
            assert!(err.contains(want), "{want:?} not in {err}");
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("socket = \"{long}\"\n")).unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let err = load(&args, Some(&m), no_env, 7).unwrap_err().to_string();
        assert!(
            err.contains(&format!("config file {}", file.display())),
            "{err}"
        );

        // One byte less fits.
        let fits = &long[..long.len() - 1];
        let (args, m) = args_from(&["telemetryd", "--config", "/dev/null", "--socket", fits]);
        assert_eq!(
            load(&args, Some(&m), env, 7).unwrap().socket_path,
            PathBuf::from(fits)
        );
    }

    #[test]
    fn a_ca_bundle_from_the_file_is_checked_at_load_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "ca_bundle = \"/nonexistent/corp-ca.pem\"\n").unwrap();
        let (args, m) = args_from(&["telemetryd", "--config", file.to_str().unwrap()]);
        let err = load(&args, Some(&m), no_env, 1).unwrap_err().to_string();
        for want in [
            "/nonexistent/corp-ca.pem",
            "`ca_bundle` in config file",
            "c.toml",
        ] {
            assert!(err.contains(want), "{want:?} not in {err}");
        }
        let (args, m) = args_from(&["telemetryd", "--config", "/dev/null"]);
        let env = |k: &str| (k == "HTTPS_PROXY").then(|| OsString::from("proxy:3128"));
        let cfg = load(&args, Some(&m), env, 1).unwrap();
        assert_eq!(cfg.net.proxy.https.as_deref(), Some("http://proxy:3128"));
        assert!(cfg.net.ca_bundle.is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("31days").is_err());
        assert!(parse_duration("100000000years").is_err());
    }
}
