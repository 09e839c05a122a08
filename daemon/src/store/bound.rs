//! Keeping the store under its size limit.
//!
//! When an insert would take the stored NDJSON past `max_store_bytes`, the
//! oldest stored events make room, in the same transaction: first unsealed
//! events, then (during a long outage, when sealed batches are what fills
//! the store) the oldest sealed batches other than a final `telemetry_off`
//! and the batch each destination's upload may be carrying.
//! Events of the insert itself are never the ones dropped: if nothing older
//! can go, the insert is refused with a clear error instead.
//!
//! Every uploadable event dropped is counted per product in `dropped`; the
//! count is shown by `status` and sent as a `telemetry_dropped` line with
//! the product's next batch. Local-only events are dropped too but not
//! counted there: nothing about them may leave the machine.

use super::{sql, StoreError};
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
/// rows with `seq > newest_old` (the insert being made room for) or the
/// batches in `handed_out` (an upload may be carrying them).
/// `products` names every product that may have unsealed or local rows.
pub(super) fn make_room(
    tx: &Transaction<'_>,
    products: &[String],
    handed_out: &[i64],
    excess: u64,
    newest_old: i64,
    limit: u64,
    now: i64,
) -> Result<Freed, StoreError> {
    let err = || sql("making room");
    let mut freed = Freed::default();
    let mut total = 0u64;
    // The unsealed rows of each product come in two runs, each found by
    // an index without walking the sealed rows before them (a full store
    // is mostly sealed batches waiting for their upload): its uploadable
    // rows above its highest sealed seq, and its local-only rows. No run
    // needs to give more than `excess` bytes, so each is read only that
    // far; the oldest rows of all runs go first.
    let mut candidates: Vec<(i64, usize, u64)> = Vec::new();
    let mut runs: Vec<(&str, bool, i64)> = Vec::new();
    for product in products {
        let sealed_to: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(last_seq), 0) FROM batches WHERE product = ?1",
                params![product],
                |r| r.get(0),
            )
            .map_err(err())?;
        for local in [false, true] {
            let run = runs.len();
            runs.push((product, local, sealed_to));
            let mut stmt = tx
                .prepare_cached(if local {
                    "SELECT seq, LENGTH(CAST(line AS BLOB)) + 1 FROM events
                     WHERE product = ?1 AND local_only = 1 AND seq > ?2 AND seq <= ?3 ORDER BY seq"
                } else {
                    "SELECT seq, LENGTH(CAST(line AS BLOB)) + 1 FROM events
                     WHERE product = ?1 AND batch_id IS NULL AND local_only = 0
                       AND seq > ?2 AND seq <= ?3 ORDER BY seq"
                })
                .map_err(err())?;
            let after = if local { 0 } else { sealed_to };
            let mut rows = stmt
                .query(params![product, after, newest_old])
                .map_err(err())?;
            let mut got = 0u64;
            while got < excess {
                let Some(row) = rows.next().map_err(err())? else {
                    break;
                };
                let bytes = row.get::<_, i64>(1).map_err(err())? as u64;
                candidates.push((row.get(0).map_err(err())?, run, bytes));
                got += bytes;
            }
        }
    }
    candidates.sort_unstable_by_key(|c| c.0);
    let mut cutoffs: BTreeMap<usize, i64> = BTreeMap::new();
    for (seq, run, bytes) in candidates {
        if total >= excess {
            break;
        }
        let (product, local, _) = runs[run];
        let e = freed
            .unsealed
            .entry((product.to_string(), local))
            .or_default();
        e.0 += 1;
        e.1 += bytes;
        total += bytes;
        cutoffs.insert(run, seq);
    }
    for (run, cutoff) in cutoffs {
        let (product, local, sealed_to) = runs[run];
        if local {
            tx.execute(
                "DELETE FROM events WHERE product = ?1 AND local_only = 1 AND seq <= ?2",
                params![product, cutoff],
            )
        } else {
            tx.execute(
                "DELETE FROM events WHERE product = ?1 AND batch_id IS NULL AND local_only = 0
                   AND seq > ?2 AND seq <= ?3",
                params![product, sealed_to, cutoff],
            )
        }
        .map_err(err())?;
    }
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for ((product, local), (events, _)) in &freed.unsealed {
        if *local {
            // Counted for `status` only, never upstream.
            tx.execute(
                "INSERT INTO local_dropped (product, events) VALUES (?1, ?2)
                 ON CONFLICT (product) DO UPDATE SET events = events + excluded.events",
                params![product, *events as i64],
            )
            .map_err(err())?;
        } else {
            *counted.entry(product.clone()).or_default() += events;
        }
    }
    let mut after = 0i64;
    while total < excess {
        type Oldest = (i64, String, i64, i64, i64, i64, Vec<u8>);
        let oldest: Option<Oldest> = tx
            .query_row(
                "SELECT id, product, events, raw_bytes, first_seq, last_seq, body
                 FROM batches WHERE final = 0 AND id > ?1 ORDER BY id LIMIT 1",
                params![after],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(err())?;
        let Some((id, product, events, bytes, first, last, body)) = oldest else {
            return Err(StoreError::Full { limit });
        };
        after = id;
        if handed_out.contains(&id) {
            continue;
        }
        tx.execute(
            "DELETE FROM events WHERE product = ?1 AND local_only = 0 AND seq BETWEEN ?2 AND ?3",
            params![product, first, last],
        )
        .map_err(err())?;
        tx.execute("DELETE FROM batches WHERE id = ?1", params![id])
            .map_err(err())?;
        freed.batches.push((events as u64, bytes as u64));
        // The count of earlier drops it carried is given back, not lost.
        let carried = carried_drops(&body).max(0) as u64;
        *counted.entry(product).or_default() += events as u64 + carried;
        total += bytes as u64;
    }
    for (product, events) in counted {
        add_dropped(tx, &product, events as i64, now).map_err(err())?;
    }
    Ok(freed)
}

/// Count `events` of `product` as dropped: the product's next batch
/// carries the count (a `telemetry_dropped` line) to the maintainers.
pub(super) fn add_dropped(
    tx: &Transaction<'_>,
    product: &str,
    events: i64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO dropped (product, events, since_us) VALUES (?1, ?2, ?3)
         ON CONFLICT (product) DO UPDATE SET events = events + excluded.events",
        params![product, events, now],
    )
    .map(|_| ())
}

/// The drop count a sealed batch's body carries in its `telemetry_dropped`
/// line (see `seal_in`), 0 if none or unreadable.
pub(super) fn carried_drops(compressed: &[u8]) -> i64 {
    counter_lines(compressed)
        .iter()
        .filter_map(|(_, v)| v["data"]["count"].as_i64())
        .fold(0i64, i64::saturating_add)
}

/// The `telemetry_dropped` lines a sealed batch's body carries (see
/// `seal_in`), as uploaded and parsed; none if unreadable.
pub(super) fn counter_lines(compressed: &[u8]) -> Vec<(String, serde_json::Value)> {
    let Ok(body) = zstd::stream::decode_all(compressed) else {
        return Vec::new();
    };
    let name = format!("\"{}\"", telemetry_sink::manifest::TELEMETRY_DROPPED);
    body.split(|b| *b == b'\n')
        // Parsed only where the name appears: a batch holds up to
        // thousands of lines, and the store thread reads it.
        .filter(|line| line.windows(name.len()).any(|w| w == name.as_bytes()))
        .filter_map(|line| {
            let v = serde_json::from_slice::<serde_json::Value>(line).ok()?;
            (v["event"] == telemetry_sink::manifest::TELEMETRY_DROPPED)
                .then(|| (String::from_utf8_lossy(line).into_owned(), v))
        })
        .collect()
}
