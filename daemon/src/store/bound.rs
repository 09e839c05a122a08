//! Keeping the store under its size limit.
//!
//! When an insert would take the stored NDJSON past `max_store_bytes`, the
//! oldest events not yet sealed are deleted in the same transaction until
//! it fits (sealed batches are about to leave and stay). Every drop is
//! counted per product in `dropped`; the count is shown by `status` and
//! sent as a `telemetry_dropped` line with the product's next batch.

use super::{sql, StoreError};
use rusqlite::{params, Transaction};
use std::collections::BTreeMap;

/// What one `make_room` deleted, per product: (events, bytes, local-only?).
pub(super) type Freed = BTreeMap<(String, bool), (u64, u64)>;

/// Delete the oldest unsealed events until `excess` bytes are freed.
pub(super) fn make_room(tx: &Transaction<'_>, excess: u64, now: i64) -> Result<Freed, StoreError> {
    let mut freed: Freed = BTreeMap::new();
    let mut total = 0u64;
    let mut cutoff = None;
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, product, LENGTH(line) + 1, local_only FROM events
                 WHERE batch_id IS NULL ORDER BY seq",
            )
            .map_err(sql("making room"))?;
        let mut rows = stmt.query([]).map_err(sql("making room"))?;
        while total < excess {
            let Some(row) = rows.next().map_err(sql("making room"))? else {
                break;
            };
            let seq: i64 = row.get(0).map_err(sql("making room"))?;
            let product: String = row.get(1).map_err(sql("making room"))?;
            let bytes: i64 = row.get(2).map_err(sql("making room"))?;
            let local: bool = row.get(3).map_err(sql("making room"))?;
            let e = freed.entry((product, local)).or_default();
            e.0 += 1;
            e.1 += bytes as u64;
            total += bytes as u64;
            cutoff = Some(seq);
        }
    }
    let Some(cutoff) = cutoff else {
        return Ok(freed);
    };
    tx.execute(
        "DELETE FROM events WHERE batch_id IS NULL AND seq <= ?1",
        params![cutoff],
    )
    .map_err(sql("making room"))?;
    let mut per_product: BTreeMap<&str, u64> = BTreeMap::new();
    for ((product, _), (events, _)) in &freed {
        *per_product.entry(product).or_default() += events;
    }
    for (product, events) in per_product {
        tx.execute(
            "INSERT INTO dropped (product, events, since_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (product) DO UPDATE SET events = events + excluded.events",
            params![product, events as i64, now],
        )
        .map_err(sql("making room"))?;
    }
    Ok(freed)
}
