//! Upload receipts: a batch leaves the store in the same transaction that
//! records what was sent (key, destination, SHA-256 of the exact bytes,
//! size, events, time), so `telemetryctl receipts` lists every object this
//! machine wrote, and, while its body is kept, the lines it held.
//!
//! Bounded two ways: at most [`MAX_RECEIPTS`] rows (the oldest go), and
//! bodies only for the newest receipts within [`MAX_RECEIPT_BODY_BYTES`]
//! in total (older ones keep their metadata).

use super::{now_us, sql, Inner, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use telemetry_proto::{Receipt, ReceiptsPage};

/// Most receipts kept.
pub const MAX_RECEIPTS: u64 = 1000;

/// Most bytes of compressed batch bodies kept with receipts.
pub const MAX_RECEIPT_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// Most receipts in one page (each is a few hundred bytes).
const PAGE_RECEIPTS: i64 = 100;

/// Most line bytes in one page, well under the frame limit.
const PAGE_BYTES: usize = 48 * 1024;

/// What the uploader knows about a delivered batch that the store does not.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    /// Where it went, as status names it.
    pub destination: String,
    /// SHA-256 of the body, lowercase hex.
    pub sha256: String,
    /// The body's size.
    pub bytes: u64,
    /// The destination had it already (a replay).
    pub already_there: bool,
    /// The body, to keep for listing its lines.
    pub body: Vec<u8>,
    /// The key the destination stored it under, when not the batch's own
    /// (a broker's keys end in the body's hash).
    pub key: Option<String>,
}

impl Store {
    /// Forget a batch and its events (it is safely in the destination),
    /// and record its receipt, in one transaction.
    pub async fn complete(&self, id: i64, receipt: NewReceipt) -> Result<(), StoreError> {
        self.run_on(move |inner| inner.complete(id, receipt)).await
    }

    /// A page of receipts after `after`, oldest first.
    pub async fn receipts(&self, after: u64) -> Result<ReceiptsPage, StoreError> {
        self.run_on(move |inner| inner.receipts(after)).await
    }

    /// The receipt for `key` (the newest, if a replay made two) and its
    /// lines from index `from`, when its body is kept. `None`: no receipt.
    pub async fn receipt_lines(
        &self,
        key: String,
        from: u64,
    ) -> Result<Option<ReceiptsPage>, StoreError> {
        self.run_on(move |inner| inner.receipt_lines(&key, from))
            .await
    }

    /// The key of the newest receipt of `product` whose key holds `part`
    /// (a machine ID's first characters), whichever upload cycle made it.
    pub async fn receipt_key_with(
        &self,
        product: String,
        part: String,
    ) -> Result<Option<String>, StoreError> {
        self.run_on(move |inner| {
            inner
                .conn
                .query_row(
                    "SELECT key FROM receipts WHERE product = ?1 AND instr(key, ?2) > 0
                     ORDER BY seq DESC LIMIT 1",
                    params![product, part],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("finding an upload receipt"))
        })
        .await
    }
}

fn receipt(r: &rusqlite::Row<'_>) -> rusqlite::Result<Receipt> {
    Ok(Receipt {
        seq: r.get::<_, i64>(0)? as u64,
        destination: r.get(1)?,
        key: r.get(2)?,
        sha256: r.get(3)?,
        bytes: r.get::<_, i64>(4)? as u64,
        events: r.get::<_, i64>(5)? as u64,
        uploaded_us: r.get(6)?,
        already_there: r.get(7)?,
        body_kept: r.get(8)?,
    })
}

const COLUMNS: &str =
    "seq, destination, key, sha256, bytes, events, uploaded_us, already_there, body IS NOT NULL";

impl Inner {
    fn complete(&mut self, id: i64, receipt: NewReceipt) -> Result<(), StoreError> {
        self.handed_out.retain(|_, b| *b != id);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("complete"))?;
        type Row = (i64, i64, String, String, i64, i64);
        let row: Option<Row> = tx
            .query_row(
                "SELECT events, raw_bytes, product, key, first_seq, last_seq FROM batches WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(sql("complete"))?;
        let Some((events, bytes, product, key, first, last)) = row else {
            return Ok(());
        };
        let now = now_us(&self.opts.clock);
        // The batch's events: its product's uploadable ones in its range
        // (their ids stay in the seen generations for deduplication).
        tx.execute(
            "DELETE FROM events
             WHERE product = ?1 AND batch_id IS NULL AND local_only = 0 AND seq BETWEEN ?2 AND ?3",
            params![product, first, last],
        )
        .map_err(sql("complete"))?;
        tx.execute("DELETE FROM batches WHERE id = ?1", params![id])
            .map_err(sql("complete"))?;
        let err = sql("recording an upload receipt");
        let body = (receipt.body.len() as u64 <= MAX_RECEIPT_BODY_BYTES).then_some(receipt.body);
        tx.execute(
            "INSERT INTO receipts (product, destination, key, sha256, bytes, events, uploaded_us, already_there, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                product,
                receipt.destination,
                receipt.key.unwrap_or(key),
                receipt.sha256,
                receipt.bytes as i64,
                events,
                now,
                receipt.already_there,
                body
            ],
        )
        .map_err(err)?;
        // Keep the newest MAX_RECEIPTS rows, and bodies only of the newest
        // ones that fit MAX_RECEIPT_BODY_BYTES together.
        // By rank, not by number: forget deletes rows in the middle.
        tx.execute(
            "DELETE FROM receipts WHERE seq IN (
                 SELECT seq FROM receipts ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
            params![MAX_RECEIPTS as i64],
        )
        .map_err(sql("bounding upload receipts"))?;
        tx.execute(
            "UPDATE receipts SET body = NULL WHERE body IS NOT NULL AND seq IN (
                 SELECT seq FROM (
                     SELECT seq, SUM(length(body)) OVER (ORDER BY seq DESC) AS kept
                     FROM receipts WHERE body IS NOT NULL)
                 WHERE kept > ?1)",
            params![MAX_RECEIPT_BODY_BYTES as i64],
        )
        .map_err(sql("bounding upload receipts"))?;
        tx.commit().map_err(sql("complete"))?;
        self.sealed_batches = self.sealed_batches.saturating_sub(1);
        self.sealed_events = self.sealed_events.saturating_sub(events as u64);
        self.sealed_bytes = self.sealed_bytes.saturating_sub(bytes as u64);
        Ok(())
    }

    fn receipts(&mut self, after: u64) -> Result<ReceiptsPage, StoreError> {
        let err = || sql("listing upload receipts");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM receipts WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(err())?;
        let receipts = stmt
            .query_map(params![after as i64, PAGE_RECEIPTS + 1], receipt)
            .map_err(err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err())?;
        let mut page = ReceiptsPage {
            receipts,
            max_receipts: MAX_RECEIPTS,
            ..ReceiptsPage::default()
        };
        if page.receipts.len() as i64 > PAGE_RECEIPTS {
            page.receipts.truncate(PAGE_RECEIPTS as usize);
            page.next_after = page.receipts.last().map(|r| r.seq);
        }
        Ok(page)
    }

    fn receipt_lines(&mut self, key: &str, from: u64) -> Result<Option<ReceiptsPage>, StoreError> {
        let err = || sql("reading an upload receipt");
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS}, body FROM receipts WHERE key = ?1 ORDER BY seq DESC LIMIT 1"
                ),
                params![key],
                |r| Ok((receipt(r)?, r.get::<_, Option<Vec<u8>>>(9)?)),
            )
            .optional()
            .map_err(err())?;
        let Some((receipt, body)) = row else {
            return Ok(None);
        };
        let mut page = ReceiptsPage {
            receipts: vec![receipt],
            max_receipts: MAX_RECEIPTS,
            ..ReceiptsPage::default()
        };
        let Some(body) = body else {
            return Ok(Some(page));
        };
        let text = zstd::decode_all(&body[..]).map_err(|e| StoreError::Decompress {
            key: key.to_string(),
            source: std::sync::Arc::new(e),
        })?;
        let text = String::from_utf8_lossy(&text);
        let mut bytes = 0;
        for (i, line) in text.lines().enumerate().skip(from as usize) {
            if !page.lines.is_empty() && bytes + line.len() > PAGE_BYTES {
                page.next_after = Some(i as u64);
                break;
            }
            bytes += line.len();
            page.lines.push(line.to_string());
        }
        Ok(Some(page))
    }
}
