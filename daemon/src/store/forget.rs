//! Forgetting a product (`telemetryctl forget`), in one transaction: its
//! stored events, batches, dropped counts and receipts are deleted, the
//! `telemetry_forget` marker (when the product is `on`) is recorded and
//! sealed as a final batch under the current ID, and a new ID salt is
//! recorded. The caller switches the in-memory ID after the commit, so the
//! marker's line and key carry the old ID and everything after the new one.

use super::seal::seal_in;
use super::{dedup, now_us, sql, Announce, Inner, Store, StoreError};
use crate::record::Record;
use rusqlite::{params, TransactionBehavior};
use std::collections::BTreeMap;

/// A stored marker's event field, as `record::render` writes it (no
/// spaces): found in a line, it names that line's event (inside a string
/// value its quotes would be escaped).
fn marker_in_line() -> String {
    format!("\"event\":\"{}\"", crate::cmd::forget::TELEMETRY_FORGET)
}

/// What forgetting did in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forgotten {
    /// Stored events deleted.
    pub purged: u64,
    /// The marker was recorded and sealed for upload.
    pub marker: bool,
    /// When the new salt was drawn (µs since the epoch): events made
    /// before are not stored any more.
    pub since_us: i64,
}

impl Store {
    /// Forget `product` (see the module docs); `salt` becomes its new ID
    /// salt. The marker is recorded as an off's final event is: for a
    /// product no manifest here describes, only if it ever sealed a batch
    /// under its current ID ([`Announce::IfKnown`]).
    pub async fn forget(
        &self,
        product: String,
        marker: Option<Record>,
        announce: Announce,
        salt: String,
    ) -> Result<Forgotten, StoreError> {
        self.run_on(move |inner| inner.forget(&product, marker, announce, &salt))
            .await
    }

    /// Every product's ID salt and when it was drawn (µs since the epoch;
    /// products never forgotten have none).
    pub async fn id_salts(&self) -> Result<BTreeMap<String, (String, i64)>, StoreError> {
        self.run_on(|inner| {
            let err = || sql("reading ID salts");
            let mut stmt = inner
                .conn
                .prepare("SELECT product, salt, since_us FROM id_salts")
                .map_err(err())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
                .map_err(err())?;
            rows.collect::<Result<_, _>>().map_err(err())
        })
        .await
    }
}

impl Inner {
    fn forget(
        &mut self,
        product: &str,
        marker: Option<Record>,
        announce: Announce,
        salt: &str,
    ) -> Result<Forgotten, StoreError> {
        // Always scrubbed: a forget that found no stored event still
        // deletes receipts, whose kept bodies hold every uploaded line.
        self.erase(
            |inner| {
                let out = inner.forget_rows(product, marker, announce, salt)?;
                inner.rewrite_file();
                Ok(out)
            },
            |_| true,
        )
    }

    /// Rebuild the database file (`VACUUM`). The product's uploaded events
    /// were deleted at upload, where only pages written anyway are
    /// overwritten: their lines may still sit in free cells and free
    /// pages, which a forget's own secure deletion never touches. Rewritten,
    /// the file holds live rows only (the WAL with the old pages is emptied
    /// next). Rare, and the file is mostly pending events (`max_store_bytes`,
    /// 64 MiB by default), plus the ids remembered for dedup and the kept
    /// receipt bodies (8 MiB at most): a fraction of a second to a few
    /// seconds, during which clients wait or spool. On failure (no room for
    /// the copy) the forget stands and says so in the log.
    fn rewrite_file(&mut self) {
        if let Err(e) = self.conn.execute_batch("VACUUM") {
            tracing::warn!(error = %e, "could not rewrite the event store after a forget; rows uploaded before it may stay readable in its free space until reused");
        }
    }

    fn forget_rows(
        &mut self,
        product: &str,
        marker: Option<Record>,
        announce: Announce,
        salt: &str,
    ) -> Result<Forgotten, StoreError> {
        let now = now_us(&self.opts.clock);
        let err = || sql("forgetting a product");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        // Everything, an unsent final `telemetry_off` batch included: the
        // user asks for all of it to be forgotten, and nothing of the old
        // ID but the marker may leave after this.
        // Looked at before the key counters are deleted below.
        let marker = match marker {
            Some(m) if announce.allows(&tx, product).map_err(err())? => Some(m),
            _ => None,
        };
        // An earlier forget's marker not sent yet (it was made offline) is
        // that user's request under that older ID: kept, or the vendor
        // would never hear of it. Final batches holding one, by id.
        let kept: Vec<i64> = {
            let mut stmt = tx
                .prepare(
                    "SELECT b.id FROM batches b WHERE b.product = ?1 AND b.final = 1 AND EXISTS (
                         SELECT 1 FROM events e WHERE e.product = ?1
                         AND e.seq BETWEEN b.first_seq AND b.last_seq AND instr(e.line, ?2) > 0)",
                )
                .map_err(err())?;
            let rows = stmt
                .query_map(params![product, marker_in_line()], |r| r.get(0))
                .map_err(err())?;
            rows.collect::<Result<_, _>>().map_err(err())?
        };
        // Whole numbers read from the store itself: safe to write inline.
        let kept_ids = kept
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let not_kept = format!(
            "product = ?1 AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id IN ({kept_ids})
                 AND events.seq BETWEEN b.first_seq AND b.last_seq)"
        );
        // Every id of the product, a kept marker's too (the daemon made it:
        // no client resends it): by the events still here (an older
        // build's rows have no product), then by product.
        dedup::forget_ids(&tx, "product = ?1", params![product]).map_err(err())?;
        dedup::forget_product_ids(&tx, product).map_err(err())?;
        let purged = tx
            .execute(
                &format!("DELETE FROM events WHERE {not_kept}"),
                params![product],
            )
            .map_err(err())? as u64;
        tx.execute(
            &format!("DELETE FROM batches WHERE product = ?1 AND id NOT IN ({kept_ids})"),
            params![product],
        )
        .map_err(err())?;
        tx.execute("DELETE FROM dropped WHERE product = ?1", params![product])
            .map_err(err())?;
        tx.execute(
            "DELETE FROM local_dropped WHERE product = ?1",
            params![product],
        )
        .map_err(err())?;
        tx.execute("DELETE FROM receipts WHERE product = ?1", params![product])
            .map_err(err())?;
        let mut marked = false;
        if let Some(rec) = marker {
            tx.execute(
                "INSERT INTO events (id, product, line, received_us, local_only)
                 VALUES (?1, ?2, ?3, ?4, 0)",
                params![&rec.id[..], product, rec.line, now],
            )
            .map_err(err())?;
            marked = seal_in(&tx, &self.opts, product, now, true)?.is_some();
        }
        // The new ID's keys start from a number of their own (the new
        // salt goes into it): the marker's key (old ID) and the next
        // batch's must not be adjacent.
        tx.execute(
            "DELETE FROM key_counters WHERE product = ?1",
            params![product],
        )
        .map_err(err())?;
        tx.execute(
            "INSERT INTO id_salts (product, salt, since_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (product) DO UPDATE SET salt = excluded.salt, since_us = excluded.since_us",
            params![product, salt, now],
        )
        .map_err(err())?;
        tx.commit().map_err(err())?;
        // Rare and small: recount rather than track every case by hand.
        self.load_counters()?;
        Ok(Forgotten {
            purged,
            marker: marked,
            since_us: now,
        })
    }
}
