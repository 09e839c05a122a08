//! Deduplication by generations of seen ids (migration 0009).
//!
//! A client that resends an event (after a timeout, say) must not get it
//! stored twice. Each accepted event's id is written once, at acceptance,
//! into the current generation (`seen_ids_a` or `seen_ids_b`); an id in
//! either generation is a duplicate. When the current generation is
//! [`DEDUP_WINDOW`] old it becomes the previous one, and the previous one
//! is emptied to become current: a whole-table delete, so no per-id age
//! is kept or indexed. An id is thus remembered for at least the window
//! after its event was accepted and at most twice that, whatever became
//! of the event (uploaded, purged or dropped).
//!
//! This replaced a copy of every uploaded id into an age-indexed table at
//! upload time, plus a UNIQUE index on the events table: per event, two
//! b-tree inserts and three deletes fewer over its life.

use super::{sql, StoreError, DEDUP_WINDOW};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

/// How far behind the generation's start the clock may be before the
/// start is taken back to now: a clock once set far ahead, then
/// corrected, would otherwise stop rotation (and let the current
/// generation grow) until it caught up again.
const CLOCK_SLACK_US: i64 = 24 * 3600 * 1_000_000;

/// In `conn`'s open transaction, before the events matching
/// `events_where` (with `params`) are deleted at the user's request
/// (purge, forget, turning a product off): forget their ids too. An id is
/// a UUIDv7 that carries its event's time; what the user deleted must
/// leave no timeline behind. (Events dropped for room or retired by the
/// vendor keep their ids, so a resend is still a duplicate.)
pub(super) fn forget_ids(
    conn: &Connection,
    events_where: &str,
    params: &[&dyn ToSql],
) -> rusqlite::Result<()> {
    for table in ["seen_ids_a", "seen_ids_b"] {
        conn.execute(
            &format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM events WHERE {events_where})"
            ),
            params,
        )?;
    }
    Ok(())
}

/// In `conn`'s open transaction, when `product` is forgotten: forget the
/// ids of all its events, the uploaded ones too (see [`forget_ids`]; a
/// forget leaves nothing of the old ID's use behind, and the uploaded
/// objects hold the same ids). No resend of them can be stored after it:
/// events made before the new ID are refused. A scan, not an index: a
/// forget is rare, and an index would cost every event a second insert.
pub(super) fn forget_product_ids(conn: &Connection, product: &str) -> rusqlite::Result<()> {
    for table in ["seen_ids_a", "seen_ids_b"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE product = ?1"),
            params![product],
        )?;
    }
    Ok(())
}

/// Which table holds the current generation, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeenIds {
    current_is_a: bool,
    since_us: i64,
}

impl SeenIds {
    /// The generation state, as the last commit left it.
    pub(super) fn load(conn: &Connection) -> Result<SeenIds, StoreError> {
        let row: Option<(String, i64)> = conn
            .query_row(
                "SELECT current, since_us FROM seen_generation WHERE one = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("reading the dedup generation"))?;
        // Migration 0009 writes the row and nothing deletes it.
        let Some((current, since_us)) = row else {
            return Err(StoreError::Open {
                path: conn.path().unwrap_or_default().into(),
                source: std::sync::Arc::new(rusqlite::Error::QueryReturnedNoRows),
            });
        };
        Ok(SeenIds {
            current_is_a: current != "b",
            since_us,
        })
    }

    /// Records id `?1` of product `?2` in the current generation unless
    /// either generation has the id: one row changed means it is new.
    pub(super) fn record_sql(&self) -> &'static str {
        if self.current_is_a {
            "INSERT OR IGNORE INTO seen_ids_a (id, product) SELECT ?1, ?2
             WHERE NOT EXISTS (SELECT 1 FROM seen_ids_b WHERE id = ?1)"
        } else {
            "INSERT OR IGNORE INTO seen_ids_b (id, product) SELECT ?1, ?2
             WHERE NOT EXISTS (SELECT 1 FROM seen_ids_a WHERE id = ?1)"
        }
    }

    /// In `conn`'s open transaction: when the current generation is a
    /// window old at `now`, empty the previous one and make it current.
    /// Returns the state to keep once the transaction commits.
    pub(super) fn rotated(&self, conn: &Connection, now: i64) -> Result<SeenIds, StoreError> {
        let err = || sql("starting a dedup generation");
        if self.since_us.saturating_sub(now) > CLOCK_SLACK_US {
            conn.execute(
                "UPDATE seen_generation SET since_us = ?1 WHERE one = 1",
                params![now],
            )
            .map_err(err())?;
            return Ok(SeenIds {
                since_us: now,
                ..*self
            });
        }
        if now.saturating_sub(self.since_us) < DEDUP_WINDOW.as_micros() as i64 {
            return Ok(*self);
        }
        let (previous, name) = if self.current_is_a {
            ("seen_ids_b", "b")
        } else {
            ("seen_ids_a", "a")
        };
        // No WHERE: SQLite drops the table's pages instead of deleting
        // row by row.
        conn.execute(&format!("DELETE FROM {previous}"), [])
            .map_err(err())?;
        conn.execute(
            "UPDATE seen_generation SET current = ?1, since_us = ?2 WHERE one = 1",
            params![name, now],
        )
        .map_err(err())?;
        Ok(SeenIds {
            current_is_a: !self.current_is_a,
            since_us: now,
        })
    }
}
