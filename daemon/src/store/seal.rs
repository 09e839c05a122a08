//! Sealing: pending events of a product become one batch (its body, key
//! and destination fixed in the same transaction), and the counter line
//! for events dropped to stay under the size limit.

use super::*;

impl Inner {
    pub(super) fn oldest_unsealed(&self, product: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT received_us FROM events
                 WHERE product = ?1 AND batch_id IS NULL AND local_only = 0
                   AND seq > (SELECT COALESCE(MAX(last_seq), 0) FROM batches WHERE product = ?1)
                 ORDER BY seq LIMIT 1",
            )
            .and_then(|mut s| s.query_row(params![product], |r| r.get(0)).optional())
            .map_err(sql("reading oldest event"))
    }

    pub(super) fn seal(&mut self, force: bool) -> Result<usize, StoreError> {
        self.route_held()?;
        let now = now_us(&self.opts.clock);
        let max_age = self.opts.upload_interval.as_micros() as i64;
        let products: Vec<String> = self
            .unsealed
            .iter()
            .filter(|(k, p)| p.events > 0 && (self.opts.permit)(k) == Permit::All)
            .map(|(k, _)| k.clone())
            .collect();
        let mut sealed = 0;
        for product in products {
            loop {
                let p = self.unsealed.get(&product).copied().unwrap_or_default();
                if p.events == 0 {
                    break;
                }
                let due = force
                    || p.events >= self.opts.batch_max_events as u64
                    || p.bytes >= self.opts.batch_max_bytes as u64
                    || self
                        .oldest_unsealed(&product)?
                        .is_some_and(|t| now.saturating_sub(t) >= max_age);
                if !due {
                    break;
                }
                if !self.seal_one(&product, now)? {
                    break;
                }
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// Give batches held [`UNROUTED`] (sealed while their product's
    /// manifest was unusable: a final batch, a forget's marker) their key
    /// and destination, for each product whose manifest is usable now.
    /// They are few and rare; the scan is of the batch table, not events.
    fn route_held(&mut self) -> Result<(), StoreError> {
        let held: Vec<(i64, String, String)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, product, key FROM batches WHERE destination = ?1")
                .map_err(sql("reading held batches"))?;
            let rows = stmt
                .query_map(params![UNROUTED], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sql("reading held batches"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("reading held batches"))?
        };
        for (id, product, held_key) in held {
            if telemetry_sink::BatchKey::parse(&held_key).is_none() {
                tracing::warn!(key = %held_key, "a held batch's key cannot be read; it stays held");
                continue;
            }
            let Some((key, destination)) = self.opts.layout.reroute(&product, &held_key) else {
                continue;
            };
            // One batch that cannot be placed must not stop the sealing
            // of every product: it stays held, and is named.
            if let Err(e) = self.conn.execute(
                "UPDATE batches SET key = ?2, destination = ?3 WHERE id = ?1",
                params![id, key, destination],
            ) {
                tracing::warn!(key = %held_key, error = %e, "a held batch cannot be placed; it stays held");
            }
        }
        Ok(())
    }

    /// Seal the oldest pending events of `product` into one batch.
    pub(super) fn seal_one(&mut self, product: &str, now: i64) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("seal"))?;
        let Some((count, bytes)) = seal_in(&tx, &self.opts, product, now, false)? else {
            return Ok(false);
        };
        tx.commit().map_err(sql("seal"))?;
        // seal_in reported any dropped-event count with this batch.
        self.dropped.remove(product);
        let p = self.unsealed.entry(product.to_string()).or_default();
        p.events = p.events.saturating_sub(count);
        p.bytes = p.bytes.saturating_sub(bytes);
        self.sealed_batches += 1;
        self.sealed_events += count;
        self.sealed_bytes += bytes;
        Ok(true)
    }
}

/// The `telemetry_dropped` counter line for `count` events of `product`.
pub(super) fn dropped_line(opts: &StoreOptions, product: &str, count: i64, now: i64) -> String {
    let mut data = BTreeMap::new();
    data.insert("count".to_string(), telemetry_proto::Value::Int(count));
    let ev = telemetry_proto::WireEvent {
        id: uuid::Uuid::now_v7(),
        event: telemetry_sink::manifest::TELEMETRY_DROPPED.to_string(),
        product: product.to_string(),
        build: concat!("telemetryd-", env!("CARGO_PKG_VERSION")).to_string(),
        timestamp_us: now,
        data,
    };
    let machine = (opts.layout.machine_id)(product);
    crate::record::render(&ev, &machine, std::env::consts::OS, std::env::consts::ARCH).line
}

/// The numbers of a key's `{first}-{last}` for a batch of `count` events of
/// `product`: the product's own, from a start of its own (see migration
/// 0010), never the store's sequence numbers, which all products share.
fn key_numbers(
    tx: &rusqlite::Transaction<'_>,
    product: &str,
    count: u64,
) -> Result<(i64, i64), StoreError> {
    let next: Option<i64> = tx
        .query_row(
            "SELECT next FROM key_counters WHERE product = ?1",
            params![product],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("seal"))?;
    let first = match next {
        Some(n) => n,
        None => key_start(tx, product)?,
    };
    let last = first + count as i64 - 1;
    tx.execute(
        "INSERT INTO key_counters (product, next) VALUES (?1, ?2)
         ON CONFLICT (product) DO UPDATE SET next = excluded.next",
        params![product, last + 1],
    )
    .map_err(sql("seal"))?;
    Ok((first, last))
}

/// Where a product's key numbers start: in 2^40..2^53 (13 to 16 digits,
/// and room for 2^10 times any product's lifetime of events before i64
/// ends), from the store's secret, the product and its forget salt.
fn key_start(tx: &rusqlite::Transaction<'_>, product: &str) -> Result<i64, StoreError> {
    use sha2::{Digest, Sha256};
    let secret: Vec<u8> = tx
        .query_row("SELECT secret FROM key_secret", [], |r| r.get(0))
        .map_err(sql("seal"))?;
    let salt: Option<String> = tx
        .query_row(
            "SELECT salt FROM id_salts WHERE product = ?1",
            params![product],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("seal"))?;
    let mut h = Sha256::new();
    h.update(b"telemetryd key start\0");
    h.update(&secret);
    h.update(b"\0");
    h.update(product.as_bytes());
    h.update(b"\0");
    h.update(salt.unwrap_or_default().as_bytes());
    let digest = h.finalize();
    let n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    const LOW: u64 = 1 << 40;
    const HIGH: u64 = 1 << 53;
    Ok((LOW + n % (HIGH - LOW)) as i64)
}

/// Seal the oldest pending (uploadable) events of `product` into one batch
/// inside `tx`. Returns the events and NDJSON bytes sealed, or `None` when
/// nothing was pending.
pub(super) fn seal_in(
    tx: &rusqlite::Transaction<'_>,
    opts: &StoreOptions,
    product: &str,
    now: i64,
    final_batch: bool,
) -> Result<Option<(u64, u64)>, StoreError> {
    let mut body = Vec::new();
    let (mut first, mut last, mut count) = (None, 0i64, 0u64);
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, line FROM events
                 WHERE product = ?1 AND batch_id IS NULL AND local_only = 0
                   AND seq > (SELECT COALESCE(MAX(last_seq), 0) FROM batches WHERE product = ?1)
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql("seal"))?;
        let mut rows = stmt
            .query(params![product, opts.batch_max_events as i64])
            .map_err(sql("seal"))?;
        while let Some(row) = rows.next().map_err(sql("seal"))? {
            let seq: i64 = row.get(0).map_err(sql("seal"))?;
            let line: String = row.get(1).map_err(sql("seal"))?;
            if count > 0 && body.len() + line.len() + 1 > opts.batch_max_bytes {
                break;
            }
            first.get_or_insert(seq);
            last = seq;
            count += 1;
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
    }
    let Some(first) = first else {
        return Ok(None);
    };
    // Tell the maintainers about events dropped to stay under the size
    // limit: one counter line, in the batch, reset in the same transaction.
    let dropped: Option<i64> = tx
        .query_row(
            "SELECT events FROM dropped WHERE product = ?1",
            params![product],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("seal"))?;
    if let Some(n) = dropped.filter(|n| *n > 0) {
        body.extend_from_slice(dropped_line(opts, product, n, now).as_bytes());
        body.push(b'\n');
        tx.execute("DELETE FROM dropped WHERE product = ?1", params![product])
            .map_err(sql("seal"))?;
    }
    let date = &rfc3339_us(now)[..10];
    let (key_first, key_last) = key_numbers(tx, product, count)?;
    // The destination is fixed with the key (its prefix is in it): a
    // manifest changed later does not redirect this batch.
    let (key, destination) = opts.layout.key(product, date, key_first, key_last);
    let compressed = compress(&body).map_err(|e| StoreError::Compress(Arc::new(e)))?;
    tx.execute(
        "INSERT INTO batches (product, key, first_seq, last_seq, events, raw_bytes, body, sealed_us, final, destination)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![product, key, first, last, count as i64, body.len() as i64, compressed, now, final_batch, destination],
    )
    .map_err(sql("seal"))?;
    // The batch owns its events by range: their rows are not touched.
    Ok(Some((count, body.len() as u64)))
}
