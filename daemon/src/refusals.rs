//! Refused events: counted for `status` and logged, so that a CLI author
//! whose event the daemon refuses (a typo in an event name, a key missing
//! from the catalogue, consent off, a full store) can find out why.
//!
//! Counts are kept in memory since the daemon started, per product and
//! reason (the [`ErrorCode`] of the reply). Product names come from
//! clients, so at most [`MAX_PRODUCTS`] distinct names are kept apart; the
//! rest are counted under `*`, and a name that is not a valid product name
//! is counted under the empty one, like refusals that name no product
//! (`busy`, `malformed`).
//!
//! The log is rate-limited per product and reason: the first refusal is
//! logged at once with its event and message, then at most one line per
//! [`LOG_EVERY`], saying how many were not logged in between.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use telemetry_proto::{validate_name, ErrorCode, Limits, RefusalCount};

/// Distinct product names counted apart.
pub const MAX_PRODUCTS: usize = 64;

/// At most one log line per product and reason in this time.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// The counter a product name goes under when [`MAX_PRODUCTS`] are taken.
const OTHER_PRODUCTS: &str = "*";

/// Refusal counts and their log's rate limit.
#[derive(Default)]
pub struct Refusals {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    counts: BTreeMap<(String, ErrorCode), Count>,
    /// Product names counted apart (at most [`MAX_PRODUCTS`]).
    products: BTreeSet<String>,
}

struct Count {
    total: u64,
    /// The latest refusal's event and message, for `status` (a CLI author
    /// sees why without the daemon's log).
    last_event: String,
    last_message: String,
    /// When a line was last logged, and refusals not logged since.
    logged_at: Instant,
    unlogged: u64,
}

/// One refusal, as the handler saw it.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// The product the refused event named ("" when none).
    pub product: &'a str,
    /// The event's name ("" when none).
    pub event: &'a str,
    /// Why.
    pub code: ErrorCode,
    /// The error message sent to the client.
    pub message: &'a str,
}

impl<'a> Refusal<'a> {
    /// A refusal of a request that was not read (so names no product or
    /// event): `busy`, `malformed`, `frame_too_large`, ...
    pub fn unread(code: ErrorCode, message: &'a str) -> Refusal<'a> {
        Refusal {
            product: "",
            event: "",
            code,
            message,
        }
    }
}

impl Refusals {
    /// Count `r` and log it unless its product and reason were logged less
    /// than [`LOG_EVERY`] ago.
    pub fn record(&self, r: Refusal<'_>) {
        if let Some(unlogged) = self.record_at(r, Instant::now()) {
            let product = if r.product.is_empty() {
                "(none)"
            } else {
                r.product
            };
            tracing::warn!(
                product,
                event = r.event,
                reason = %r.code,
                not_logged_since_last = unlogged,
                "refused: {}",
                // A client's bytes quoted in it (an unknown key's name) must
                // not start a line of their own in the log.
                r.message.escape_debug()
            );
        }
    }

    /// Count `r` at `now`; `Some(refusals not logged since the last line)`
    /// when this one should be logged.
    fn record_at(&self, r: Refusal<'_>, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let product = inner.key_for(r.product);
        let key = (product, r.code);
        match inner.counts.get_mut(&key) {
            Some(c) => {
                c.total += 1;
                if c.last_event != r.event {
                    c.last_event = shown_event(r.event);
                }
                c.last_message = shown_message(r.message);
                if now.saturating_duration_since(c.logged_at) >= LOG_EVERY {
                    let unlogged = c.unlogged;
                    c.logged_at = now;
                    c.unlogged = 0;
                    Some(unlogged)
                } else {
                    c.unlogged += 1;
                    None
                }
            }
            None => {
                inner.counts.insert(
                    key,
                    Count {
                        total: 1,
                        last_event: shown_event(r.event),
                        last_message: shown_message(r.message),
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// The counts, largest first (then by product and reason), with the
    /// latest event and message of each only when `with_latest`.
    pub fn snapshot(&self, with_latest: bool) -> Vec<RefusalCount> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<RefusalCount> = inner
            .counts
            .iter()
            .map(|((product, code), c)| RefusalCount {
                product: product.clone(),
                code: *code,
                count: c.total,
                last_event: if with_latest {
                    c.last_event.clone()
                } else {
                    String::new()
                },
                last_message: if with_latest {
                    c.last_message.clone()
                } else {
                    String::new()
                },
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.count));
        out
    }
}

/// A client's event name as `status` shows it: a valid name as it is,
/// anything else (the refusal may be for the name) made safe and short.
fn shown_event(event: &str) -> String {
    if validate_name("event", event, &Limits::default()).is_ok() {
        event.to_string()
    } else {
        telemetry_sink::untrusted(&telemetry_proto::truncated(event), 80)
    }
}

/// A refusal's message as `status` shows it (client bytes are quoted in
/// it, escaped by the handler's `{:?}`, but not always).
fn shown_message(message: &str) -> String {
    telemetry_sink::untrusted(message, telemetry_proto::REFUSAL_MESSAGE_MAX)
}

impl Inner {
    /// The counter name for a client-supplied product name.
    fn key_for(&mut self, product: &str) -> String {
        if product.is_empty() || validate_name("product", product, &Limits::default()).is_err() {
            return String::new();
        }
        if self.products.contains(product) {
            return product.to_string();
        }
        if self.products.len() >= MAX_PRODUCTS {
            return OTHER_PRODUCTS.to_string();
        }
        self.products.insert(product.to_string());
        product.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(product: &str, code: ErrorCode) -> Refusal<'_> {
        Refusal {
            product,
            event: "app_creatd",
            code,
            message: "not in the catalogue",
        }
    }

    #[test]
    fn counts_by_product_and_reason_largest_first() {
        let refusals = Refusals::default();
        let t = Instant::now();
        for _ in 0..3 {
            refusals.record_at(r("cfdev", ErrorCode::NotInCatalogue), t);
        }
        refusals.record_at(r("cfdev", ErrorCode::ConsentOff), t);
        refusals.record_at(r("", ErrorCode::Busy), t);
        refusals.record_at(r("Not A Name!", ErrorCode::Invalid), t);
        let got: Vec<(String, ErrorCode, u64)> = refusals
            .snapshot(true)
            .into_iter()
            .map(|c| (c.product, c.code, c.count))
            .collect();
        assert_eq!(got[0], ("cfdev".into(), ErrorCode::NotInCatalogue, 3));
        assert_eq!(got.len(), 4);
        assert!(got.contains(&(String::new(), ErrorCode::Busy, 1)));
        assert!(
            got.contains(&(String::new(), ErrorCode::Invalid, 1)),
            "an invalid product name is not kept: {got:?}"
        );
    }

    #[test]
    fn the_latest_event_and_message_are_kept_safe_to_print() {
        let refusals = Refusals::default();
        let t = Instant::now();
        refusals.record_at(r("cfdev", ErrorCode::Invalid), t);
        let long = "x".repeat(5000);
        let evil = Refusal {
            product: "cfdev",
            event: "Bad\u{1b}[2J",
            code: ErrorCode::Invalid,
            message: &format!("line one\nline\u{1b}[2J two {long}"),
        };
        refusals.record_at(evil, t);
        let snap = refusals.snapshot(true);
        let got = &snap[0];
        assert_eq!(got.count, 2);
        assert_eq!(got.last_event, "Bad\\u{1b}[2J", "the latest, escaped");
        assert!(
            got.last_message
                .starts_with("line one; line\\u{1b}[2J two xxx"),
            "the latest, on one line and escaped: {}",
            got.last_message
        );
        // Cut after the limit (an escape written out counts as one).
        let shown = got.last_message.chars().count();
        assert!(
            (telemetry_proto::REFUSAL_MESSAGE_MAX..telemetry_proto::REFUSAL_MESSAGE_MAX + 10)
                .contains(&shown),
            "{shown}"
        );
        assert!(!got.last_message.chars().any(char::is_control));
    }

    #[test]
    fn the_log_is_rate_limited_per_product_and_reason() {
        let refusals = Refusals::default();
        let t = Instant::now();
        let cat = r("cfdev", ErrorCode::NotInCatalogue);
        assert_eq!(refusals.record_at(cat, t), Some(0), "the first is logged");
        assert_eq!(refusals.record_at(cat, t + Duration::from_secs(1)), None);
        assert_eq!(refusals.record_at(cat, t + Duration::from_secs(2)), None);
        assert_eq!(
            refusals.record_at(r("cfdev", ErrorCode::ConsentOff), t),
            Some(0),
            "another reason has its own limit"
        );
        assert_eq!(
            refusals.record_at(cat, t + LOG_EVERY),
            Some(2),
            "a minute on, logged with the count of those not logged"
        );
        assert_eq!(refusals.record_at(cat, t + LOG_EVERY), None);
    }

    #[test]
    fn client_chosen_product_names_cannot_grow_the_counters_without_bound() {
        let refusals = Refusals::default();
        let t = Instant::now();
        for i in 0..MAX_PRODUCTS + 50 {
            let name = format!("p{i}");
            refusals.record_at(r(&name, ErrorCode::NotInCatalogue), t);
            refusals.record_at(r(&name, ErrorCode::ConsentOff), t);
        }
        let snap = refusals.snapshot(true);
        assert_eq!(snap.len(), 2 * MAX_PRODUCTS + 2);
        let other: u64 = snap
            .iter()
            .filter(|c| c.product == OTHER_PRODUCTS)
            .map(|c| c.count)
            .sum();
        assert_eq!(other, 100);
        assert_eq!(
            snap.iter().map(|c| c.count).sum::<u64>(),
            2 * (MAX_PRODUCTS as u64 + 50)
        );
    }
}
