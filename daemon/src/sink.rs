//! Destinations for sealed batches: an S3 bucket, or the local outbox
//! directory with the same key layout.
//!
//! # S3 compatibility
//! Batches are small and whole in memory, so each is one `PutObject` with a
//! signed payload hash, and the client computes and validates checksums only
//! "when required": strict stores (R2, Garage, some Ceph) reject the SDK's
//! default flexible checksums on streamed uploads. The SDK's own retries are
//! off; the uploader retries with its own backoff and reports every failure.

use crate::config::S3Config;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
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
    #[error("PutObject s3://{bucket}/{key} failed: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The SDK's error with its causes.
        message: String,
    },
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
    },
}

impl Sink {
    /// Build the S3 client (credentials from the standard AWS chain).
    pub async fn s3(cfg: &S3Config) -> Sink {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_sdk_s3::config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint.clone());
        }
        if shared.region().is_none() && cfg.region.is_none() {
            b = b.region(aws_sdk_s3::config::Region::from_static("us-east-1"));
        }
        Sink::S3 {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
        }
    }

    /// Write `body` under `key`. Writing the same key twice replaces the
    /// object, which is what makes retries duplicate-free.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), UploadError> {
        match self {
            Sink::Outbox(dir) => {
                let path = dir.join(key);
                let p = path.clone();
                tokio::task::spawn_blocking(move || crate::fsutil::write_private_atomic(&p, &body))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|message| UploadError::Outbox { path, message })
            }
            Sink::S3 { client, bucket } => client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("application/zstd")
                .body(ByteStream::from(body))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| UploadError::S3 {
                    bucket: bucket.clone(),
                    key: key.to_string(),
                    message: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                }),
        }
    }
}
