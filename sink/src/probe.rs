//! Checking a destination without writing to it (`telemetryctl doctor`).
//!
//! A probe is a list of [`Check`]s in the order an upload meets them: the
//! host name resolves (`dns`), a connection opens (`connect`), TLS
//! verifies (`tls`), credentials load (`credentials`), the bucket or the
//! broker answers (`bucket`, `broker`), and the two clocks agree
//! (`clock`). A failed step ends the list when the steps after it could
//! only fail the same way (no TLS check after DNS failed). Every check
//! that does not pass says what to do in its `fix`.
//!
//! # Writes nothing
//! The only requests are an unsigned `HEAD` of the bucket's URL, S3's
//! `HeadBucket`, and the broker's `GET /healthz`. The bucket's URL is the
//! SDK's own: a `HeadBucket` is built and stopped by an interceptor before
//! it is signed ([`StopBeforeSigning`]), so the probe reaches the exact
//! host uploads reach (path-style or virtual-hosted, the region's
//! endpoint) and that dry request sends nothing at all.
//!
//! # Bounded
//! Every network step has [`STEP_TIMEOUT`], so a destination that accepts
//! connections and never answers costs the doctor seconds, not minutes.
//!
//! # No secrets
//! Details name hosts, buckets and HTTP statuses. Credentials, proxy
//! passwords and signed URLs never appear: the SDK's errors carry none,
//! and proxy URLs are shown without their user part.

use crate::net::{HttpClient, NetOptions};
use crate::s3::Credentials;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
pub use telemetry_proto::{Check, CheckOutcome};

/// Longest any one network step of a probe may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Clock skew (either way) above which the `clock` check warns: requests
/// still work, but the margin is being used up.
pub const CLOCK_WARN_SECS: u64 = 60;

/// Clock skew (either way) above which the `clock` check fails: S3 refuses
/// signed requests more than 15 minutes off, and a broker's presigned URL
/// lives at most 10 minutes, so 5 minutes leaves no safe margin.
pub const CLOCK_FAIL_SECS: u64 = 300;

/// The fix for a TLS failure: the setting that adds a CA.
pub const TLS_FIX: &str = "if this network inspects TLS, or the destination uses a private CA, set TELEMETRY_CA_BUNDLE (or --ca-bundle, or ca_bundle in telemetryd's config file) to a PEM file holding that CA certificate, then restart telemetryd";

/// Longest body of a probe's answer that is read (a health answer is a
/// few bytes; a hostile server must not make us buffer more).
const MAX_BODY: usize = 16 * 1024;

/// What probing one destination found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The checks, in the order they were made.
    pub checks: Vec<Check>,
    /// The destination's clock minus ours, in seconds, from its `Date`
    /// header, when it answered with one.
    pub clock_skew_secs: Option<i64>,
}

/// Parse an HTTP `Date` header (RFC 7231: IMF-fixdate, and the two
/// obsolete forms).
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// `theirs - ours` in whole seconds (negative when they are behind).
pub fn skew_secs(theirs: SystemTime, ours: SystemTime) -> i64 {
    match theirs.duration_since(ours) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The `clock` check for a skew of `skew` seconds against `what` (e.g.
/// "the S3 endpoint"): pass up to [`CLOCK_WARN_SECS`], warn up to
/// [`CLOCK_FAIL_SECS`], fail beyond.
pub fn clock_check(skew: i64, what: &str) -> Check {
    let off = skew.unsigned_abs();
    let detail = match skew {
        0 => format!("this machine's clock agrees with {what}'s (within a second)"),
        s if s > 0 => format!("{what}'s clock is {off} s ahead of this machine's"),
        _ => format!("{what}'s clock is {off} s behind this machine's"),
    };
    let fix = "synchronise this machine's clock (e.g. `timedatectl set-ntp true` on Linux, or the date and time settings): S3 refuses requests more than 15 minutes off, and brokers' upload URLs live only minutes".to_string();
    if off > CLOCK_FAIL_SECS {
        Check::fail("clock", format!("{detail} (over {CLOCK_FAIL_SECS} s)"), fix)
    } else if off > CLOCK_WARN_SECS {
        Check::warn("clock", format!("{detail} (over {CLOCK_WARN_SECS} s)"), fix)
    } else {
        Check::pass("clock", detail)
    }
}

/// A URL for messages: without a user part (proxy passwords) and without
/// the query (signatures).
fn shown(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The host and port `url` names (brackets of an IPv6 literal removed).
fn host_port(url: &http::Uri) -> Option<(String, u16)> {
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((host.to_string(), port))
}

/// The proxy variable that applies to `url`'s scheme, for messages.
fn proxy_var(url: &http::Uri) -> &'static str {
    if url.scheme_str() == Some("https") {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    }
}

/// `dns`: resolve the host uploads connect to: `url`'s, or the proxy's
/// when the environment's proxy applies to `url` (the proxy resolves the
/// destination itself).
pub async fn dns_check(url: &http::Uri, net: &NetOptions, configured_in: &str) -> Check {
    let proxy = net.proxy.proxy_for(url);
    let (target, via) = match &proxy {
        Some(p) => match p.parse::<http::Uri>() {
            Ok(u) => (
                u,
                format!(
                    " (the proxy from {}; it resolves the destination itself)",
                    proxy_var(url)
                ),
            ),
            Err(e) => {
                return Check::fail(
                    "dns",
                    format!("the proxy URL {} is not usable: {e}", shown(p)),
                    format!("correct {} in telemetryd's environment", proxy_var(url)),
                )
            }
        },
        None => (url.clone(), String::new()),
    };
    let Some((host, port)) = host_port(&target) else {
        return Check::fail(
            "dns",
            format!("{} names no host", shown(&target.to_string())),
            format!("correct the URL in {configured_in}"),
        );
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Check::pass(
            "dns",
            format!("{host} is an address{via}; nothing to resolve"),
        );
    }
    let lookup =
        tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await;
    let fix = if proxy.is_some() {
        format!(
            "check the proxy's host name in {} (telemetryd's environment), or this machine's DNS (`getent hosts {host}`)",
            proxy_var(url)
        )
    } else {
        format!("check the host name in {configured_in}, and this machine's DNS and network (`getent hosts {host}`)")
    };
    match lookup {
        Err(_) => Check::fail(
            "dns",
            format!(
                "resolving {host}{via} took over {} s",
                STEP_TIMEOUT.as_secs()
            ),
            fix,
        ),
        Ok(Err(e)) => Check::fail("dns", format!("cannot resolve {host}{via}: {e}"), fix),
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.map(|a| a.ip().to_string()).collect();
            match addrs.first() {
                None => Check::fail("dns", format!("{host}{via} has no address"), fix),
                Some(first) => {
                    let more = match addrs.len() {
                        1 => String::new(),
                        n => format!(" and {} more", n - 1),
                    };
                    Check::pass("dns", format!("{host}{via} resolves to {first}{more}"))
                }
            }
        }
    }
}

/// An HTTP answer a probe got.
#[derive(Debug)]
struct Answer {
    status: u16,
    date: Option<SystemTime>,
    body: Bytes,
}

/// Why a probe's request got no answer.
#[derive(Debug)]
enum Unanswered {
    /// Nothing within [`STEP_TIMEOUT`].
    Timeout,
    /// The request could not be built (a bad URL).
    Request(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The proxy refused or could not be reached.
    Proxy(String),
    /// No connection (refused, unreachable, reset).
    Connect(String),
    /// Connected, but the exchange failed.
    Exchange(String),
}

/// The rustls error somewhere in `e`'s causes (io errors hide theirs from
/// `source()`, so they are opened too).
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(crate::untrusted(&t.to_string(), usize::MAX));
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(crate::untrusted(&t.to_string(), usize::MAX));
        }
        next = err.source();
    }
    None
}

/// Send one body-less request and read at most [`MAX_BODY`] of the answer,
/// all within [`STEP_TIMEOUT`].
async fn send(client: &HttpClient, method: http::Method, url: &str) -> Result<Answer, Unanswered> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header(
            "user-agent",
            concat!("telemetryd-doctor/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| Unanswered::Request(e.to_string()))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            // A certificate's names are the server's words: made safe.
            let text = crate::error_line(&e);
            if let Some(tls) = tls_cause(&e) {
                Unanswered::Tls(tls)
            } else if text.contains("proxy ") {
                Unanswered::Proxy(text)
            } else if e.is_connect() {
                Unanswered::Connect(text)
            } else {
                Unanswered::Exchange(text)
            }
        })?;
        let (parts, body) = resp.into_parts();
        let date = parts
            .headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        // The status and date are what matter; a body that breaks off
        // reads as empty.
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Answer {
            status: parts.status.as_u16(),
            date,
            body,
        })
    };
    tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .map_err(|_| Unanswered::Timeout)?
}

/// `connect` (and `tls` for `https://`) from one request to `url`; the
/// answer when there was one.
async fn reach(
    client: &HttpClient,
    method: http::Method,
    url: &str,
    net: &NetOptions,
    configured_in: &str,
    checks: &mut Vec<Check>,
) -> Option<Answer> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            checks.push(Check::fail(
                "connect",
                format!("{} is not a URL: {e}", shown(url)),
                format!("correct the URL in {configured_in}"),
            ));
            return None;
        }
    };
    let https = uri.scheme_str() == Some("https");
    let (host, port) = host_port(&uri).unwrap_or_default();
    let proxy = net.proxy.proxy_for(&uri).map(|p| shown(&p));
    let route = match &proxy {
        Some(p) => format!(
            "{host}:{port} through the proxy {p} (from {})",
            proxy_var(&uri)
        ),
        None => format!("{host}:{port}"),
    };
    let connect_fix = match &proxy {
        Some(_) => format!(
            "check that the proxy in {} is up and lets this host through, or add {host} to NO_PROXY if it should be reached directly",
            proxy_var(&uri)
        ),
        None => format!(
            "check that the destination is up and listening at {host}:{port}, the URL in {configured_in}, and any firewall; behind a proxy, set HTTPS_PROXY (or HTTP_PROXY for http://) in telemetryd's environment"
        ),
    };
    let answer = match send(client, method, url).await {
        Ok(a) => a,
        Err(Unanswered::Tls(e)) => {
            checks.push(Check::pass("connect", format!("connected to {route}")));
            checks.push(Check::fail(
                "tls",
                format!("TLS with {host} failed: {e}"),
                TLS_FIX.to_string(),
            ));
            return None;
        }
        Err(Unanswered::Timeout) => {
            checks.push(Check::fail(
                "connect",
                format!("no answer from {route} within {} s", STEP_TIMEOUT.as_secs()),
                connect_fix,
            ));
            return None;
        }
        Err(
            Unanswered::Request(e)
            | Unanswered::Proxy(e)
            | Unanswered::Connect(e)
            | Unanswered::Exchange(e),
        ) => {
            checks.push(Check::fail(
                "connect",
                format!("cannot reach {route}: {e}"),
                connect_fix,
            ));
            return None;
        }
    };
    // A plain-HTTP proxy answers for the destination it could not reach.
    if proxy.is_some() && !https && (502..=504).contains(&answer.status) {
        checks.push(Check::fail(
            "connect",
            format!(
                "the proxy could not reach {host}:{port} (it answered HTTP {})",
                answer.status
            ),
            connect_fix,
        ));
        return None;
    }
    checks.push(Check::pass(
        "connect",
        format!(
            "connected to {route} (HTTP {} to {})",
            answer.status,
            shown(url)
        ),
    ));
    if https {
        let extra = match &net.ca_bundle {
            Some(ca) => format!(" plus the CA bundle {}", ca.path.display()),
            None => String::new(),
        };
        checks.push(Check::pass(
            "tls",
            format!("{host}'s certificate is trusted (the platform's roots{extra})"),
        ));
    }
    Some(answer)
}

/// The `clock` check from an answer's `Date`, and the skew.
fn clock_from(answer: &Answer, now: SystemTime, what: &str) -> (Check, Option<i64>) {
    match answer.date {
        Some(date) => {
            let skew = skew_secs(date, now);
            (clock_check(skew, what), Some(skew))
        }
        None => (
            Check::warn(
                "clock",
                format!("{what} sent no Date header, so the clocks cannot be compared"),
                "make sure this machine's clock is synchronised (NTP): S3 refuses requests more than 15 minutes off".to_string(),
            ),
            None,
        ),
    }
}

/// An interceptor that records the URL of the request it sees and stops
/// it before it is signed, so nothing is sent.
#[derive(Debug, Clone, Default)]
struct StopBeforeSigning {
    url: Arc<Mutex<Option<String>>>,
}

/// The message a stopped request fails with (never shown: the URL was
/// all that was wanted).
const STOPPED: &str = "stopped before signing: a probe sends nothing here";

impl Intercept for StopBeforeSigning {
    fn name(&self) -> &'static str {
        "telemetry_sink::probe::StopBeforeSigning"
    }

    fn read_before_signing(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut url = self.url.lock().unwrap_or_else(|p| p.into_inner());
        *url = Some(context.request().uri().to_string());
        Err(STOPPED.into())
    }
}

/// The URL `client` would send `HeadBucket` for `bucket` to, found by the
/// SDK and never sent. `Err` holds the SDK's reason when it stopped
/// earlier: with the AWS chain, that is loading the credentials. With
/// `stand_in_credentials` the chain is not asked (fake credentials take its
/// place; they are never used, as nothing is signed, and were the request
/// ever sent it would be a refused read, never a write).
async fn bucket_url(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    stand_in_credentials: bool,
) -> Result<String, String> {
    let stop = StopBeforeSigning::default();
    let mut op = client
        .head_bucket()
        .bucket(bucket)
        .customize()
        .interceptor(stop.clone());
    if stand_in_credentials {
        op = op.config_override(aws_sdk_s3::config::Builder::default().credentials_provider(
            aws_sdk_s3::config::Credentials::new(
                "telemetry-doctor",
                "never-used-nothing-is-signed",
                None,
                None,
                "telemetry-doctor",
            ),
        ));
    }
    let sent = tokio::time::timeout(STEP_TIMEOUT, op.send()).await;
    if let Some(url) = stop.url.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Ok(url);
    }
    match sent {
        Err(_) => Err(format!("no answer within {} s", STEP_TIMEOUT.as_secs())),
        Ok(Ok(_)) => Err("the SDK sent the request without showing it".to_string()),
        Ok(Err(e)) => Err(crate::error_line(&e)),
    }
}

/// An S3 destination as the uploader reaches it.
pub struct S3Target<'a> {
    /// The SDK client uploads use (endpoint, region, addressing, proxy, CA
    /// bundle, credentials).
    pub client: &'a aws_sdk_s3::Client,
    /// The bucket.
    pub bucket: &'a str,
    /// How uploads authenticate.
    pub credentials: Credentials,
    /// Where the bucket, endpoint and region are set, for the fixes (e.g.
    /// "telemetryd's [s3] settings (TELEMETRY_S3_*)").
    pub configured_in: &'a str,
    /// Whether uploads here have succeeded since the daemon started: a
    /// `403` to `HeadBucket` then means a create-only policy (uploads need
    /// only `s3:PutObject`), not missing access.
    pub uploads_succeeded: bool,
}

/// Probe an S3 destination: `dns`, `connect`, `tls` (https), `credentials`,
/// `bucket`, `clock`. `now` is the daemon's clock.
pub async fn probe_s3(
    target: &S3Target<'_>,
    net: &NetOptions,
    now: &(dyn Fn() -> SystemTime + Send + Sync),
) -> Probe {
    let mut probe = Probe::default();
    let checks = &mut probe.checks;
    let configured_in = target.configured_in;
    let aws = target.credentials == Credentials::AwsChain;
    // The URL, and (with the AWS chain) whether credentials load: the SDK
    // resolves the identity before the endpoint.
    let (url, credentials) = match bucket_url(target.client, target.bucket, false).await {
        Ok(url) => (url, Ok(())),
        Err(why) if aws => match bucket_url(target.client, target.bucket, true).await {
            Ok(url) => (url, Err(why)),
            Err(e) => {
                checks.push(Check::fail(
                    "endpoint",
                    format!("cannot work out the URL of bucket {}: {e}", target.bucket),
                    format!("check the bucket, endpoint and region in {configured_in}"),
                ));
                return probe;
            }
        },
        Err(e) => {
            checks.push(Check::fail(
                "endpoint",
                format!("cannot work out the URL of bucket {}: {e}", target.bucket),
                format!("check the bucket, endpoint and region in {configured_in}"),
            ));
            return probe;
        }
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            checks.push(Check::fail(
                "endpoint",
                format!(
                    "the SDK's URL for bucket {} is not usable: {e}",
                    target.bucket
                ),
                format!("check the endpoint in {configured_in}"),
            ));
            return probe;
        }
    };

    let dns = dns_check(&uri, net, configured_in).await;
    let dns_failed = dns.outcome == CheckOutcome::Fail;
    checks.push(dns);
    if dns_failed {
        return probe;
    }

    let client = match crate::net::http_client(net) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail("tls", e.to_string(), TLS_FIX.to_string()));
            return probe;
        }
    };
    // Unsigned and body-less: S3 answers 403 or 404 or 200, and any answer
    // shows the route works and carries the store's Date.
    let Some(answer) = reach(
        &client,
        http::Method::HEAD,
        &url,
        net,
        configured_in,
        checks,
    )
    .await
    else {
        return probe;
    };

    match (aws, credentials) {
        (false, _) => checks.push(Check::pass(
            "credentials",
            "none needed: uploads are unsigned (auth anonymous)".to_string(),
        )),
        (true, Ok(())) => checks.push(Check::pass(
            "credentials",
            "the AWS credential chain yields credentials".to_string(),
        )),
        (true, Err(why)) => {
            checks.push(Check::fail(
                "credentials",
                format!("the AWS credential chain yields no credentials: {why}"),
                "give telemetryd credentials in its own environment (the unit file or LaunchAgent, not only a shell): AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/config, or run it with an instance or container role".to_string(),
            ));
            // HeadBucket would fail for the same reason; the clock can
            // still be read.
            let (clock, skew) = clock_from(&answer, now(), "the S3 endpoint");
            checks.push(clock);
            probe.clock_skew_secs = skew;
            return probe;
        }
    }

    checks.push(bucket_check(target).await);
    let (clock, skew) = clock_from(&answer, now(), "the S3 endpoint");
    checks.push(clock);
    probe.clock_skew_secs = skew;
    probe
}

/// `bucket`: `HeadBucket` with the uploads' own client.
async fn bucket_check(target: &S3Target<'_>) -> Check {
    let bucket = target.bucket;
    let configured_in = target.configured_in;
    let head = tokio::time::timeout(
        STEP_TIMEOUT,
        target.client.head_bucket().bucket(bucket).send(),
    )
    .await;
    let e = match head {
        Err(_) => {
            return Check::fail(
                "bucket",
                format!("HeadBucket {bucket} got no answer within {} s", STEP_TIMEOUT.as_secs()),
                "check that the store is healthy; a store that accepts connections but does not answer holds uploads until telemetryd's s3_timeout".to_string(),
            )
        }
        Ok(Ok(_)) => {
            return Check::pass(
                "bucket",
                format!("bucket {bucket} exists and answers HeadBucket"),
            )
        }
        Ok(Err(e)) => e,
    };
    let raw = e.raw_response();
    let status = raw.map(|r| r.status().as_u16());
    let their_region = raw
        .and_then(|r| r.headers().get("x-amz-bucket-region"))
        .map(str::to_string);
    let our_region = target
        .client
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    let message = crate::error_line(&e);
    match (status, their_region) {
        (Some(404), _) => Check::fail(
            "bucket",
            format!("there is no bucket {bucket} at this endpoint (HeadBucket: 404 NoSuchBucket)"),
            format!("create the bucket {bucket}, or correct the bucket name in {configured_in}"),
        ),
        (Some(_), Some(theirs)) if theirs != our_region => Check::fail(
            "bucket",
            format!(
                "bucket {bucket} is in region {theirs}, not {} (HTTP {})",
                if our_region.is_empty() { "the one set" } else { &our_region },
                status.unwrap_or_default()
            ),
            format!("set the region to {theirs} in {configured_in}"),
        ),
        (Some(403), _) if target.credentials == Credentials::Anonymous => Check::pass(
            "bucket",
            format!("bucket {bucket} answers; it refuses an unsigned HeadBucket (403), as a write-only bucket does, so whether unsigned writes are allowed shows at the next upload"),
        ),
        (Some(403), _) if target.uploads_succeeded => Check::warn(
            "bucket",
            format!("HeadBucket {bucket} was refused (403), but uploads there have succeeded: the credentials may only create objects"),
            "nothing, if the policy is meant to be create-only; to let doctor check the bucket, also grant s3:ListBucket on it".to_string(),
        ),
        (Some(403), _) => Check::fail(
            "bucket",
            format!("HeadBucket {bucket} was refused (403): the credentials lack access to the bucket (or are not valid for this store)"),
            format!("give the credentials telemetryd uses s3:PutObject on {bucket}/PREFIX/* (and s3:ListBucket on {bucket}, which this check needs), or correct the bucket in {configured_in}"),
        ),
        (Some(s), _) => Check::fail(
            "bucket",
            format!("HeadBucket {bucket} failed with HTTP {s}: {message}"),
            format!("check the bucket, endpoint and region in {configured_in}"),
        ),
        (None, _) => Check::fail(
            "bucket",
            format!("HeadBucket {bucket} failed: {message}"),
            format!("check the endpoint in {configured_in} and the network"),
        ),
    }
}

/// `?product=P` for a health request (products are plain names, but a
/// byte outside the unreserved set is escaped all the same).
fn product_query(product: &str) -> String {
    let mut out = String::from("?product=");
    for b in product.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a broker's health answer says about one product (`None`: a
/// broker that does not say).
fn serves(body: &[u8]) -> Option<bool> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("serves")?
        .as_bool()
}

/// Probe a vendor's broker: `dns`, `connect`, `tls` (https), `broker`
/// (`GET /healthz` answers 2xx, and for each of `products` that it
/// accepts it, when the broker says), `clock`. `client` is the uploads'
/// own.
pub async fn probe_broker(
    client: &HttpClient,
    url: &str,
    products: &[String],
    net: &NetOptions,
    configured_in: &str,
    now: &(dyn Fn() -> SystemTime + Send + Sync),
) -> Probe {
    let mut probe = Probe::default();
    let checks = &mut probe.checks;
    let base = url.trim_end_matches('/');
    let health = format!("{base}{}", crate::broker::HEALTH_PATH);
    let uri: http::Uri = match health.parse() {
        Ok(u) => u,
        Err(e) => {
            checks.push(Check::fail(
                "broker",
                format!("{} is not a URL: {e}", shown(url)),
                format!("correct the broker URL in {configured_in}"),
            ));
            return probe;
        }
    };
    let dns = dns_check(&uri, net, configured_in).await;
    let dns_failed = dns.outcome == CheckOutcome::Fail;
    checks.push(dns);
    if dns_failed {
        return probe;
    }
    let Some(answer) = reach(
        client,
        http::Method::GET,
        &health,
        net,
        configured_in,
        checks,
    )
    .await
    else {
        return probe;
    };
    let fix_vendor =
        format!("the broker is the vendor's: tell them; its URL comes from {configured_in}");
    if !(200..300).contains(&answer.status) {
        checks.push(Check::fail(
            "broker",
            format!(
                "GET {} answered HTTP {}: this is not a healthy telemetry-broker",
                shown(&health),
                answer.status
            ),
            fix_vendor,
        ));
    } else {
        let mut refused = Vec::new();
        let mut unknown = false;
        for product in products {
            let asked = format!("{health}{}", product_query(product));
            match send(client, http::Method::GET, &asked).await {
                Ok(a) if (200..300).contains(&a.status) => match serves(&a.body) {
                    Some(true) => {}
                    Some(false) => refused.push(product.as_str()),
                    None => unknown = true,
                },
                _ => unknown = true,
            }
        }
        if !refused.is_empty() {
            checks.push(Check::fail(
                "broker",
                format!(
                    "the broker is up but does not accept {}: it has no manifest for {}, or retired {}",
                    refused.join(", "),
                    if refused.len() == 1 { "it" } else { "them" },
                    if refused.len() == 1 { "it" } else { "them" },
                ),
                format!("the vendor must give their broker a manifest for these products (or stop retiring them); until then their batches wait on this machine. {fix_vendor}"),
            ));
        } else {
            let said = if products.is_empty() || unknown {
                String::new()
            } else {
                format!(" and accepts {}", products.join(", "))
            };
            checks.push(Check::pass(
                "broker",
                format!(
                    "GET {} answered HTTP {}{said}",
                    shown(&health),
                    answer.status
                ),
            ));
        }
    }
    let (clock, skew) = clock_from(&answer, now(), "the broker");
    checks.push(clock);
    probe.clock_skew_secs = skew;
    probe
}

/// `outbox`: `dir` exists and is a writable directory, or can be created
/// (its nearest existing ancestor is a writable directory). Writability
/// is tested by creating and removing an empty file, which is the only
/// sure test (permissions, ACLs, read-only mounts). Blocking.
pub fn probe_outbox(dir: &Path) -> Check {
    let fix = |what: &str| {
        format!("{what}, or set another directory with TELEMETRY_OUTBOX_DIR (--outbox-dir, outbox_dir in telemetryd's config file)")
    };
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                return Check::fail(
                    "outbox",
                    format!("no part of {} exists", dir.display()),
                    fix("use an absolute path on a mounted file system"),
                )
            }
        }
    }
    if !existing.is_dir() {
        return Check::fail(
            "outbox",
            format!("{} is not a directory", existing.display()),
            fix(&format!("remove or rename {}", existing.display())),
        );
    }
    let probe_file = existing.join(format!(
        ".telemetry-doctor-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe_file);
    match created {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe_file);
            if existing == dir {
                Check::pass(
                    "outbox",
                    format!("{} is a writable directory", dir.display()),
                )
            } else {
                Check::pass(
                    "outbox",
                    format!(
                        "{} does not exist yet; {} is writable, so the first upload creates it",
                        dir.display(),
                        existing.display()
                    ),
                )
            }
        }
        Err(e) => Check::fail(
            "outbox",
            format!("telemetryd cannot write in {}: {e}", existing.display()),
            fix(&format!(
                "make {} writable by the user telemetryd runs as",
                existing.display()
            )),
        ),
    }
}

/// A few characters that make the outbox probe's file name unique even if
/// two doctors run at once in one process.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos:09}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_is_classified_either_way() {
        for (skew, outcome) in [
            (0, CheckOutcome::Pass),
            (60, CheckOutcome::Pass),
            (-60, CheckOutcome::Pass),
            (61, CheckOutcome::Warn),
            (-300, CheckOutcome::Warn),
            (301, CheckOutcome::Fail),
            (-3600, CheckOutcome::Fail),
            (i64::MIN, CheckOutcome::Fail),
        ] {
            let c = clock_check(skew, "the S3 endpoint");
            assert_eq!(c.outcome, outcome, "{skew}: {c:?}");
            assert_eq!(c.fix.is_empty(), outcome == CheckOutcome::Pass, "{c:?}");
        }
        assert!(clock_check(-90, "x").detail.contains("90 s behind"));
        assert!(clock_check(400, "x").detail.contains("400 s ahead"));
    }

    #[test]
    fn http_dates_are_read_and_skew_is_theirs_minus_ours() {
        let date = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            date,
            SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
        );
        assert!(parse_http_date("yesterday").is_none());
        assert!(parse_http_date("").is_none());
        let ours = date + Duration::from_millis(90_500);
        assert_eq!(skew_secs(date, ours), -90);
        assert_eq!(skew_secs(ours, date), 90);
        // A skewed Date header, end to end through the classification.
        let skewed = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(900));
        let skew = skew_secs(parse_http_date(&skewed).unwrap(), SystemTime::now());
        assert!((898..=900).contains(&skew), "{skew}");
        assert_eq!(clock_check(skew, "x").outcome, CheckOutcome::Fail);
    }

    #[test]
    fn urls_are_shown_without_user_or_query() {
        assert_eq!(
            shown("http://user:secret@proxy:3128/"),
            "http://proxy:3128/"
        );
        assert_eq!(
            shown("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc"),
            "https://b.s3.amazonaws.com/k"
        );
        assert_eq!(shown("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
    }

    #[test]
    fn details_are_one_line() {
        assert_eq!(
            crate::one_line(
                "no credentials. Attempted:\n  Environment: not set\n\n  Profile: none"
            ),
            "no credentials. Attempted: Environment: not set; Profile: none"
        );
    }

    #[test]
    fn health_queries_escape_odd_bytes() {
        assert_eq!(product_query("cfdev"), "?product=cfdev");
        assert_eq!(product_query("a b&c"), "?product=a%20b%26c");
        assert_eq!(serves(br#"{"status":"ok","serves":false}"#), Some(false));
        assert_eq!(serves(br#"{"status":"ok","products":1}"#), None);
        assert_eq!(serves(b"not json"), None);
    }

    #[test]
    fn the_outbox_must_be_writable_or_creatable_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let c = probe_outbox(dir.path());
        assert_eq!(c.outcome, CheckOutcome::Pass, "{c:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let c = probe_outbox(&dir.path().join("a/b"));
        assert_eq!(c.outcome, CheckOutcome::Pass, "{c:?}");
        assert!(c.detail.contains("does not exist yet"), "{c:?}");
        assert!(!dir.path().join("a").exists(), "nothing is created");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let c = probe_outbox(&file.join("outbox"));
        assert_eq!(c.outcome, CheckOutcome::Fail, "{c:?}");
        assert!(c.fix.contains("TELEMETRY_OUTBOX_DIR"), "{c:?}");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            std::fs::create_dir(&ro).unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            // Root writes anywhere; the check is only meaningful for others.
            if std::fs::write(ro.join("x"), "").is_err() {
                let c = probe_outbox(&ro);
                assert_eq!(c.outcome, CheckOutcome::Fail, "{c:?}");
                assert!(c.fix.contains("writable"), "{c:?}");
            }
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[tokio::test]
    async fn dns_fails_for_a_name_that_cannot_exist_and_passes_an_address() {
        let net = NetOptions::default();
        let c = dns_check(&"http://127.0.0.1:9/".parse().unwrap(), &net, "x").await;
        assert_eq!(c.outcome, CheckOutcome::Pass, "{c:?}");
        // .invalid is reserved (RFC 2606): it never resolves.
        let c = dns_check(
            &"https://nowhere.invalid/".parse().unwrap(),
            &net,
            "the manifest",
        )
        .await;
        assert_eq!(c.outcome, CheckOutcome::Fail, "{c:?}");
        assert!(c.fix.contains("the manifest"), "{c:?}");
        // Through a proxy, the proxy's name is what must resolve.
        let proxied = NetOptions {
            proxy: crate::net::ProxyEnv {
                https: Some("http://user:pw@proxy.invalid:3128".into()),
                http: None,
                no_proxy: None,
            },
            ..Default::default()
        };
        let c = dns_check(&"https://s3.example.com/".parse().unwrap(), &proxied, "x").await;
        assert_eq!(c.outcome, CheckOutcome::Fail, "{c:?}");
        assert!(
            c.detail.contains("proxy.invalid") && c.detail.contains("HTTPS_PROXY"),
            "{c:?}"
        );
        assert!(!c.detail.contains("user:pw"), "no proxy password: {c:?}");
    }
}
