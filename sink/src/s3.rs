//! S3 destination settings and the SDK client.
//!
//! # S3 compatibility
//! Batches are small and whole in memory, so each is one `PutObject` with a
//! signed payload hash, and the client computes and validates checksums only
//! "when required": strict stores (R2, Garage, some Ceph) reject the SDK's
//! default flexible checksums on streamed uploads. The SDK's own retries are
//! off; the daemon retries with its own backoff and reports every failure.

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use std::time::Duration;

/// S3 destination settings. Credentials are not here: they come from the
/// standard AWS chain (or none at all, for anonymous uploads) and are never
/// logged or shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores (MinIO, R2, Garage, Ceph).
    pub endpoint: Option<String>,
    /// Region; when unset, the AWS chain decides, then `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// self-hosted stores.
    pub path_style: bool,
}

impl S3Settings {
    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Check a bucket name (the rules S3 applies to new buckets).
pub fn parse_bucket(s: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected an S3 bucket name: 3-63 characters from a-z, 0-9, . and -".into())
    }
}

/// Check an endpoint URL; the trailing `/` is dropped.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err("expected a URL starting with http:// or https://".into())
    }
}

/// Whether `host` (as in a URL: an IPv6 address in brackets) is this
/// machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// [`parse_endpoint`], and `https://` unless the host is this machine
/// (see [`is_loopback_host`]): what a product manifest may name. In clear,
/// anyone on the user's network could read its batches, or answer for the
/// store or the broker (a broker's `410` retires the product).
pub fn parse_secure_endpoint(s: &str) -> Result<String, String> {
    let url = parse_endpoint(s)?;
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let host = if host_port.starts_with('[') {
            host_port.split_inclusive(']').next().unwrap_or_default()
        } else {
            host_port.split(':').next().unwrap_or_default()
        };
        if !is_loopback_host(host) {
            return Err(format!(
                "{url:?} is plain http; use https (http is accepted only to this machine: localhost, 127.0.0.1, [::1])"
            ));
        }
    }
    Ok(url)
}

/// How requests to the store are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The standard AWS chain (environment, profiles, instance roles): the
    /// operator's own fleet and CI only.
    AwsChain,
    /// Unsigned requests, for a bucket whose policy lets anyone write
    /// under a prefix.
    Anonymous,
}

/// Build an SDK client for `settings`: checksums only when required, no SDK
/// retries, `timeout` per request (connect at most 5 s of it), the proxy
/// and CA bundle of `net`.
///
/// `net` also applies to the credential chain's own requests (STS, SSO):
/// behind a proxy they need it as much as the upload does. The instance
/// metadata service is `http://`, so `HTTPS_PROXY` never catches it; with
/// `HTTP_PROXY` set on EC2, add `169.254.169.254` to `NO_PROXY`, as for
/// the AWS CLI.
pub async fn client(
    settings: &S3Settings,
    credentials: Credentials,
    timeout: Duration,
    net: &crate::net::NetOptions,
) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(net.sdk_http_client(settings.endpoint.as_deref()));
    if let Some(region) = &settings.region {
        loader = loader.region(aws_sdk_s3::config::Region::new(region.clone()));
    }
    if credentials == Credentials::Anonymous {
        loader = loader.no_credentials();
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .operation_timeout(timeout)
                .build(),
        );
    if let Some(endpoint) = &settings.endpoint {
        b = b.endpoint_url(endpoint.clone());
    }
    if shared.region().is_none() && settings.region.is_none() {
        b = b.region(aws_sdk_s3::config::Region::from_static("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_endpoint_rules() {
        assert!(parse_bucket("my-bucket.1").is_ok());
        assert!(parse_bucket("My_Bucket").is_err());
        assert!(parse_bucket("ab").is_err());
        assert_eq!(parse_endpoint("http://x:9000/").unwrap(), "http://x:9000");
        assert!(parse_endpoint("x:9000").is_err());
    }
}
