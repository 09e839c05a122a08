//! Destinations: where a product's batches go and how they authenticate.
//!
//! A product's manifest may name its own destination (`[upload]`,
//! `anonymous` or `broker`); otherwise its batches go to the daemon's own
//! destination: the operator's `[s3]` settings with the AWS chain, else the
//! local outbox.
//!
//! # Fixed at seal time
//! When a batch is sealed, the destination its manifest names is written
//! into the batch row as a [`Spec`] (canonical JSON, see
//! [`Spec::to_text`]); the daemon's own destination is written as no spec
//! (`NULL`) and means "the daemon's own destination when uploaded", so an
//! operator who fixes a wrong bucket redirects batches already waiting. A
//! manifest that changes later never redirects a sealed batch: its key
//! (with that destination's prefix) and its destination were consented to
//! and fixed together.
//!
//! # Adding an auth mode
//! [`Target`] is what a spec becomes at upload time; a new mode is one
//! [`Spec`] variant and one [`Target`] arm.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use telemetry_sink::broker::{put_request_via_broker, UploadRequest};
use telemetry_sink::s3::Credentials;
use telemetry_sink::BatchKey;
use telemetry_sink::{Delivered, S3Settings, Sink, Upload, UploadError};

/// A destination a vendor's manifest named, resolved and frozen into each
/// batch sealed for it. Never the AWS chain: that is only for the
/// operator's own configuration (the daemon's own destination).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "lowercase", deny_unknown_fields)]
pub enum Spec {
    /// Unsigned `PutObject` to a bucket that lets anyone write under
    /// `prefix`.
    Anonymous {
        /// Bucket.
        bucket: String,
        /// Key prefix (part of each batch's key).
        prefix: String,
        /// Endpoint URL of an S3-compatible store.
        endpoint: Option<String>,
        /// Region.
        region: Option<String>,
        /// Path-style addressing.
        path_style: bool,
    },
    /// The vendor's broker hands out a presigned PUT per batch.
    Broker {
        /// The broker's base URL.
        url: String,
    },
}

impl Spec {
    /// The spec for a manifest's `[upload]` table.
    pub fn from_upload(upload: &Upload) -> Spec {
        match upload {
            Upload::Anonymous(s) => Spec::Anonymous {
                bucket: s.bucket.clone(),
                prefix: s.prefix.clone(),
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                path_style: s.path_style,
            },
            Upload::Broker { url } => Spec::Broker { url: url.clone() },
        }
    }

    /// The canonical text stored with a batch: JSON with the fields in
    /// declaration order, so equal specs are equal strings and batches can
    /// be grouped by destination in SQL.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a spec is plain strings and bools")
    }

    /// Read a stored spec back.
    pub fn parse(text: &str) -> Result<Spec, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The prefix a batch key gets. A broker owns its bucket and prefix and
    /// is sent the key's parts only, so its batches have none.
    pub fn key_prefix(&self) -> &str {
        match self {
            Spec::Anonymous { prefix, .. } => prefix,
            Spec::Broker { .. } => "",
        }
    }

    /// The auth mode's name, as in manifests.
    pub fn auth(&self) -> &'static str {
        match self {
            Spec::Anonymous { .. } => "anonymous",
            Spec::Broker { .. } => "broker",
        }
    }

    /// How `status` and messages name it: `s3://bucket/prefix` (with the
    /// endpoint, if not AWS) or the broker's URL (never credentials: there
    /// are none).
    pub fn label(&self) -> String {
        match self {
            Spec::Anonymous {
                bucket,
                prefix,
                endpoint,
                ..
            } => {
                let mut label = format!("s3://{bucket}");
                if !prefix.is_empty() {
                    label = format!("{label}/{prefix}");
                }
                match endpoint {
                    Some(e) => format!("{label} at {e}"),
                    None => label,
                }
            }
            Spec::Broker { url } => url.clone(),
        }
    }
}

/// A destination as stored with a batch: `None` is the daemon's own.
pub type DestId = Option<String>;

/// What a destination is at upload time.
pub enum Target {
    /// A bucket (AWS chain or unsigned) or the outbox.
    Sink(Sink),
    /// The vendor's broker: ask it for a presigned PUT, then PUT
    /// (`telemetry_sink::broker`).
    Broker {
        /// The broker's base URL.
        url: String,
        /// One HTTP client (connection pool, proxy, CA bundle) per broker;
        /// boxed, it is far larger than a [`Sink`].
        client: Box<telemetry_sink::net::HttpClient>,
        /// Budget for the grant and the PUT together.
        timeout: Duration,
    },
}

impl Target {
    /// Upload one batch. `key` is the batch's stored key; the answer
    /// names the key it was stored under when that is another (a broker
    /// builds its own).
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> Result<(Delivered, Option<String>), UploadError> {
        match self {
            Target::Sink(sink) => sink.put(key, body).await.map(|d| (d, None)),
            Target::Broker {
                url,
                client,
                timeout,
            } => {
                // The broker builds the key itself from the batch's parts;
                // the stored key only carries them.
                let Some((_, parts)) = BatchKey::parse(key) else {
                    return Err(UploadError::Rejected {
                        destination: url.clone(),
                        status: 0,
                        // This batch's own fault: the ones behind it go on.
                        field: Some("key".into()),
                        message: format!("the stored key {key:?} is not a batch key"),
                    });
                };
                // The builds in the batch, so a vendor can retire a build
                // (410) as well as a whole product.
                let request = UploadRequest::new(&parts, &body).with_builds(builds_in(&body));
                put_request_via_broker(client, url, request, body, *timeout)
                    .await
                    .map(|d| (d.delivered, d.key))
            }
        }
    }
}

/// The distinct `build` values of a batch's events (empty if the body
/// cannot be read, which only costs the broker's per-build check). The
/// daemon's own events (an off, a forget, a drop count) name no build: they
/// are the user's requests and counts, not the build's behaviour, so a
/// batch of only those (a forget's marker, a final off) always reaches the
/// vendor, whatever builds they retired.
fn builds_in(body: &[u8]) -> Vec<String> {
    let Ok(ndjson) = zstd::stream::decode_all(body) else {
        return Vec::new();
    };
    let mut builds = std::collections::BTreeSet::new();
    for line in ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        #[derive(serde::Deserialize)]
        struct Line {
            event: String,
            build: String,
        }
        if let Ok(l) = serde_json::from_slice::<Line>(line) {
            if !telemetry_sink::manifest::DAEMON_EVENTS.contains(&l.event.as_str()) {
                builds.insert(l.build);
            }
        }
    }
    builds.into_iter().collect()
}

/// One [`Target`] per destination, made on first use and kept (an SDK
/// client holds a connection pool worth reusing).
pub struct Registry {
    own: Arc<Target>,
    own_label: String,
    own_auth: &'static str,
    timeout: Duration,
    /// Proxy and CA bundle for every client built here.
    net: telemetry_sink::net::NetOptions,
    built: tokio::sync::Mutex<HashMap<String, Arc<Target>>>,
}

impl Registry {
    /// A registry whose own destination is `own` (labelled `own_label`;
    /// `own_auth` is `aws` or `outbox`); other targets' requests time out
    /// after `timeout` and go through `net` (proxy, CA bundle).
    pub fn new(
        own: Sink,
        own_label: String,
        own_auth: &'static str,
        timeout: Duration,
        net: telemetry_sink::net::NetOptions,
    ) -> Self {
        Registry {
            own: Arc::new(Target::Sink(own)),
            own_label,
            own_auth,
            timeout,
            net,
            built: Default::default(),
        }
    }

    /// The target for a stored destination. A spec this build cannot read
    /// (a damaged row) is an error for that destination only.
    pub async fn get(&self, id: &DestId) -> Result<Arc<Target>, UploadError> {
        let Some(text) = id else {
            return Ok(self.own.clone());
        };
        let mut built = self.built.lock().await;
        if let Some(t) = built.get(text) {
            return Ok(t.clone());
        }
        let spec = Spec::parse(text).map_err(|e| UploadError::Rejected {
            destination: text.clone(),
            status: 0,
            field: None,
            message: format!("unreadable destination stored with the batch: {e}"),
        })?;
        let target = Arc::new(match spec {
            Spec::Anonymous {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
            } => {
                let settings = S3Settings {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                    path_style,
                };
                Target::Sink(
                    Sink::s3_with(&settings, Credentials::Anonymous, self.timeout, &self.net).await,
                )
            }
            Spec::Broker { url } => Target::Broker {
                client: Box::new(telemetry_sink::net::http_client(&self.net).map_err(|e| {
                    UploadError::Rejected {
                        destination: url.clone(),
                        status: 0,
                        field: None,
                        message: format!("cannot build an HTTP client for the broker: {e}"),
                    }
                })?),
                url,
                timeout: self.timeout,
            },
        });
        built.insert(text.clone(), target.clone());
        Ok(target)
    }

    /// The proxy and CA bundle every client here goes through (for
    /// `doctor`'s probes, which must take the uploads' route).
    pub fn net(&self) -> &telemetry_sink::net::NetOptions {
        &self.net
    }

    /// What a receipt records of a destination: as [`Registry::describe`]
    /// names it, but the local outbox without its path. A receipt is
    /// stored, and nothing stored may hold a path (under a home directory,
    /// the user's name); `status` names the outbox's directory.
    pub fn receipt_label(&self, id: &DestId) -> String {
        match (id, self.own_auth) {
            (None, "outbox") => "outbox".to_string(),
            _ => self.describe(id).0,
        }
    }

    /// How `status` names a destination, and its auth mode.
    pub fn describe(&self, id: &DestId) -> (String, String) {
        match id {
            None => (self.own_label.clone(), self.own_auth.to_string()),
            Some(text) => match Spec::parse(text) {
                Ok(spec) => (spec.label(), spec.auth().to_string()),
                Err(_) => (text.clone(), "unknown".to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_the_builds_of_its_events_not_of_the_daemons_own() {
        let body = |lines: &str| zstd::stream::encode_all(lines.as_bytes(), 3).unwrap();
        let line = |event: &str, build: &str| {
            format!("{{\"event\":\"{event}\",\"build\":\"{build}\",\"product\":\"p\"}}\n")
        };
        let mixed = [
            line("ran", "1.0"),
            line("ran", "2.0"),
            line("telemetry_dropped", "0.9"),
            line("ran", "1.0"),
        ]
        .concat();
        assert_eq!(builds_in(&body(&mixed)), ["1.0", "2.0"]);
        let marker = [
            line("telemetry_forget", "1.0"),
            line("telemetry_off", "1.0"),
        ]
        .concat();
        assert!(builds_in(&body(&marker)).is_empty(), "a forget or an off");
        assert!(builds_in(b"not zstd").is_empty());
    }

    #[test]
    fn specs_are_canonical_and_read_back() {
        let spec = Spec::Anonymous {
            bucket: "b".into(),
            prefix: "raw".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: None,
            path_style: true,
        };
        let text = spec.to_text();
        assert_eq!(
            text,
            r#"{"auth":"anonymous","bucket":"b","prefix":"raw","endpoint":"http://127.0.0.1:9000","region":null,"path_style":true}"#
        );
        assert_eq!(Spec::parse(&text).unwrap(), spec);
        assert_eq!(spec.key_prefix(), "raw");
        assert_eq!(spec.label(), "s3://b/raw at http://127.0.0.1:9000");
        let broker = Spec::Broker {
            url: "https://t.example".into(),
        };
        assert_eq!(
            broker.to_text(),
            r#"{"auth":"broker","url":"https://t.example"}"#
        );
        assert_eq!(broker.key_prefix(), "", "the broker owns its prefix");
        assert!(Spec::parse(r#"{"auth":"aws","bucket":"b"}"#).is_err());
    }
}
