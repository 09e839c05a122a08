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
//! - [`fsutil`]: private directories and atomic private files.

pub mod broker;
pub mod fsutil;
pub mod key;
pub mod manifest;
pub mod net;
pub mod put;
pub mod s3;

pub use key::BatchKey;
pub use manifest::{FieldType, Manifest, ManifestError, Rejection, Upload};
pub use put::{is_permanent, Delivered, Sink, UploadError};
pub use s3::S3Settings;
