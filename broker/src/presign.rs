//! Presigning a `PUT` whose signature covers the body's length, checksum
//! and content type and `If-None-Match: *`.
//!
//! The SDK's presigner drops `x-amz-checksum-sha256` when presigning
//! `PutObject` (awslabs/aws-sdk-rust#1103), and a URL without it would
//! carry any body of the right length. So this signs with `aws-sigv4`
//! directly: every header given to the signer is signed, and the URL's
//! `X-Amz-SignedHeaders` lists them.

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use telemetry_sink::S3Settings;

/// What SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a URL could not be presigned.
#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    /// The AWS chain gave no credentials.
    #[error("no AWS credentials from the standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role): {0}")]
    Credentials(String),
    /// The signer refused the request. The object key is left out: it
    /// holds the machine's `machine8`, and this is logged beside the
    /// client's network.
    #[error("cannot sign a PUT: {message}")]
    Sign {
        /// The signer's error.
        message: String,
    },
}

/// A presigned request: what the broker hands out.
#[derive(Debug, Clone)]
pub struct Presigned {
    /// The URL, signature in the query.
    pub url: String,
    /// Headers the client must send as they are (all signed; `host` comes
    /// from the URL).
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

/// Signs PUTs for one bucket with credentials from the AWS chain, cached
/// until shortly before they expire.
pub struct Presigner {
    settings: S3Settings,
    region: String,
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    /// When the chain last failed, and why: requests queued behind a
    /// stalled or failing source are answered with that at once, not each
    /// after a wait of its own.
    failed: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// [`CREDENTIALS_TIMEOUT`] (shorter in tests).
    credentials_timeout: Duration,
}

/// Longest the credential chain may take to answer (an instance-metadata
/// service that stalls would otherwise hold every grant).
/// (10 s: a `credential_process` or an SSO cache refresh may take seconds.)
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failure of the chain answers for it before it is asked again.
const RETRY_CREDENTIALS_AFTER: Duration = Duration::from_secs(2);

impl Presigner {
    /// Load the AWS chain for `settings` (region from the settings, then
    /// the chain, then `us-east-1`).
    pub async fn from_chain(settings: S3Settings) -> Result<Presigner, PresignError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let provider = shared
            .credentials_provider()
            .ok_or_else(|| PresignError::Credentials("the chain is empty".into()))?;
        Ok(Presigner {
            settings,
            region,
            provider,
            cached: tokio::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(None),
            credentials_timeout: CREDENTIALS_TIMEOUT,
        })
    }

    /// The bucket and prefix URLs are signed for.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Credentials good for at least `lifetime` more: the cached ones, or
    /// fresh ones from the chain (which may reach an instance-metadata
    /// service, hence the cache).
    pub async fn credentials(&self, lifetime: Duration) -> Result<Credentials, PresignError> {
        let mut cached = self.cached.lock().await;
        let fresh_enough = |c: &Credentials| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + lifetime + Duration::from_secs(60))
        };
        if let Some(c) = cached.as_ref().filter(|c| fresh_enough(c)) {
            return Ok(c.clone());
        }
        let recent = |f: &Option<(std::time::Instant, String)>| {
            f.as_ref()
                .filter(|(at, _)| at.elapsed() < RETRY_CREDENTIALS_AFTER)
                .map(|(_, why)| why.clone())
        };
        if let Some(why) = recent(&self.failed.lock().unwrap_or_else(|p| p.into_inner())) {
            return Err(PresignError::Credentials(why));
        }
        let answer = tokio::time::timeout(
            self.credentials_timeout,
            self.provider.provide_credentials(),
        )
        .await;
        let why = match answer {
            Ok(Ok(c)) => {
                *cached = Some(c.clone());
                return Ok(c);
            }
            // The chain lists each source it tried on a line of its own.
            Ok(Err(e)) => telemetry_sink::error_line(&e),
            Err(_) => format!(
                "the credential chain did not answer within {:?} (an instance-metadata service that stalls?)",
                self.credentials_timeout
            ),
        };
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), why.clone()));
        Err(PresignError::Credentials(why))
    }

    /// Presign `PUT key` for a body of `bytes` bytes whose SHA-256 is
    /// `sha256_b64` (base64), valid for `lifetime` from `now`.
    pub async fn put(
        &self,
        key: &str,
        bytes: u64,
        sha256_b64: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Presigned, PresignError> {
        let creds = self.credentials(lifetime).await?;
        let path: String = key
            .split('/')
            .map(|seg| utf8_percent_encode(seg, SIGV4).to_string())
            .collect::<Vec<_>>()
            .join("/");
        let bucket = &self.settings.bucket;
        let (base, host) = match &self.settings.endpoint {
            Some(ep) if self.settings.path_style => {
                (format!("{ep}/{bucket}/{path}"), authority(ep).to_string())
            }
            Some(ep) => {
                let (scheme, host) = ep.split_once("://").unwrap_or(("https", ep));
                let host = format!("{bucket}.{}", host.split('/').next().unwrap_or(host));
                (format!("{scheme}://{host}/{path}"), host)
            }
            None if self.settings.path_style => {
                let host = format!("s3.{}.amazonaws.com", self.region);
                (format!("https://{host}/{bucket}/{path}"), host)
            }
            None => {
                let host = format!("{bucket}.s3.{}.amazonaws.com", self.region);
                (format!("https://{host}/{path}"), host)
            }
        };
        // Content-Type is signed too: a caller picks its own body, and a
        // body stored as `text/html` on a bucket served to browsers would be
        // script on the vendor's domain. Batches are zstd, as the daemon's
        // own S3 sink labels them.
        let headers: BTreeMap<String, String> = [
            ("content-length", bytes.to_string()),
            ("content-type", "application/zstd".to_string()),
            ("if-none-match", "*".to_string()),
            ("x-amz-checksum-sha256", sha256_b64.to_string()),
            ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // SigV4 dates are whole seconds: the URL is signed at `now`
        // rounded down and dies `expires_in` after that. A second is added
        // when that rounding took time off, so the URL lives at least
        // `lifetime` (a 1 s URL signed at x.9 s would have lived 0.1 s),
        // and `expires_at` is the true end, not an estimate.
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let signed_at = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
        // `X-Amz-Expires` is whole seconds too: rounded up, so a lifetime
        // that is not a whole number of seconds is not cut short either.
        let span = Duration::from_nanos(u64::from(since_epoch.subsec_nanos())) + lifetime;
        let expires_in = Duration::from_secs(span.as_secs() + u64::from(span.subsec_nanos() > 0));
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires_in);
        // S3 signs the path as sent, encoded once and not normalised.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = creds.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(signed_at)
            .settings(settings)
            .build()
            .map_err(|e| sign_error(e.to_string()))?
            .into();
        let signed_headers = std::iter::once(("host", host.as_str()))
            .chain(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let signable = SignableRequest::new(
            "PUT",
            base.clone(),
            signed_headers,
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| sign_error(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| sign_error(e.to_string()))?
            .into_parts();
        let query: Vec<String> = instructions
            .params()
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, SIGV4)))
            .collect();
        let expires_at = match creds.expiry() {
            Some(e) => e.min(signed_at + expires_in),
            None => signed_at + expires_in,
        };
        Ok(Presigned {
            url: format!("{base}?{}", query.join("&")),
            headers,
            expires_at,
        })
    }
}

fn sign_error(message: String) -> PresignError {
    PresignError::Sign { message }
}

/// `host[:port]` of an endpoint URL.
fn authority(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_endpoints() {
        assert_eq!(authority("http://127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(authority("https://s3.example.com/base"), "s3.example.com");
    }

    /// A source that never answers.
    #[derive(Debug)]
    struct Stalled;

    impl aws_credential_types::provider::ProvideCredentials for Stalled {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::new(std::future::pending())
        }
    }

    #[test]
    fn a_stalled_credential_source_fails_grants_in_time_and_once() {
        let p = Presigner {
            settings: S3Settings {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
                path_style: false,
            },
            region: "us-east-1".into(),
            provider: aws_credential_types::provider::SharedCredentialsProvider::new(Stalled),
            cached: tokio::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(None),
            credentials_timeout: Duration::from_millis(200),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        let first = rt.block_on(p.credentials(Duration::from_secs(300)));
        assert!(t.elapsed() >= Duration::from_millis(200));
        let why = first.unwrap_err().to_string();
        assert!(why.contains("did not answer within"), "{why}");
        // The requests queued behind it are answered at once.
        let t = std::time::Instant::now();
        let second = rt.block_on(p.credentials(Duration::from_secs(300)));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(second.unwrap_err().to_string(), why);
    }

    #[test]
    fn sigv4_encoding_keeps_only_unreserved() {
        let s = utf8_percent_encode("product=cfdev a/b~_-.", SIGV4).to_string();
        assert_eq!(s, "product%3Dcfdev%20a%2Fb~_-.");
    }
}
