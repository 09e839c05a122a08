//! # telemetry-sink
//!
//! The parts of telemetryd that the daemon, `telemetry-report` and
//! `telemetry-broker` must agree on, in one crate so none of them links
//! another:
//! - [`manifest`]: a product's manifest (`PRODUCT.toml`): its event
//!   catalogue, where its batches go and how they authenticate, the consent
//!   wording and the catalogue's version.
//! - [`key`]: the batch object-key layout, built from validated parts and
//!   parsed back.
//! - [`s3`]: S3 destination settings, their validation, and the SDK client
//!   built the way strict stores need.
//! - [`put`]: writing a batch to its destination, and classifying failures.
//! - [`broker`]: asking a vendor's broker for a presigned PUT, and sending
//!   the batch with it.
//! - [`settings`]: the daemon's default destination as the report reads
//!   it (the `[s3]` table and the `TELEMETRY_S3_*` variables).
//! - [`fsutil`]: private directories and atomic private files.
//! - [`probe`]: checking a destination without writing to it
//!   (`telemetryctl doctor`).

pub mod broker;
pub mod fsutil;
pub mod key;
pub mod manifest;
pub mod net;
pub mod probe;
pub mod put;
pub mod s3;
pub mod settings;

pub use key::BatchKey;
pub use manifest::{FieldType, Manifest, ManifestError, Rejection, Upload};
pub use put::{is_permanent, Delivered, Sink, UploadError};
pub use s3::S3Settings;

/// An error and its causes on one line, leaving out a cause whose text the
/// message above it already ends with: telemetryd's errors name their cause
/// at the end of their own message, and `{:#}` would print it twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
