//! Keeping the store under its size limit.
//!
//! When an insert would take the stored NDJSON past `max_store_bytes`, the
//! oldest stored events make room, in the same transaction: first unsealed
//! events, then (during a long outage, when sealed batches are what fills
//! the store) the oldest sealed batches other than a final `telemetry_off`.
//! Events of the insert itself are never the ones dropped: if nothing older
//! can go, the insert is refused with a clear error instead.
//!
//! Every uploadable event dropped is counted per product in `dropped`; the
//! count is shown by `status` and sent as a `telemetry_dropped` line with
//! the product's next batch. Local-only events are dropped too but not
//! counted there: nothing about them may leave the machine.

use super::{sql, StoreError, SEALED};
use rusqlite::{params, Transaction};
use std::collections::BTreeMap;

/// What one `make_room` deleted.
#[derive(Debug, Default)]
pub(super) struct Freed {
    /// Unsealed events, per (product, local-only): (events, bytes).
    pub unsealed: BTreeMap<(String, bool), (u64, u64)>,
    /// Sealed batches: (events, raw bytes) each.
    pub batches: Vec<(u64, u64)>,
}

/// Delete the oldest events until `excess` bytes are freed, never touching
/// rows with `seq > newest_old` (the insert being made room for).
pub(super) fn make_room(
    tx: &Transaction<'_>,
    excess: u64,
    newest_old: i64,
    limit: u64,
    now: i64,
) -> Result<Freed, StoreError> {
    let err = || sql("making room");
    let mut freed = Freed::default();
    let mut total = 0u64;
    let mut cutoff = None;
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT seq, product, LENGTH(CAST(line AS BLOB)) + 1, local_only FROM events
                     WHERE seq <= ?1 AND NOT {SEALED} ORDER BY seq"
            ))
            .map_err(err())?;
        let mut rows = stmt.query(params![newest_old]).map_err(err())?;
        while total < excess {
            let Some(row) = rows.next().map_err(err())? else {
                break;
            };
            let seq: i64 = row.get(0).map_err(err())?;
            let product: String = row.get(1).map_err(err())?;
            let bytes: i64 = row.get(2).map_err(err())?;
            let local: bool = row.get(3).map_err(err())?;
            let e = freed.unsealed.entry((product, local)).or_default();
            e.0 += 1;
            e.1 += bytes as u64;
            total += bytes as u64;
            cutoff = Some(seq);
        }
    }
    if let Some(cutoff) = cutoff {
        tx.execute(
            &format!("DELETE FROM events WHERE seq <= ?1 AND NOT {SEALED}"),
            params![cutoff],
        )
        .map_err(err())?;
    }
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for ((product, local), (events, _)) in &freed.unsealed {
        if !local {
            *counted.entry(product.clone()).or_default() += events;
        }
    }
    while total < excess {
        type Oldest = (i64, String, i64, i64, i64, i64);
        let oldest: Option<Oldest> = tx
            .query_row(
                "SELECT id, product, events, raw_bytes, first_seq, last_seq
                 FROM batches WHERE final = 0 ORDER BY id LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(err())?;
        let Some((id, product, events, bytes, first, last)) = oldest else {
            return Err(StoreError::Full { limit });
        };
        tx.execute(
            "DELETE FROM events WHERE product = ?1 AND local_only = 0 AND seq BETWEEN ?2 AND ?3",
            params![product, first, last],
        )
        .map_err(err())?;
        tx.execute("DELETE FROM batches WHERE id = ?1", params![id])
            .map_err(err())?;
        freed.batches.push((events as u64, bytes as u64));
        *counted.entry(product).or_default() += events as u64;
        total += bytes as u64;
    }
    for (product, events) in counted {
        tx.execute(
            "INSERT INTO dropped (product, events, since_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (product) DO UPDATE SET events = events + excluded.events",
            params![product, events as i64, now],
        )
        .map_err(err())?;
    }
    Ok(freed)
}
