//! Writing a batch to its destination: an S3 bucket, or the local outbox
//! directory with the same key layout.

use crate::s3::{Credentials, S3Settings};
use aws_sdk_s3::primitives::ByteStream;
use std::path::PathBuf;
use std::time::Duration;

/// Why an upload failed. Messages never contain credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// Writing into the outbox failed.
    #[error("cannot write {path}: {message}")]
    Outbox {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// S3 refused or could not be reached.
    #[error("{}PutObject s3://{bucket}/{key} failed: {message}", if *.permanent { "permanent error (will not succeed until the configuration is fixed): " } else { "" })]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The SDK's error with its causes.
        message: String,
        /// Retrying soon cannot help (no such bucket, access denied, bad
        /// credentials): retried only at the slow cap, and reported loudly.
        permanent: bool,
    },
    /// The destination asked us to slow down (HTTP 429 or 503 with
    /// `Retry-After`): no attempt before `retry_after` has passed.
    #[error("{destination} asked to retry in {}s: {message}", retry_after.as_secs())]
    Throttled {
        /// Where (a broker URL or `s3://bucket`).
        destination: String,
        /// The `Retry-After` it gave.
        retry_after: Duration,
        /// Its message.
        message: String,
    },
    /// The broker refused the batch's metadata (HTTP 400 or 413): the
    /// batch cannot go this way as it is; retried only at the slow cap.
    /// Also HTTP 410 naming `builds`: every build in the batch is retired,
    /// so this batch never goes (the product's later batches may).
    #[error("{destination} refused the batch (HTTP {status}{}): {message}", field.as_deref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Rejected {
        /// The broker's URL.
        destination: String,
        /// 400, 410 or 413.
        status: u16,
        /// The request field it named, if any.
        field: Option<String>,
        /// Its message.
        message: String,
    },
    /// The vendor has retired this product (HTTP 410 from its broker): a
    /// remote off switch. Nothing more is uploaded for it.
    #[error("{destination} has retired product {product:?}: {message}")]
    Retired {
        /// The broker's URL.
        destination: String,
        /// The product.
        product: String,
        /// Its message.
        message: String,
    },
}

impl UploadError {
    /// Whether only a configuration change can fix this.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            UploadError::S3 {
                permanent: true,
                ..
            } | UploadError::Rejected { .. }
                | UploadError::Retired { .. }
        )
    }
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The object was written.
    Stored,
    /// The object was already there (`412 Precondition Failed` to
    /// `If-None-Match: *`): an earlier attempt wrote it, so the batch is
    /// delivered and nothing was overwritten.
    AlreadyThere,
}

/// Error codes S3 returns for requests that will fail the same way however
/// often they are retried. Everything else (5xx, throttling, timeouts,
/// connection failures) is transient.
const PERMANENT_CODES: &[&str] = &[
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AccountProblem",
    "InvalidObjectState",
];

/// 4xx codes that clear up by themselves (fresh credentials from the
/// chain, a corrected clock, a conflicting request finishing).
const TRANSIENT_CODES: &[&str] = &[
    "ExpiredToken",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "OperationAborted",
    "SlowDown",
    "TooManyRequests",
];

/// Classify a PutObject failure from its HTTP status and S3 error code.
pub fn is_permanent(status: Option<u16>, code: Option<&str>) -> bool {
    if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return false;
    }
    if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
        return true;
    }
    match status {
        // 408 Request Timeout, 409 Conflict (a concurrent write of the same
        // key) and 429 Too Many Requests are worth retrying.
        Some(408) | Some(409) | Some(429) => false,
        Some(s) => (400..500).contains(&s),
        None => false,
    }
}

/// Where batches go.
pub enum Sink {
    /// A local directory; keys become relative paths.
    Outbox(PathBuf),
    /// An S3 (or S3-compatible) bucket.
    S3 {
        /// The SDK client.
        client: aws_sdk_s3::Client,
        /// Bucket name.
        bucket: String,
        /// The endpoint configured for an S3-compatible store, named in
        /// errors when it does not answer; `None` for AWS's own.
        endpoint: Option<String>,
    },
}

impl Sink {
    /// A bucket, with credentials from the standard AWS chain, reached
    /// through `net` (proxy, CA bundle).
    pub async fn s3(
        settings: &S3Settings,
        timeout: Duration,
        net: &crate::net::NetOptions,
    ) -> Sink {
        Sink::s3_with(settings, Credentials::AwsChain, timeout, net).await
    }

    /// A bucket, with the given credentials (unsigned for
    /// [`Credentials::Anonymous`]), reached through `net`.
    pub async fn s3_with(
        settings: &S3Settings,
        credentials: Credentials,
        timeout: Duration,
        net: &crate::net::NetOptions,
    ) -> Sink {
        Sink::S3 {
            client: crate::s3::client(settings, credentials, timeout, net).await,
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
        }
    }

    /// Write `body` under `key`, never over an existing object: every S3
    /// put carries `If-None-Match: *`, and `412 Precondition Failed` means
    /// an earlier attempt (say, one whose answer a crash lost) already
    /// stored this batch, so it is [`Delivered::AlreadyThere`]. A store that
    /// ignores the header (Garage does) gets the same key and bytes as the
    /// first time, so either way a retry never makes a second object.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<Delivered, UploadError> {
        match self {
            Sink::Outbox(dir) => {
                let path = dir.join(key);
                let p = path.clone();
                tokio::task::spawn_blocking(move || crate::fsutil::write_private_atomic(&p, &body))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|()| Delivered::Stored)
                    .map_err(|message| UploadError::Outbox { path, message })
            }
            Sink::S3 {
                client,
                bucket,
                endpoint,
            } => {
                let sent = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("application/zstd")
                    .if_none_match("*")
                    .body(ByteStream::from(body))
                    .send()
                    .await;
                let e = match sent {
                    Ok(_) => return Ok(Delivered::Stored),
                    Err(e) => e,
                };
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(412) {
                    return Ok(Delivered::AlreadyThere);
                }
                let code = e.as_service_error().and_then(|s| {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    s.code().map(str::to_string)
                });
                Err(UploadError::S3 {
                    bucket: bucket.clone(),
                    key: key.to_string(),
                    message: match status {
                        // The SDK's own `DisplayErrorContext` ends with the whole
                        // error's debug form (a screenful of struct names).
                        // (Folded: a credential error lists its sources a line each.)
                        Some(_) => crate::error_line(&e),
                        // No HTTP answer at all (refused, DNS, TLS, timeout).
                        None => format!(
                            "{}; {} gave no answer: check its address and any proxy, or run `telemetryctl doctor`",
                            crate::error_line(&e),
                            match endpoint {
                                Some(ep) => format!("the endpoint {ep}"),
                                // AWS's, or one AWS_ENDPOINT_URL names.
                                None => "the S3 endpoint".to_string(),
                            }
                        ),
                    },
                    permanent: is_permanent(status, code.as_deref()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_reads_as_one_line_each_cause_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let e = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "io error",
                Some(Box::new(Layer(
                    "Connection refused (os error 111)",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        // The SDK's errors end with their cause's text, as ours do.
        assert_eq!(
            crate::error_chain(&e),
            "dispatch failure: io error: Connection refused (os error 111)"
        );
    }

    #[test]
    fn classification() {
        assert!(is_permanent(Some(404), Some("NoSuchBucket")));
        assert!(is_permanent(Some(403), Some("AccessDenied")));
        assert!(is_permanent(Some(403), None));
        assert!(!is_permanent(Some(503), Some("SlowDown")));
        assert!(!is_permanent(Some(500), Some("InternalError")));
        assert!(!is_permanent(Some(429), None));
        assert!(!is_permanent(Some(409), None));
        assert!(!is_permanent(Some(408), Some("RequestTimeout")));
        assert!(
            !is_permanent(None, None),
            "timeouts and refused connections are transient"
        );
    }
}
