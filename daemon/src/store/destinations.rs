//! Per-destination work the uploader needs: retiring a product its vendor
//! switched off (HTTP 410), and the record of retired products.
//!
//! Retiring drops the product's events that were waiting to be uploaded,
//! sealed or not, in one transaction; events kept `local` stay (they were
//! never going out). The count survives restarts in the `retired` table,
//! so `status` keeps showing it.

use super::{now_us, sql, Inner, StoreError};
use rusqlite::params;

/// A product whose vendor retired it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredProduct {
    /// The product.
    pub product: String,
    /// The destination that said so (as `status` names it).
    pub destination: String,
    /// What it said.
    pub message: String,
    /// Events dropped for it since.
    pub dropped: u64,
    /// When it was first retired (µs).
    pub since_us: i64,
}

impl Inner {
    pub(super) fn retire(
        &mut self,
        product: &str,
        destination: &str,
        message: &str,
    ) -> Result<u64, StoreError> {
        let tx = self.conn.transaction().map_err(sql("retire"))?;
        let n = tx
            .execute(
                "DELETE FROM events WHERE product = ?1 AND local_only = 0",
                params![product],
            )
            .map_err(sql("retire"))? as u64;
        tx.execute("DELETE FROM batches WHERE product = ?1", params![product])
            .map_err(sql("retire"))?;
        // A retired product's drop count is here now, not in a batch.
        tx.execute("DELETE FROM dropped WHERE product = ?1", params![product])
            .map_err(sql("retire"))?;
        tx.execute(
            "INSERT INTO retired (product, destination, message, dropped, since_us)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (product) DO UPDATE
             SET dropped = dropped + excluded.dropped, message = excluded.message,
                 destination = excluded.destination",
            params![
                product,
                destination,
                message,
                n as i64,
                now_us(&self.opts.clock)
            ],
        )
        .map_err(sql("retire"))?;
        tx.commit().map_err(sql("retire"))?;
        self.load_counters()?;
        Ok(n)
    }

    pub(super) fn retired(&self) -> Result<Vec<RetiredProduct>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT product, destination, message, dropped, since_us
                 FROM retired ORDER BY product",
            )
            .map_err(sql("reading retired products"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RetiredProduct {
                    product: r.get(0)?,
                    destination: r.get(1)?,
                    message: r.get(2)?,
                    dropped: r.get::<_, i64>(3)? as u64,
                    since_us: r.get(4)?,
                })
            })
            .map_err(sql("reading retired products"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("reading retired products"))
    }
}
