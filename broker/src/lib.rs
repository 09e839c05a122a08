//! # telemetry-broker
//!
//! A small HTTP service a CLI vendor runs next to their bucket, so end
//! users' machines need no cloud credentials. `POST /v1/upload` takes a
//! batch's metadata ([`telemetry_sink::broker::UploadRequest`]), checks it
//! and answers with a presigned `PUT` that can neither overwrite an object
//! nor carry another body; `GET /healthz` says it is up.
//!
//! - [`config`]: settings from flags, environment and a TOML file.
//! - [`server`]: the HTTP listener, routing, request caps and shutdown.
//! - [`upload`]: the checks, in order, and the grant.
//! - [`presign`]: SigV4 presigning with `aws-sigv4`.
//! - [`limit`]: token-bucket rate limits with bounded memory.
//!
//! Stateless apart from the rate limiters: any number of brokers can run
//! behind a load balancer (each limits what it sees; see [`limit`]).

pub mod config;
pub mod limit;
pub mod presign;
pub mod quiet;
pub mod server;
mod stall;
pub mod upload;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

pub use config::Settings;
pub use server::run;

/// Everything a request handler needs, shared by all connections.
pub struct Broker {
    /// The settings.
    pub settings: Settings,
    /// Products with a valid manifest in the manifest directory.
    pub products: BTreeSet<String>,
    /// Signs the grants.
    pub presigner: presign::Presigner,
    /// Rate limit per client address.
    pub per_address: limit::Limiter<IpAddr>,
    /// Rate limit per IPv6 network (`network_prefix` bits).
    pub per_network: limit::Limiter<IpAddr>,
    /// Rate limit per (product, claimed machine8).
    pub per_machine: limit::Limiter<(String, String)>,
    /// Bytes granted per IPv6 network (IPv4 address).
    pub bytes: limit::Limiter<IpAddr>,
    /// Rate limit of `/healthz?product=` per IPv6 network (IPv4 address),
    /// at the per-address rate: its own, so a probe never spends uploads.
    pub probes: limit::Limiter<IpAddr>,
    /// What a flood repeats (refusals, closed connections), logged once a
    /// minute per kind and network.
    pub quiet: quiet::Quiet,
}

impl Broker {
    /// A broker with fresh rate limiters.
    pub fn new(
        settings: Settings,
        products: BTreeSet<String>,
        presigner: presign::Presigner,
    ) -> Broker {
        Broker {
            per_address: limit::Limiter::new(settings.per_address, settings.max_tracked),
            per_network: limit::Limiter::new(settings.per_network, settings.max_tracked),
            per_machine: limit::Limiter::new(settings.per_machine, settings.max_tracked),
            probes: limit::Limiter::new(settings.per_address, settings.max_tracked),
            bytes: limit::Limiter::new(settings.bytes_per_network, settings.max_tracked),
            settings,
            products,
            presigner,
            quiet: quiet::Quiet::default(),
        }
    }
}

/// A refused request: the HTTP status, the field at fault, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 408, 410, 413, 415, 429 or 500.
    pub status: u16,
    /// The request field at fault, if one is.
    pub field: Option<&'static str>,
    /// What is wrong and what to do.
    pub message: String,
    /// For 429: when to ask again.
    pub retry_after: Option<Duration>,
}

/// Which rate limit refused a request (it is named in the refusal, so a
/// client and an operator can tell a busy neighbour from their own rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Per product and claimed machine8.
    Machine,
    /// Per client address (IPv4 address or IPv6 /64).
    Address,
    /// Per IPv6 network of `prefix` bits.
    Network {
        /// The network's prefix length.
        prefix: u8,
    },
    /// `/healthz?product=` per IPv6 network or IPv4 address.
    Probe,
    /// Bytes granted per IPv6 network or IPv4 address.
    Bytes,
}

impl Refusal {
    /// 400: a field is malformed or not accepted.
    pub fn bad(field: &'static str, message: String) -> Refusal {
        Refusal {
            status: 400,
            field: Some(field),
            message: format!("{field}: {message}"),
            retry_after: None,
        }
    }

    /// 413: over a size cap.
    pub fn too_large(field: &'static str, message: String) -> Refusal {
        Refusal {
            status: 413,
            ..Refusal::bad(field, message)
        }
    }

    /// 410: the vendor retired this product or build.
    pub fn gone(field: &'static str, message: String) -> Refusal {
        Refusal {
            status: 410,
            ..Refusal::bad(field, message)
        }
    }

    /// 429: `limit` ran out; ask again after `wait` (rounded up to
    /// seconds). Only the per-machine limit names a field (`machine8`):
    /// an address or a network is no request field.
    pub fn throttled(limit: Limit, wait: Duration) -> Refusal {
        // Saturating: a wait near `Duration::MAX` must not overflow here.
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        let (field, from) = match limit {
            Limit::Bytes => {
                return Refusal {
                    status: 429,
                    field: None,
                    message: format!("too many bytes granted to this network; retry after {secs}s"),
                    retry_after: Some(Duration::from_secs(secs.max(1))),
                }
            }
            Limit::Probe => {
                return Refusal {
                    status: 429,
                    field: None,
                    message: format!(
                        "too many product questions from this network; retry after {secs}s"
                    ),
                    retry_after: Some(Duration::from_secs(secs.max(1))),
                }
            }
            Limit::Machine => (Some("machine8"), "this machine".to_string()),
            Limit::Address => (None, "this address".to_string()),
            Limit::Network { prefix } => (
                None,
                format!("this network (the IPv6 /{prefix} this address is in)"),
            ),
        };
        Refusal {
            status: 429,
            field,
            message: format!("too many upload requests from {from}; retry after {secs}s"),
            retry_after: Some(Duration::from_secs(secs.max(1))),
        }
    }

    /// 500: the broker cannot sign (its credentials); logged in full, the
    /// client gets a short message.
    pub fn internal(e: impl std::fmt::Display) -> Refusal {
        tracing::error!("cannot presign: {e}");
        Refusal {
            status: 500,
            field: None,
            message: "the broker cannot sign uploads right now; retry later".into(),
            retry_after: None,
        }
    }
}
