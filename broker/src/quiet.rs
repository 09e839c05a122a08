//! Logging what a flood repeats: the first of each kind from a network,
//! then at most one a minute, saying how many like it were not logged.
//!
//! Why: every refusal and every connection closed at a cap is news to an
//! operator once, and noise the ten-thousandth time. A caller who can make
//! the broker write a line per request for free (a wrong content type, a
//! connection over a cap) could otherwise fill the disk or push journald
//! into dropping the lines that matter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of line from one network is logged at most.
pub const QUIET_FOR: Duration = Duration::from_secs(60);

/// Kinds and networks remembered at most; past it, those not logged for
/// [`QUIET_FOR`] are forgotten, and if none is, a new one is not logged
/// (a flood from that many networks is itself in the log already).
const MAX_KEYS: usize = 4096;

/// The state of one (network, kind).
struct Seen {
    logged: Instant,
    hidden: u64,
}

/// See the module.
#[derive(Default)]
pub struct Quiet {
    seen: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    keys: HashMap<(String, String), Seen>,
    /// When the full table was last swept for old keys: at most once a
    /// second, or a flood from many networks would sweep it per line.
    swept: Option<Instant>,
}

impl Quiet {
    /// Whether to log one more line of `kind` from `network` at `now`;
    /// when so, how many like it since the last one logged were not.
    pub fn admit(&self, network: &str, kind: &str, now: Instant) -> Option<u64> {
        let mut table = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Table { keys: seen, swept } = &mut *table;
        let key = (network.to_string(), kind.to_string());
        if let Some(s) = seen.get_mut(&key) {
            if now.saturating_duration_since(s.logged) < QUIET_FOR {
                s.hidden += 1;
                return None;
            }
            let hidden = s.hidden;
            *s = Seen {
                logged: now,
                hidden: 0,
            };
            return Some(hidden);
        }
        if seen.len() >= MAX_KEYS {
            if swept.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
                return None;
            }
            *swept = Some(now);
            seen.retain(|_, s| now.saturating_duration_since(s.logged) < QUIET_FOR);
            if seen.len() >= MAX_KEYS {
                return None;
            }
        }
        seen.insert(
            key,
            Seen {
                logged: now,
                hidden: 0,
            },
        );
        Some(0)
    }
}

/// " (N more like it ... not logged)" for a count from [`Quiet::admit`].
pub fn hidden_note(hidden: u64) -> String {
    if hidden == 0 {
        String::new()
    } else {
        format!(
            " ({hidden} more like it from this network since the last such line were not logged)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_once_a_minute_with_its_count() {
        let q = Quiet::default();
        let t = Instant::now();
        assert_eq!(q.admit("198.51.100.0/24", "415", t), Some(0));
        for _ in 0..999 {
            assert_eq!(q.admit("198.51.100.0/24", "415", t), None);
        }
        // Another kind, or another network, is news.
        assert_eq!(q.admit("198.51.100.0/24", "429", t), Some(0));
        assert_eq!(q.admit("203.0.113.0/24", "415", t), Some(0));
        assert_eq!(q.admit("198.51.100.0/24", "415", t + QUIET_FOR), Some(999));
        assert_eq!(q.admit("198.51.100.0/24", "415", t + QUIET_FOR), None);
        assert_eq!(hidden_note(0), "");
        assert!(hidden_note(999).contains("999 more"));
    }

    #[test]
    fn its_memory_is_bounded() {
        let q = Quiet::default();
        let t = Instant::now();
        for n in 0..MAX_KEYS {
            assert_eq!(q.admit(&n.to_string(), "x", t), Some(0));
        }
        assert_eq!(q.admit("new", "x", t), None, "full: not logged");
        assert_eq!(q.seen.lock().unwrap().keys.len(), MAX_KEYS);
        // Once the others are a minute old they make room.
        assert_eq!(q.admit("new", "x", t + QUIET_FOR), Some(0));
        assert_eq!(q.seen.lock().unwrap().keys.len(), 1);
    }
}
