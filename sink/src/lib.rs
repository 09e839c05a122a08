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

/// `text` on one line: each line break (and the indent after it) made
/// "; ", or a space after a colon. The AWS SDK's credential errors list
/// the sources they tried one a line; where they become a log line, a
/// check's detail or a one-line error, they are folded with this. (Not in
/// [`error_chain`] itself: a config file's parse error points at its
/// column on a line of its own, which folding would garble.)
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            // A line that introduces a list is followed by its first item.
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// Text a remote party wrote (a broker's or a store's error message), made
/// safe to show in a terminal or a log line: on one line, every control
/// character (an escape sequence could clear a user's screen and print a
/// made-up status line, or forge a log line) written as its escape, and at
/// most `max` characters. Unicode's bidirectional controls are escaped too:
/// not control characters to Rust, they still reorder what a terminal shows
/// after them, so a message could read as something it is not ("Trojan
/// Source", CVE-2021-42574). One daemon serves several vendors: none may
/// write into what the user reads of another.
pub fn untrusted(text: &str, max: usize) -> String {
    telemetry_proto::printable(&one_line(text), max)
}

/// Longest a remote party's message is shown.
pub const MAX_UNTRUSTED_CHARS: usize = 300;

/// An SDK error as one line: [`error_chain`] folded by [`one_line`], for
/// errors that become a status, a check's detail or a one-line message.
pub fn error_line(e: &dyn std::error::Error) -> String {
    // A store's own words are in the chain: made safe as a broker's are.
    untrusted(&error_chain(e), usize::MAX)
}

/// Logs by default: `info`, except the AWS SDK's warnings about each
/// instance-metadata lookup and each credential or region source that
/// fails while its chain goes on to the next (`aws_config::imds`,
/// `aws_config::meta`), printed with raw responses; what matters of them
/// reaches the error the chain ends with. Its other warnings (a profile
/// file it cannot parse) still show. `TELEMETRY_LOG` replaces this filter.
pub const DEFAULT_LOG_FILTER: &str = "info,aws_config::imds=error,aws_config::meta=error";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("no credentials: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the chain failed:\n  Environment: not set\n  Profile: not enabled\n")]
    struct Inner;

    #[test]
    fn untrusted_text_cannot_reorder_or_restyle_what_follows() {
        // A right-to-left override would show "denied" reversed after it;
        // an escape sequence would recolour the line.
        let shown = untrusted("upload \u{202E}deinied\u{2066} ok \x1b[2Jdone", 300);
        assert_eq!(shown, "upload \\u{202e}deinied\\u{2066} ok \\u{1b}[2Jdone");
        assert_eq!(untrusted("abcdef", 3), "abc…");
        // Other text outside ASCII is shown as it is.
        assert_eq!(untrusted("Größe 大小 العربية", 300), "Größe 大小 العربية");
    }

    #[test]
    fn an_error_chain_with_line_breaks_folds_to_one_line() {
        assert_eq!(
            error_line(&Outer(Inner)),
            "no credentials: the chain failed: Environment: not set; Profile: not enabled"
        );
    }

    #[test]
    fn a_remote_partys_text_cannot_drive_the_terminal_or_break_the_line() {
        let hostile = "bad day\u{1b}[2J\u{1b}[H\nconsent:      cfdev off\r\u{7}";
        let safe = untrusted(hostile, 300);
        assert!(!safe.chars().any(char::is_control), "{safe:?}");
        assert_eq!(
            safe,
            "bad day\\u{1b}[2J\\u{1b}[H; consent:      cfdev off\\r\\u{7}"
        );
        assert_eq!(untrusted(&"x".repeat(500), 300).chars().count(), 301);
        assert_eq!(untrusted("ok: fine", 300), "ok: fine");
    }
}
