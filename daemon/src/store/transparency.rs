//! What `telemetryctl show` and `purge` need: the stored lines exactly as
//! they will be uploaded, and deleting them.

use super::{dedup, sql, Inner, StoreError};
use crate::consent::Permit;
use rusqlite::params;
use telemetry_proto::{EventState, EventsPage, ShownEvent};

/// Most line bytes in one page, well under the frame limit.
const PAGE_BYTES: usize = 48 * 1024;
/// Most events in one page.
const PAGE_EVENTS: i64 = 1000;

impl Inner {
    pub(super) fn show(
        &mut self,
        product: Option<&str>,
        after_seq: i64,
    ) -> Result<EventsPage, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.seq, e.line, e.local_only, b.key, e.product, COALESCE(b.final, 0),
                        b.id, b.last_seq = e.seq
                 FROM events e LEFT JOIN batches b ON e.local_only = 0
                      AND b.product = e.product AND e.seq BETWEEN b.first_seq AND b.last_seq
                 WHERE e.seq > ?1 AND (?2 IS NULL OR e.product = ?2)
                 ORDER BY e.seq LIMIT ?3",
            )
            .map_err(sql("show"))?;
        let mut rows = stmt
            .query(params![after_seq, product, PAGE_EVENTS])
            .map_err(sql("show"))?;
        let mut page = EventsPage::default();
        let mut bytes = 0;
        let mut read = 0;
        while let Some(row) = rows.next().map_err(sql("show"))? {
            read += 1;
            let line: String = row.get(1).map_err(sql("show"))?;
            let local: bool = row.get(2).map_err(sql("show"))?;
            let key: Option<String> = row.get(3).map_err(sql("show"))?;
            let product: String = row.get(4).map_err(sql("show"))?;
            let is_final: bool = row.get(5).map_err(sql("show"))?;
            let seq = row.get(0).map_err(sql("show"))?;
            let batch: Option<i64> = row.get(6).map_err(sql("show"))?;
            let last_of_batch: Option<bool> = row.get(7).map_err(sql("show"))?;
            // A sealed batch also carries the `telemetry_dropped` line its
            // seal wrote (no event row holds it): shown after its last
            // event, as uploaded, with that event's seq.
            let counters = match (batch, last_of_batch) {
                (Some(id), Some(true)) => self.batch_counter_lines(id)?,
                _ => Vec::new(),
            };
            // Encoded size: the line, the key, and a little framing; the
            // row's counter lines go on the same page.
            let framed = |line: &str| line.len() + key.as_ref().map_or(0, String::len) + 32;
            let size = framed(&line) + counters.iter().map(|l| framed(l)).sum::<usize>();
            if !page.events.is_empty() && bytes + size > PAGE_BYTES {
                page.next_after_seq = page.events.last().map(|e| e.seq);
                return Ok(page);
            }
            bytes += size;
            let permit = (self.opts.permit)(&product);
            let state = match (local, &key, permit) {
                (true, _, _) => EventState::LocalOnly,
                (false, Some(_), Permit::All) => EventState::Sealed,
                (false, Some(_), Permit::FinalOnly) if is_final => EventState::Sealed,
                (false, None, Permit::All) => EventState::Pending,
                (false, _, _) => EventState::Withheld,
            };
            page.events.push(ShownEvent {
                seq,
                state,
                batch_key: key.clone(),
                line,
                counter: false,
            });
            for line in counters {
                page.events.push(ShownEvent {
                    seq,
                    state,
                    batch_key: key.clone(),
                    line,
                    counter: true,
                });
            }
        }
        if read == PAGE_EVENTS {
            page.next_after_seq = page.events.last().map(|e| e.seq);
        }
        Ok(page)
    }

    /// The `telemetry_dropped` lines batch `id`'s body carries.
    fn batch_counter_lines(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let body: Vec<u8> = self
            .conn
            .query_row("SELECT body FROM batches WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .map_err(sql("show"))?;
        Ok(super::bound::counter_lines(&body)
            .into_iter()
            .map(|(line, _)| line)
            .collect())
    }

    pub(super) fn purge(&mut self, product: Option<&str>) -> Result<u64, StoreError> {
        self.erase(|inner| inner.purge_rows(product), |n| *n > 0)
    }

    fn purge_rows(&mut self, product: Option<&str>) -> Result<u64, StoreError> {
        let tx = self.conn.transaction().map_err(sql("purge"))?;
        dedup::forget_ids(&tx, "?1 IS NULL OR product = ?1", params![product])
            .map_err(sql("purge"))?;
        let n = tx
            .execute(
                "DELETE FROM events WHERE ?1 IS NULL OR product = ?1",
                params![product],
            )
            .map_err(sql("purge"))?;
        tx.execute(
            "DELETE FROM batches WHERE ?1 IS NULL OR product = ?1",
            params![product],
        )
        .map_err(sql("purge"))?;
        // Nothing about purged data, not even a count, goes out later (or
        // stays: the local-only drops' count goes with them).
        for table in ["dropped", "local_dropped"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE ?1 IS NULL OR product = ?1"),
                params![product],
            )
            .map_err(sql("purge"))?;
        }
        tx.commit().map_err(sql("purge"))?;
        self.load_counters()?;
        Ok(n as u64)
    }
}
