//! The daemon's default destination as another program reads it: the
//! `[s3]` table, `outbox_dir` and `state_dir` of the daemon's config file,
//! under the same `TELEMETRY_S3_*` flags and variables (flag or variable >
//! file > default). `telemetry-report` uses this, so it needs neither the
//! daemon's crate nor a config file that is valid for the daemon: keys that
//! only the daemon uses are not its business and are not read.

use crate::net::{NetError, NetOptions};
use crate::s3::{parse_bucket, parse_endpoint, S3Settings};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The flags (each with its environment variable) that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `TELEMETRY_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--s3-bucket` / `TELEMETRY_S3_BUCKET`.
    pub bucket: Option<String>,
    /// `--s3-prefix` / `TELEMETRY_S3_PREFIX`.
    pub prefix: Option<String>,
    /// `--s3-endpoint` / `TELEMETRY_S3_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `--s3-region` / `TELEMETRY_S3_REGION`.
    pub region: Option<String>,
    /// `--s3-path-style` / `TELEMETRY_S3_PATH_STYLE`.
    pub path_style: Option<String>,
    /// `--s3-timeout` / `TELEMETRY_S3_TIMEOUT`.
    pub timeout: Option<String>,
    /// `--ca-bundle` / `TELEMETRY_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
}

/// The resolved destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The bucket, if one is configured.
    pub s3: Option<S3Settings>,
    /// Longest one S3 request may take.
    pub s3_timeout: Duration,
    /// The daemon's outbox (where batches go without a bucket).
    pub outbox_dir: PathBuf,
    /// Proxy and CA bundle.
    pub net: NetOptions,
}

/// A setting that cannot be used; names the file or variable and the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not TOML, or its `[s3]` table has a key this
    /// version does not know.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the line).
        message: String,
    },
    /// A value is present but invalid.
    #[error("{origin}: invalid value {value:?} for `{key}`: {reason}")]
    Invalid {
        /// The key, e.g. `s3.bucket`.
        key: &'static str,
        /// Where the value came from.
        origin: String,
        /// The value as given.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// The CA bundle or a proxy variable cannot be used.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Every top-level key of the daemon's config file (`telemetryd`'s tests
/// check this is its list). The report reads the same file and ignores the
/// daemon's keys, but refuses any other: a slip (`[S3]`) would otherwise
/// send a report to the wrong place without a word.
pub const DAEMON_KEYS: &[&str] = &[
    "socket",
    "state_dir",
    "outbox_dir",
    "upload_interval",
    "batch_max_events",
    "batch_max_bytes",
    "retry_max",
    "retry_min",
    "connection_timeout",
    "max_connections",
    "max_store_bytes",
    "spool_check_interval",
    "sync",
    "machine_id_file",
    "catalog_dir",
    "consent_file",
    "system_consent_file",
    "idle_exit",
    "idle_trim",
    "ca_bundle",
    "s3",
];

/// The parts of the daemon's config file read here; the daemon's other
/// keys are ignored, valid or not (see [`DAEMON_KEYS`]).
#[derive(Deserialize, Default)]
struct File {
    state_dir: Option<PathBuf>,
    outbox_dir: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    s3: Option<FileS3>,
}

/// `[s3]`: strict, because a typo here would silently send a report to
/// the wrong place.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    timeout: Option<String>,
}

/// Resolve the destination. `env` is the process environment (for the
/// XDG defaults and the proxy variables) and `uid` the user, both injected.
pub fn resolve(
    o: &Overrides,
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> Result<Destination, SettingsError> {
    use telemetry_proto::paths;
    let (path, explicit) = match &o.config {
        Some(p) => (Some(p.clone()), true),
        None => (paths::default_config_file(&env), false),
    };
    let file: File = match &path {
        Some(p) => match telemetry_platform::fs::read_config_text(p) {
            Ok(text) => {
                // The keys not read here, through serde_ignored rather than
                // a flattened catch-all, which would cost the `[s3]` table's
                // errors their line.
                let mut others = Vec::new();
                let file: File =
                    serde_ignored::deserialize(toml::Deserializer::new(&text), |key| {
                        others.push(key.to_string())
                    })
                    .map_err(|e| SettingsError::Parse {
                        path: p.clone(),
                        message: e.to_string().trim_end().replace('\n', " "),
                    })?;
                if let Some(key) = others.iter().find(|k| !DAEMON_KEYS.contains(&k.as_str())) {
                    let near = DAEMON_KEYS
                        .iter()
                        .find(|d| d.eq_ignore_ascii_case(key))
                        .map(|d| format!(" (did you mean `{d}`?)"))
                        .unwrap_or_default();
                    return Err(SettingsError::Parse {
                        path: p.clone(),
                        message: format!(
                            "unknown key `{key}`{near}: neither telemetry-report nor telemetryd reads it (a key of a newer telemetryd? update telemetry-report)"
                        ),
                    });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => File::default(),
            Err(source) => {
                return Err(SettingsError::Read {
                    path: p.clone(),
                    source,
                })
            }
        },
        None => File::default(),
    };
    let file_origin = || match &path {
        Some(p) => format!("config file {}", p.display()),
        None => "config file".into(),
    };
    let fs3 = file.s3.unwrap_or_default();
    let pick = |key: &'static str,
                flag: Option<&String>,
                from_file: Option<String>,
                cli: &str,
                parse: &dyn Fn(&str) -> Result<String, String>|
     -> Result<Option<String>, SettingsError> {
        let (raw, origin) = match (flag, from_file) {
            (Some(v), _) => (v.clone(), cli.to_string()),
            (None, Some(v)) => (v, file_origin()),
            (None, None) => return Ok(None),
        };
        parse(&raw)
            .map(Some)
            .map_err(|reason| SettingsError::Invalid {
                key,
                origin,
                value: raw,
                reason,
            })
    };
    let bucket = pick(
        "s3.bucket",
        o.bucket.as_ref(),
        fs3.bucket,
        "--s3-bucket / TELEMETRY_S3_BUCKET",
        &parse_bucket,
    )?;
    let endpoint = pick(
        "s3.endpoint",
        o.endpoint.as_ref(),
        fs3.endpoint,
        "--s3-endpoint / TELEMETRY_S3_ENDPOINT",
        &parse_endpoint,
    )?;
    let path_style = pick(
        "s3.path_style",
        o.path_style.as_ref(),
        fs3.path_style.map(|b| b.to_string()),
        "--s3-path-style / TELEMETRY_S3_PATH_STYLE",
        &|s| parse_bool(s).map(|b| b.to_string()),
    )?
    .map(|b| b == "true")
    // Custom endpoints are almost always self-hosted stores that need
    // path-style, as in the daemon.
    .unwrap_or(endpoint.is_some());
    let timeout = pick(
        "s3.timeout",
        o.timeout.as_ref(),
        fs3.timeout,
        "--s3-timeout / TELEMETRY_S3_TIMEOUT",
        &|s| parse_duration(s).map(|_| s.to_string()),
    )?
    .map(|s| parse_duration(&s).expect("checked above"))
    .unwrap_or(Duration::from_secs(60));
    let prefix = o
        .prefix
        .clone()
        .or(fs3.prefix)
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_default();
    let region = o.region.clone().or(fs3.region).filter(|r| !r.is_empty());
    // As the daemon takes them: its variables before its file.
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let state_dir = var("TELEMETRY_STATE_DIR")
        .or(file.state_dir)
        .unwrap_or_else(|| paths::default_state_dir(&env, uid));
    let outbox_dir = var("TELEMETRY_OUTBOX_DIR")
        .or(file.outbox_dir)
        .unwrap_or_else(|| state_dir.join("outbox"));
    let ca = match (&o.ca_bundle, &file.ca_bundle) {
        (Some(p), _) => Some((p.clone(), "--ca-bundle / TELEMETRY_CA_BUNDLE".to_string())),
        (None, Some(p)) => Some((p.clone(), file_origin())),
        (None, None) => None,
    };
    let net = NetOptions::from_env(
        &env,
        ca.as_ref()
            .map(|(p, origin)| (p.as_path(), origin.as_str())),
    )?;
    Ok(Destination {
        s3: bucket.map(|bucket| S3Settings {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
        }),
        s3_timeout: timeout,
        outbox_dir,
        net,
    })
}

/// Parse `true`/`false` (also 1/0, yes/no, on/off), as every telemetryd
/// setting does.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Longest accepted duration setting: keeps every time computation far from
/// overflow, and nothing here sensibly waits longer.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parse a duration like `30s`, `15m`, `1h`, `1h 30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; expected a duration such as 30s, 15m or 1h"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most 30 days".into());
    }
    Ok(d)
}

/// The config file's path as [`resolve`] reads it, for messages.
pub fn config_path(o: &Overrides, env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    o.config
        .clone()
        .or_else(|| telemetry_proto::paths::default_config_file(env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn with_file(text: &str) -> (tempfile::TempDir, Overrides) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        (
            dir,
            Overrides {
                config: Some(p),
                ..Default::default()
            },
        )
    }

    #[test]
    fn reads_s3_and_outbox_and_ignores_the_daemons_own_keys() {
        let (dir, o) = with_file(
            "upload_interval = \"soon\"\nsync = \"maybe\"\nstate_dir = \"/var/t\"\n[s3]\nbucket = \"my-bucket\"\nprefix = \"/raw/\"\nendpoint = \"http://127.0.0.1:9000/\"\ntimeout = \"5s\"\n",
        );
        let d = resolve(&o, no_env, 1000).unwrap();
        let s3 = d.s3.unwrap();
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.prefix, "raw");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.path_style);
        assert_eq!(d.s3_timeout, Duration::from_secs(5));
        assert_eq!(d.outbox_dir, Path::new("/var/t/outbox"));
        drop(dir);
    }

    #[test]
    fn a_key_no_telemetry_program_reads_is_refused_naming_it() {
        for (text, key, near) in [
            ("[S3]\nbucket = \"telem\"\n", "S3", Some("s3")),
            ("bogus = 1\n", "bogus", None),
            ("State_Dir = \"/x\"\n", "State_Dir", Some("state_dir")),
        ] {
            let (dir, o) = with_file(text);
            let e = match resolve(&o, no_env, 1000) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{text:?} was taken"),
            };
            assert!(e.contains(&format!("unknown key `{key}`")), "{e}");
            assert!(e.contains("config.toml"), "names the file: {e}");
            if let Some(near) = near {
                assert!(e.contains(&format!("did you mean `{near}`")), "{e}");
            }
            drop(dir);
        }
        // A slip inside `[s3]` is named with its line.
        let (dir, o) = with_file("sync = \"full\"\n[s3]\nbucke = \"x\"\n");
        let e = match resolve(&o, no_env, 1000) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("bucke was taken"),
        };
        assert!(e.contains("bucke") && e.contains("line 3"), "{e}");
        drop(dir);
        // Every key of the daemon's is taken (and ignored).
        let all: String = DAEMON_KEYS
            .iter()
            .filter(|k| **k != "s3")
            .map(|k| format!("{k} = 1\n"))
            .collect();
        let (dir, o) = with_file(&format!("{all}[s3]\nbucket = \"my-bucket\"\n"));
        // Wrong types for the keys read here are their own errors.
        let e = resolve(&o, no_env, 1000)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("unknown key"), "{e}");
        drop(dir);
    }

    /// The daemon's variables for its state and outbox come before its
    /// file, as the daemon takes them: a report without --source reads
    /// the outbox the daemon writes.
    #[test]
    fn the_outbox_follows_the_daemons_variables() {
        let (dir, o) = with_file("state_dir = \"/var/t\"\noutbox_dir = \"/var/o\"\n");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let outbox = |vars| resolve(&o, env(vars), 1000).unwrap().outbox_dir;
        assert_eq!(outbox(&[]), Path::new("/var/o"));
        assert_eq!(
            outbox(&[("TELEMETRY_OUTBOX_DIR", "/env/o")]),
            Path::new("/env/o")
        );
        assert_eq!(outbox(&[("TELEMETRY_OUTBOX_DIR", "")]), Path::new("/var/o"));
        let (_dir2, bare) = with_file("");
        let outbox = |vars| resolve(&bare, env(vars), 1000).unwrap().outbox_dir;
        assert_eq!(
            outbox(&[("TELEMETRY_STATE_DIR", "/env/s")]),
            Path::new("/env/s/outbox")
        );
        drop(dir);
    }

    #[test]
    fn flags_win_and_errors_name_key_and_origin() {
        let (_dir, mut o) = with_file("[s3]\nbucket = \"file-bucket\"\n");
        o.bucket = Some("flag-bucket".into());
        assert_eq!(
            resolve(&o, no_env, 1000).unwrap().s3.unwrap().bucket,
            "flag-bucket"
        );
        o.bucket = Some("Bad_Bucket".into());
        let e = resolve(&o, no_env, 1000).unwrap_err().to_string();
        assert!(
            e.contains("s3.bucket") && e.contains("TELEMETRY_S3_BUCKET"),
            "{e}"
        );
        let (_dir, o) = with_file("[s3]\nbukcet = \"x\"\n");
        let e = resolve(&o, no_env, 1000).unwrap_err().to_string();
        assert!(e.contains("bukcet") && e.contains("config.toml"), "{e}");
        let (_dir, o) = with_file("[s3]\npath_style = \"yes\"\n");
        assert!(resolve(&o, no_env, 1000).is_err());
    }
}
