//! Settings: each a flag, an environment variable and a key in the TOML
//! file given by `--config`; flag > environment > file > default, like
//! the daemon's. Errors name the setting and where its value came from.

use crate::limit::Rate;
use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use telemetry_sink::S3Settings;

/// The longest a presigned URL may live: short enough that a leaked URL is
/// useless soon, long enough for a slow link to send a capped batch.
pub const MAX_URL_LIFETIME: Duration = Duration::from_secs(600);

/// The most `--max-connections` may be: far past what an open-file limit
/// allows (main lowers it to that), and far below what tokio's semaphore
/// holds (it panics past `usize::MAX >> 3`, reachable where no open-file
/// limit applies, as on Windows).
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// Environment variable fixing "today" (`YYYY-MM-DD`) for the day window,
/// for reproducible runs and tests, like `TELEMETRY_REPORT_TODAY`.
pub const TODAY_VAR: &str = "TELEMETRY_BROKER_TODAY";

/// Command line (each flag also an environment variable).
#[derive(Debug, Parser)]
#[command(
    name = "telemetry-broker",
    version,
    about = "Checks telemetry batch metadata and answers with a presigned, write-once S3 PUT."
)]
pub struct Args {
    /// TOML settings file (keys as the flags, with `_`; S3 in `[s3]`).
    #[arg(long, env = "TELEMETRY_BROKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8480].
    #[arg(long, env = "TELEMETRY_BROKER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of product manifests (`PRODUCT.toml`): only these
    /// products are accepted.
    #[arg(long, env = "TELEMETRY_BROKER_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Bucket the URLs write to.
    #[arg(long, env = "TELEMETRY_S3_BUCKET", value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// Key prefix.
    #[arg(long, env = "TELEMETRY_S3_PREFIX", value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Endpoint URL of an S3-compatible store.
    #[arg(long, env = "TELEMETRY_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region (else the AWS chain's, else us-east-1).
    #[arg(long, env = "TELEMETRY_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Path-style URLs (default: on with an endpoint).
    #[arg(long, env = "TELEMETRY_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// How long a presigned URL works, at most 10m [default: 5m].
    #[arg(long, env = "TELEMETRY_BROKER_URL_LIFETIME", value_name = "DURATION")]
    pub url_lifetime: Option<String>,
    /// Largest batch accepted, in bytes, 1 to 4294967295 (under 4GiB, what
    /// --bytes-per-network can grant at most) [default: 8388608].
    #[arg(long, env = "TELEMETRY_BROKER_MAX_BYTES", value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// How many days old a batch's day may be (a day ahead is always allowed) [default: 45].
    #[arg(long, env = "TELEMETRY_BROKER_DAY_WINDOW", value_name = "DAYS")]
    pub day_window: Option<u32>,
    /// Requests per client address, as N/DURATION (every rate's DURATION
    /// at most 1y) [default: 120/1m].
    #[arg(long, env = "TELEMETRY_BROKER_PER_ADDRESS", value_name = "RATE")]
    pub per_address: Option<String>,
    /// Requests per IPv6 network (see --network-prefix; a /48, a site's
    /// usual allocation, holds 65,536 /64s, each its own address to
    /// --per-address), as N/DURATION; IPv4 clients are limited per address
    /// only [default: 1200/1m].
    #[arg(long, env = "TELEMETRY_BROKER_PER_NETWORK", value_name = "RATE")]
    pub per_network: Option<String>,
    /// Prefix length of the networks --per-network counts, 32 to 64: 56
    /// where providers hand each customer a /56 [default: 48].
    #[arg(long, env = "TELEMETRY_BROKER_NETWORK_PREFIX", value_name = "BITS")]
    pub network_prefix: Option<u8>,
    /// Bytes of batches granted per IPv4 address or IPv6 network (see
    /// --network-prefix), as N[KiB|MiB|GiB]/DURATION: what one caller may
    /// store in the bucket, whatever machine8 it claims; at least
    /// --max-bytes, under 4GiB [default: 1GiB/1h, or --max-bytes per hour if
    /// larger].
    #[arg(long, env = "TELEMETRY_BROKER_BYTES_PER_NETWORK", value_name = "RATE")]
    pub bytes_per_network: Option<String>,
    /// Requests per product and machine8, as N/DURATION [default: 20/1h].
    #[arg(long, env = "TELEMETRY_BROKER_PER_MACHINE", value_name = "RATE")]
    pub per_machine: Option<String>,
    /// Keys each rate limiter remembers [default: 100000].
    #[arg(long, env = "TELEMETRY_BROKER_MAX_TRACKED", value_name = "N")]
    pub max_tracked: Option<usize>,
    /// Retired products (`PRODUCT`) and builds (`PRODUCT@BUILD`),
    /// comma-separated: answered with 410.
    #[arg(
        long,
        env = "TELEMETRY_BROKER_RETIRED",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub retired: Option<Vec<String>>,
    /// Header holding the client's address, set by a trusted load balancer
    /// (its last entry is used), e.g. x-forwarded-for. Believed only from a
    /// peer in --trusted-proxies. Unset: the peer.
    #[arg(long, env = "TELEMETRY_BROKER_CLIENT_IP_HEADER", value_name = "NAME")]
    pub client_ip_header: Option<String>,
    /// Which entry of --client-ip-header, counted from its end, is the
    /// client: the number of addresses your load balancers append, 1 to 8
    /// (Google Cloud's external Application Load Balancer appends the
    /// client's and its own: 2) [default: 1].
    #[arg(long, env = "TELEMETRY_BROKER_CLIENT_IP_HOPS", value_name = "N")]
    pub client_ip_hops: Option<usize>,
    /// Networks (CIDR, comma-separated) whose connections may name the
    /// client in --client-ip-header: the load balancers'. Anyone else's
    /// header is ignored, and their connections are capped per address
    /// `none` trusts no peer [default: loopback and private ranges:
    /// 127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
    /// 100.64.0.0/10, ::1/128, fc00::/7].
    #[arg(
        long,
        env = "TELEMETRY_BROKER_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Connections served at once, 1 to 1000000 [default: 1024].
    #[arg(long, env = "TELEMETRY_BROKER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address (an IPv4 address
    /// or IPv6 /64), so one host cannot hold every connection; not applied
    /// to a load balancer in --trusted-proxies when --client-ip-header is
    /// set (it must cap its clients), applied to every other peer; at
    /// least 1 [default: 32].
    #[arg(
        long,
        env = "TELEMETRY_BROKER_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N"
    )]
    pub max_connections_per_address: Option<usize>,
    /// How long a connection may wait for its client to read an answer
    /// (a client that pipelines requests and never reads would otherwise
    /// hold its connection for good), at most 10m [default: 10s].
    #[arg(long, env = "TELEMETRY_BROKER_SEND_TIMEOUT", value_name = "DURATION")]
    pub send_timeout: Option<String>,
    /// How long one connection is kept alive at most: the answer after it
    /// closes the connection (a client that sends a request now and then
    /// would otherwise hold its place for good), 1s to 1h [default: 60s].
    #[arg(
        long,
        env = "TELEMETRY_BROKER_MAX_CONNECTION_AGE",
        value_name = "DURATION"
    )]
    pub max_connection_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    manifests: Option<PathBuf>,
    url_lifetime: Option<String>,
    max_bytes: Option<u64>,
    day_window: Option<u32>,
    per_address: Option<String>,
    per_network: Option<String>,
    network_prefix: Option<u8>,
    per_machine: Option<String>,
    bytes_per_network: Option<String>,
    max_tracked: Option<usize>,
    retired: Option<Vec<String>>,
    client_ip_header: Option<String>,
    client_ip_hops: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    send_timeout: Option<String>,
    max_connection_age: Option<String>,
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
}

/// The broker's settings, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Manifest directory.
    pub manifests: PathBuf,
    /// Where URLs point.
    pub s3: S3Settings,
    /// Lifetime of a presigned URL (≤ [`MAX_URL_LIFETIME`]).
    pub url_lifetime: Duration,
    /// Largest batch, in bytes.
    pub max_bytes: u64,
    /// Accepted distance of a batch's day from today, in days.
    pub day_window: u32,
    /// Today as a day number, when fixed by [`TODAY_VAR`].
    pub today: Option<i64>,
    /// Per-address rate.
    pub per_address: Rate,
    /// Per-IPv6-network rate.
    pub per_network: Rate,
    /// Prefix length of the networks `per_network` counts (32 to 64).
    pub network_prefix: u8,
    /// Per-(product, machine8) rate.
    pub per_machine: Rate,
    /// Bytes granted per IPv4 address or IPv6 network.
    pub bytes_per_network: Rate,
    /// Keys each limiter remembers.
    pub max_tracked: usize,
    /// `PRODUCT` and `PRODUCT@BUILD` entries answered with 410.
    pub retired: Vec<String>,
    /// Lowercase header name carrying the client address, if trusted.
    pub client_ip_header: Option<String>,
    /// The client's entry in that header, counted from its end (1: the
    /// last).
    pub client_ip_hops: usize,
    /// Peers whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `trusted_proxies` is the default list (no one set it).
    pub trusted_proxies_by_default: bool,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Concurrent connections from one client address (unless
    /// `client_ip_header` is set).
    pub max_connections_per_address: usize,
    /// How long a write to a client may make no progress.
    pub send_timeout: Duration,
    /// How long one connection is kept alive at most.
    pub max_connection_age: Duration,
}

impl Settings {
    /// Resolve `args` over the file they name (if any) and the defaults.
    /// `today` is [`TODAY_VAR`]'s value, if set.
    pub fn load(args: Args, today: Option<String>) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        // The flag and its variable by name (clap knows which), so the
        // operator can find the setting wherever it was made.
        let command = <Args as clap::CommandFactory>::command();
        let origin = |flag: &str| {
            let var = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .and_then(|a| a.get_env())
                .map(|v| format!(" / {}", v.to_string_lossy()))
                .unwrap_or_default();
            match &args.config {
                Some(p) => format!("--{flag}{var} (or {})", p.display()),
                None => format!("--{flag}{var}"),
            }
        };
        let fs3 = file.s3.unwrap_or_default();
        let bucket = args
            .s3_bucket
            .or(fs3.bucket)
            .with_context(|| format!("no bucket: set {}", origin("s3-bucket")))?;
        let bucket = telemetry_sink::s3::parse_bucket(&bucket)
            .map_err(|e| anyhow::anyhow!("{}: {e}", origin("s3-bucket")))?;
        let endpoint = args
            .s3_endpoint
            .or(fs3.endpoint)
            .filter(|e| !e.is_empty())
            .map(|e| telemetry_sink::s3::parse_endpoint(&e))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}: {e}", origin("s3-endpoint")))?;
        let prefix = args
            .s3_prefix
            .or(fs3.prefix)
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        // The keys add the layout's own `v1/`: a prefix ending in it would
        // file every batch under `…/v1/v1/`, where neither the report, the
        // SQL nor the retention rule looks.
        if prefix == "v1" || prefix.ends_with("/v1") {
            bail!(
                "{}: {prefix:?} ends in the layout's own v1 (keys add v1/ themselves): give the prefix above it, {:?}",
                origin("s3-prefix"),
                prefix.strip_suffix("v1").unwrap_or_default().trim_end_matches('/')
            );
        }
        let s3 = S3Settings {
            bucket,
            prefix,
            path_style: args
                .s3_path_style
                .or(fs3.path_style)
                .unwrap_or(endpoint.is_some()),
            endpoint,
            region: args.s3_region.or(fs3.region).filter(|r| !r.is_empty()),
        };
        let manifests = args.manifests.or(file.manifests).with_context(|| {
            format!(
                "no manifest directory: set {} to the directory of the PRODUCT.toml files this broker accepts",
                origin("manifests")
            )
        })?;
        let lifetime = args.url_lifetime.or(file.url_lifetime);
        let url_lifetime = match lifetime {
            None => Duration::from_secs(300),
            Some(s) => humantime::parse_duration(&s).with_context(|| {
                format!(
                    "{}: {s:?} is not a duration such as 5m",
                    origin("url-lifetime")
                )
            })?,
        };
        if url_lifetime.is_zero() || url_lifetime > MAX_URL_LIFETIME {
            bail!(
                "{}: {url_lifetime:?} is not between 1s and 10m; a presigned URL must be short-lived",
                origin("url-lifetime")
            );
        }
        let send_timeout = match args.send_timeout.or(file.send_timeout) {
            None => Duration::from_secs(10),
            Some(s) => humantime::parse_duration(&s).with_context(|| {
                format!(
                    "{}: {s:?} is not a duration such as 10s",
                    origin("send-timeout")
                )
            })?,
        };
        if send_timeout.is_zero() || send_timeout > Duration::from_secs(600) {
            bail!(
                "{}: {send_timeout:?} is not between 1ms and 10m",
                origin("send-timeout")
            );
        }
        let max_connection_age = match args.max_connection_age.or(file.max_connection_age) {
            None => Duration::from_secs(60),
            Some(s) => humantime::parse_duration(&s).with_context(|| {
                format!(
                    "{}: {s:?} is not a duration such as 60s",
                    origin("max-connection-age")
                )
            })?,
        };
        if max_connection_age < Duration::from_secs(1)
            || max_connection_age > Duration::from_secs(3600)
        {
            bail!(
                "{}: {max_connection_age:?} is not between 1s and 1h",
                origin("max-connection-age")
            );
        }
        let rate = |flag: &str, v: Option<String>, default: &str| -> anyhow::Result<Rate> {
            Rate::parse(v.as_deref().unwrap_or(default))
                .map_err(|e| anyhow::anyhow!("{}: {e}", origin(flag)))
        };
        let today = today
            .map(|t| {
                crate::upload::date_to_days(&t)
                    .with_context(|| format!("{TODAY_VAR}={t:?} is not a YYYY-MM-DD date"))
            })
            .transpose()?;
        let given_proxies = args.trusted_proxies.or(file.trusted_proxies);
        let trusted_proxies_by_default = given_proxies.is_none();
        let trusted_proxies = match given_proxies {
            None => DEFAULT_TRUSTED_PROXIES
                .iter()
                .map(|c| Cidr::parse(c).expect("valid default"))
                .collect(),
            // `none`: no peer may name the client (an empty variable
            // counts as unset, so it cannot say that).
            Some(list) if list.iter().all(|c| c.trim().eq_ignore_ascii_case("none")) => Vec::new(),
            Some(list) => list
                .iter()
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
                .map(|c| {
                    Cidr::parse(c)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", origin("trusted-proxies")))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        let max_bytes = args.max_bytes.or(file.max_bytes).unwrap_or(8 << 20);
        // Checked before --bytes-per-network, whose default is made from
        // it: a --max-bytes too large for a byte rate would otherwise be
        // blamed on --bytes-per-network, which nobody set.
        if max_bytes == 0 || max_bytes > u64::from(u32::MAX) {
            bail!(
                "{}: {max_bytes} is not between 1 and {} bytes (--bytes-per-network grants under 4GiB a period, and a batch of --max-bytes must fit in it); set a smaller cap such as 8388608",
                origin("max-bytes"),
                u32::MAX
            );
        }
        // By default 1 GiB an hour, or one batch of --max-bytes if larger.
        let default_bytes = format!("{}/1h", max_bytes.max(1 << 30));
        let bytes_per_network = Rate::parse_bytes(
            args.bytes_per_network
                .or(file.bytes_per_network)
                .as_deref()
                .unwrap_or(&default_bytes),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", origin("bytes-per-network")))?;
        if u64::from(bytes_per_network.burst) < max_bytes {
            bail!(
                "{}: {} bytes per period is less than one batch of --max-bytes ({max_bytes}): no batch that size could ever be granted",
                origin("bytes-per-network"),
                bytes_per_network.burst
            );
        }
        let network_prefix = args.network_prefix.or(file.network_prefix).unwrap_or(48);
        if !(32..=64).contains(&network_prefix) {
            bail!(
                "{}: {network_prefix} is not between 32 and 64 (a /64 is what the per-address limit already counts)",
                origin("network-prefix")
            );
        }
        let client_ip_hops = args.client_ip_hops.or(file.client_ip_hops).unwrap_or(1);
        if !(1..=8).contains(&client_ip_hops) {
            bail!(
                "{}: {client_ip_hops} is not between 1 and 8 (the number of addresses your load balancers append to the header; 1 when one balancer appends the client's)",
                origin("client-ip-hops")
            );
        }
        let max_tracked = args.max_tracked.or(file.max_tracked).unwrap_or(100_000);
        if max_tracked < 2 {
            bail!("{}: must be at least 2", origin("max-tracked"));
        }
        // 0 would mean "serve nothing" (and was quietly raised to 1): a
        // typo, not a setting, so it is refused like any other bad value.
        let max_connections = args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(1024);
        if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
            bail!(
                "{}: {max_connections} is not between 1 and {MAX_CONNECTIONS}; set how many connections the broker serves at once, such as 1024",
                origin("max-connections")
            );
        }
        let max_connections_per_address = args
            .max_connections_per_address
            .or(file.max_connections_per_address)
            .unwrap_or(32);
        if max_connections_per_address == 0 {
            bail!(
                "{}: must be at least 1 (0 would refuse every connection); set how many connections one client address may hold, such as 32",
                origin("max-connections-per-address")
            );
        }
        let retired: Vec<String> = args
            .retired
            .or(file.retired)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        Ok(Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8480))),
            manifests,
            s3,
            url_lifetime,
            max_bytes,
            day_window: args.day_window.or(file.day_window).unwrap_or(45),
            today,
            per_address: rate(
                "per-address",
                args.per_address.or(file.per_address),
                "120/1m",
            )?,
            per_network: rate(
                "per-network",
                args.per_network.or(file.per_network),
                "1200/1m",
            )?,
            network_prefix,
            per_machine: rate(
                "per-machine",
                args.per_machine.or(file.per_machine),
                "20/1h",
            )?,
            bytes_per_network,
            max_tracked,
            retired,
            client_ip_header: args
                .client_ip_header
                .or(file.client_ip_header)
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase()),
            client_ip_hops,
            trusted_proxies,
            trusted_proxies_by_default,
            max_connections,
            max_connections_per_address,
            send_timeout,
            max_connection_age,
        })
    }
}

/// Read as the daemon reads its config file (`read_config_text`): at most
/// 1 MiB and opened non-blocking, so `--config /dev/zero` is an error
/// instead of filling memory, and a FIFO or a directory is refused instead
/// of hanging the start or reading as no settings.
fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = telemetry_platform::fs::read_config_text(path).with_context(|| {
        format!(
            "cannot read the settings file {} (--config / TELEMETRY_BROKER_CONFIG): it must be a TOML file of at most 1 MiB",
            path.display()
        )
    })?;
    toml::from_str(&text).with_context(|| {
        format!(
            "settings file {} is not valid (keys: listen, manifests, url_lifetime, max_bytes, day_window, per_address, per_network, network_prefix, per_machine, bytes_per_network, max_tracked, retired, client_ip_header, client_ip_hops, trusted_proxies, max_connections, max_connections_per_address, send_timeout, max_connection_age, [s3])",
            path.display()
        )
    })
}

/// Load balancers are on these networks unless `trusted_proxies` says
/// otherwise: loopback and the private and shared ranges a balancer in
/// front of the broker connects from, never a public address.
pub const DEFAULT_TRUSTED_PROXIES: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
];

/// An address range, `ADDR/LEN` (or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    len: u8,
}

impl Cidr {
    /// Parse `10.0.0.0/8`, `fd00::/8` or one address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address or ADDR/LEN range (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let mask = |bits: u32, len: u8| -> u128 {
            if len == 0 {
                0
            } else {
                (u128::MAX << (bits - u32::from(len))) & (u128::MAX >> (128 - bits))
            }
        };
        match (self.addr, ip.to_canonical()) {
            (V4(net), V4(ip)) => {
                let m = mask(32, self.len);
                u128::from(u32::from(net)) & m == u128::from(u32::from(ip)) & m
            }
            (V6(net), V6(ip)) => {
                let m = mask(128, self.len);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_contain() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("172.16.0.0/12").contains(ip("172.31.255.255")));
        assert!(!c("172.16.0.0/12").contains(ip("172.32.0.0")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "mapped");
        assert!(c("fc00::/7").contains(ip("fd12::1")));
        assert!(!c("fc00::/7").contains(ip("fe80::1")));
        assert!(c("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!c("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")), "not across families");
        assert!(c("::/0").contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        for d in DEFAULT_TRUSTED_PROXIES {
            assert!(Cidr::parse(d).is_ok(), "{d}");
        }
    }

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["telemetry-broker"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_override_the_file_and_limits_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nmanifests = \"/srv/products\"\nurl_lifetime = \"2m\"\nretired = [\"old\"]\n[s3]\nbucket = \"from-file\"\nendpoint = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s =
            Settings::load(args(&["--config", path, "--s3-bucket", "from-flag"]), None).unwrap();
        assert_eq!(s.s3.bucket, "from-flag", "a flag beats the file");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.url_lifetime, Duration::from_secs(120));
        assert_eq!(s.retired, ["old"]);
        assert!(s.s3.path_style, "an endpoint implies path style");
        assert_eq!(s.max_bytes, 8 << 20);
        assert_eq!(s.network_prefix, 48);

        // A key prefix ending in the layout's own v1 is refused, naming the
        // one above it.
        for bad in ["telemetry/v1", "v1", "/telemetry/v1/"] {
            let err = Settings::load(args(&["--config", path, "--s3-prefix", bad]), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("--s3-prefix") && err.contains("v1/"), "{err}");
        }
        let ok = Settings::load(
            args(&["--config", path, "--s3-prefix", "telemetry/v10"]),
            None,
        );
        assert_eq!(ok.unwrap().s3.prefix, "telemetry/v10");

        let prefix =
            |bits: &str| Settings::load(args(&["--config", path, "--network-prefix", bits]), None);
        assert_eq!(prefix("56").unwrap().network_prefix, 56);
        for bad in ["31", "65"] {
            let err = prefix(bad).unwrap_err().to_string();
            assert!(err.contains("--network-prefix"), "{err}");
        }

        let long = Settings::load(args(&["--config", path, "--url-lifetime", "11m"]), None);
        assert!(long.unwrap_err().to_string().contains("--url-lifetime"));
        let send = |t: &str| Settings::load(args(&["--config", path, "--send-timeout", t]), None);
        assert_eq!(s.send_timeout, Duration::from_secs(10), "the default");
        assert_eq!(send("1ms").unwrap().send_timeout, Duration::from_millis(1));
        assert_eq!(send("10m").unwrap().send_timeout, Duration::from_secs(600));
        for bad in ["0s", "11m", "soon"] {
            let err = send(bad).unwrap_err().to_string();
            assert!(err.contains("--send-timeout"), "{bad}: {err}");
        }
        let age =
            |t: &str| Settings::load(args(&["--config", path, "--max-connection-age", t]), None);
        assert_eq!(s.max_connection_age, Duration::from_secs(60), "the default");
        assert_eq!(
            age("1h").unwrap().max_connection_age,
            Duration::from_secs(3600)
        );
        for bad in ["0s", "999ms", "2h", "soon"] {
            let err = age(bad).unwrap_err().to_string();
            assert!(err.contains("--max-connection-age"), "{bad}: {err}");
        }
        let today = Settings::load(args(&["--config", path]), Some("2026-13-01".into()));
        assert!(today.unwrap_err().to_string().contains(TODAY_VAR));
        let none = Settings::load(args(&["--manifests", "/x"]), None);
        assert!(none
            .unwrap_err()
            .to_string()
            .contains("TELEMETRY_S3_BUCKET"));

        std::fs::write(&file, "bucket = \"misplaced\"\n").unwrap();
        let err = Settings::load(args(&["--config", path]), None).unwrap_err();
        assert!(format!("{err:#}").contains("bucket"), "{err:#}");
    }

    /// The flags every test below needs, then `extra`.
    fn load(extra: &[&str]) -> anyhow::Result<Settings> {
        let mut argv = vec!["--s3-bucket", "bucket-b", "--manifests", "/srv/products"];
        argv.extend_from_slice(extra);
        Settings::load(args(&argv), None)
    }

    /// A window past what a `Duration` holds made the second request's
    /// worker panic: every rate refuses a window over a year at start,
    /// naming its flag and variable.
    #[test]
    fn a_rate_window_over_a_year_is_refused_naming_the_setting() {
        for (flag, var, huge) in [
            (
                "per-address",
                "TELEMETRY_BROKER_PER_ADDRESS",
                "1/18446744073709551615s",
            ),
            (
                "per-network",
                "TELEMETRY_BROKER_PER_NETWORK",
                "1/18446744073709551615s",
            ),
            ("per-machine", "TELEMETRY_BROKER_PER_MACHINE", "1/366d"),
            (
                "bytes-per-network",
                "TELEMETRY_BROKER_BYTES_PER_NETWORK",
                "1GiB/18446744073709551615s",
            ),
        ] {
            let err = load(&[&format!("--{flag}"), huge]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--{flag} / {var}:")) && err.contains("at most 1y"),
                "{flag}: {err}"
            );
        }
        let year = load(&["--per-machine", "1/1y"]).unwrap();
        assert_eq!(year.per_machine.period, crate::limit::MAX_PERIOD);
        let err = load(&["--per-address", "4294967296/1m"]).unwrap_err();
        assert!(err.to_string().starts_with("--per-address"), "{err}");
    }

    /// --max-bytes makes --bytes-per-network's default: one too large was
    /// blamed on --bytes-per-network, which nobody had set.
    #[test]
    fn a_max_bytes_out_of_range_is_blamed_on_max_bytes() {
        for bad in ["18446744073709551615", "4294967296", "0"] {
            let err = load(&["--max-bytes", bad]).unwrap_err().to_string();
            assert!(
                err.starts_with("--max-bytes / TELEMETRY_BROKER_MAX_BYTES:"),
                "{bad}: {err}"
            );
        }
        let most = load(&["--max-bytes", "4294967295"]).unwrap();
        assert_eq!(u64::from(most.bytes_per_network.burst), most.max_bytes);
        // Both set and at odds: the byte rate is the one that is short.
        let err = load(&["--max-bytes", "2048", "--bytes-per-network", "1KiB/1h"]).unwrap_err();
        assert!(err.to_string().starts_with("--bytes-per-network"), "{err}");
    }

    /// 0 connections (at once, or per address) was quietly served as 1;
    /// it is refused, naming the setting, as is a cap past what the
    /// connection semaphore holds.
    #[test]
    fn zero_connections_are_refused_naming_the_setting() {
        for (flag, var, bad) in [
            ("max-connections", "TELEMETRY_BROKER_MAX_CONNECTIONS", "0"),
            (
                "max-connections",
                "TELEMETRY_BROKER_MAX_CONNECTIONS",
                "18446744073709551615",
            ),
            (
                "max-connections-per-address",
                "TELEMETRY_BROKER_MAX_CONNECTIONS_PER_ADDRESS",
                "0",
            ),
        ] {
            let err = load(&[&format!("--{flag}"), bad]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--{flag} / {var}:")),
                "{flag} {bad}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, "max_connections_per_address = 0\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("broker.toml"), "{err}");
        let one = load(&[
            "--max-connections",
            "1",
            "--max-connections-per-address",
            "1",
        ])
        .unwrap();
        assert_eq!(
            (one.max_connections, one.max_connections_per_address),
            (1, 1)
        );
    }

    /// `--config /dev/zero` read without bound (gigabytes in seconds) and
    /// a FIFO hung the start: the file is read as a small one, and an
    /// error names it.
    #[cfg(unix)]
    #[test]
    fn a_settings_file_that_never_ends_or_never_comes_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("broker.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // In a thread, so a hang fails the test instead of stalling it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let zero = load(&["--config", "/dev/zero"]).map_err(|e| format!("{e:#}"));
            let fifo = load(&["--config", fifo.to_str().unwrap()]).map_err(|e| format!("{e:#}"));
            let _ = tx.send((zero, fifo));
        });
        let (zero, fifo) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reading /dev/zero and a FIFO ends within 10 s");
        let err = zero.unwrap_err();
        assert!(
            err.contains("/dev/zero") && err.contains("TELEMETRY_BROKER_CONFIG"),
            "{err}"
        );
        let err = fifo.unwrap_err();
        assert!(err.contains("a FIFO"), "{err}");
    }
}
