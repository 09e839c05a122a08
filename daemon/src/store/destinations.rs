//! Per-destination work the uploader needs: retiring a product its vendor
//! switched off (HTTP 410), and the record of retired products; dropping a
//! batch its destination refuses for good, and the record of those.
//!
//! Retiring drops the product's events that were waiting to be uploaded,
//! sealed or not, in one transaction; events kept `local` stay (they were
//! never going out). The count survives restarts in the `retired` table,
//! so `status` keeps showing it.

use super::{now_us, sql, Inner, StoreError};
use rusqlite::{params, OptionalExtension};

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

/// What one destination refused for good since the store began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAt {
    /// The destination's receipt label (as `status` names it; never a
    /// path).
    pub destination: String,
    /// Events of the batches it refused.
    pub events: u64,
    /// Why the latest was refused (the destination's words, made safe).
    pub why: String,
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

    /// Drop sealed batch `id`, which its destination refuses for good (see
    /// `Store::reject`): its events are deleted. They are the destination's
    /// refusal, not a full store's drops; only a full store's count the
    /// batch carried (its `telemetry_dropped` line) is counted again, so
    /// the product's next batch still reports it. A final batch (a
    /// `telemetry_off`, or a forget's marker under the old ID) gives back
    /// nothing: nothing follows it under that ID. Returns the events
    /// dropped (0 if the batch is gone already).
    pub(super) fn reject(
        &mut self,
        id: i64,
        destination: &str,
        why: &str,
    ) -> Result<u64, StoreError> {
        self.handed_out.retain(|_, b| *b != id);
        let tx = self.conn.transaction().map_err(sql("reject"))?;
        type Row = (String, i64, i64, i64, bool, Vec<u8>);
        let batch: Option<Row> = tx
            .query_row(
                "SELECT product, events, first_seq, last_seq, final, body FROM batches WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(sql("reject"))?;
        let Some((product, events, first, last, final_batch, body)) = batch else {
            return Ok(0);
        };
        tx.execute(
            "DELETE FROM events WHERE product = ?1 AND local_only = 0 AND seq BETWEEN ?2 AND ?3",
            params![product, first, last],
        )
        .map_err(sql("reject"))?;
        tx.execute("DELETE FROM batches WHERE id = ?1", params![id])
            .map_err(sql("reject"))?;
        // Its own events are the destination's refusal (status shows them
        // per destination); only the store-full drops it carried to report
        // are counted again, to go with the next batch. A final batch's
        // count went with the product's last events and is not sent.
        let carried = super::bound::carried_drops(&body);
        if !final_batch && carried > 0 {
            super::bound::add_dropped(&tx, &product, carried, now_us(&self.opts.clock))
                .map_err(sql("reject"))?;
        }
        tx.execute(
            "INSERT INTO refused (destination, events, why, since_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (destination) DO UPDATE
             SET events = events + excluded.events, why = excluded.why",
            params![destination, events, why, now_us(&self.opts.clock)],
        )
        .map_err(sql("reject"))?;
        tx.commit().map_err(sql("reject"))?;
        self.load_counters()?;
        Ok(events as u64)
    }

    pub(super) fn refused(&self) -> Result<Vec<RefusedAt>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT destination, events, why FROM refused ORDER BY destination")
            .map_err(sql("reading refused batches"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RefusedAt {
                    destination: r.get(0)?,
                    events: r.get::<_, i64>(1)? as u64,
                    why: r.get(2)?,
                })
            })
            .map_err(sql("reading refused batches"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("reading refused batches"))
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

#[cfg(test)]
mod tests {
    use super::super::tests::{d, record, rt, Fixture};
    use super::super::{Announce, Stats, Store};
    use crate::batch::Routing;
    use crate::batch::UNROUTED;
    use crate::consent::Permit;
    use crate::uploader::destination::Spec;
    use std::sync::Arc;
    use telemetry_proto::Mode;

    fn vendor() -> Spec {
        Spec::Broker {
            url: "https://broker.example".into(),
        }
    }

    #[test]
    fn batches_keep_the_destination_they_were_sealed_for_and_retiring_drops_them() {
        let f = Fixture::new();
        let route_b = Arc::new(std::sync::Mutex::new(Routing::To(vendor())));
        let mut opts = f.opts(2);
        let r = route_b.clone();
        opts.layout.route = Arc::new(move |p| match p {
            "b" => r.lock().unwrap().clone(),
            _ => Routing::Own,
        });
        let (store, thread) = Store::open(f.dir.path(), opts).unwrap();
        rt().block_on(async {
            for p in ["a", "b"] {
                store
                    .apply_consent(p, d(Mode::On), record(0, p), Announce::Installed)
                    .await
                    .unwrap();
            }
            let recs = vec![
                record(1, "a"),
                record(2, "a"),
                record(3, "b"),
                record(4, "b"),
            ];
            store.insert(recs).await.unwrap();
            assert_eq!(store.seal(false).await.unwrap(), 2);
            // A later manifest change does not redirect the sealed batch.
            *route_b.lock().unwrap() = Routing::Own;
            let s: Stats = store.stats().await.unwrap();
            let vendor_id = Some(vendor().to_text());
            assert_eq!(
                s.uploadable_by_destination.into_iter().collect::<Vec<_>>(),
                [(None, 1), (vendor_id.clone(), 1)]
            );
            let b = store
                .next_sealed_to(vendor_id.clone())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (b.product.as_str(), b.destination.clone()),
                ("b", vendor_id.clone())
            );
            assert!(
                b.key.starts_with("v1/product=b/"),
                "a broker's keys have no prefix: {}",
                b.key
            );
            let a = store.next_sealed_to(None).await.unwrap().unwrap();
            assert!(a.key.starts_with("p/v1/product=a/"), "{}", a.key);

            // One more pending event of b, then its vendor retires it.
            store.insert(vec![record(5, "b")]).await.unwrap();
            let dropped = store
                .retire("b", "https://broker.example", "gone")
                .await
                .unwrap();
            assert_eq!(dropped, 3, "two sealed and one pending");
            assert!(store.next_sealed_to(vendor_id).await.unwrap().is_none());
            let s = store.stats().await.unwrap();
            assert_eq!(
                (s.pending_events, s.sealed_batches),
                (2, 1),
                "a's are untouched"
            );
            store.insert(vec![record(6, "b")]).await.unwrap();
            assert_eq!(
                store
                    .retire("b", "https://broker.example", "gone")
                    .await
                    .unwrap(),
                1
            );
        });
        drop(store);
        thread.join();
        // The count survives a restart.
        let (store, thread) = f.open(2);
        rt().block_on(async {
            let retired = store.retired().await.unwrap();
            assert_eq!(retired.len(), 1);
            assert_eq!((retired[0].product.as_str(), retired[0].dropped), ("b", 4));
        });
        drop(store);
        thread.join();
    }

    #[test]
    fn a_final_batch_sealed_while_the_manifest_is_unusable_waits_for_its_destination() {
        let f = Fixture::new();
        let route = Arc::new(std::sync::Mutex::new(Routing::To(vendor())));
        let mut opts = f.opts(100);
        let r = route.clone();
        opts.layout.route = Arc::new(move |_| r.lock().unwrap().clone());
        let (store, thread) = Store::open(f.dir.path(), opts).unwrap();
        rt().block_on(async {
            store
                .apply_consent("a", d(Mode::On), record(0, "a"), Announce::Installed)
                .await
                .unwrap();
            store.insert(vec![record(1, "a")]).await.unwrap();
            // The manifest breaks, then the user turns the product off:
            // its final batch is sealed now, but not for the daemon's own
            // destination (another party's bucket).
            *route.lock().unwrap() = Routing::Unknown;
            f.permits
                .lock()
                .unwrap()
                .insert("a".into(), Permit::FinalOnly);
            let out = store
                .apply_consent("a", d(Mode::Off), record(2, "a"), Announce::Installed)
                .await
                .unwrap();
            assert!(out.final_event);
            store.seal(true).await.unwrap();
            let s = store.stats().await.unwrap();
            assert!(s.uploadable_by_destination.is_empty());
            assert_eq!(s.held_batches, 1, "the uploader looks again for it");
            assert!(store.next_sealed_to(None).await.unwrap().is_none());
            assert!(store
                .next_sealed_to(Some(UNROUTED.into()))
                .await
                .unwrap()
                .is_none());
            // The manifest is usable again: the next cycle places it.
            *route.lock().unwrap() = Routing::To(vendor());
            store.seal(false).await.unwrap();
            let vendor_id = Some(vendor().to_text());
            let b = store
                .next_sealed_to(vendor_id.clone())
                .await
                .unwrap()
                .expect("the final batch goes to the vendor");
            assert!(b.key.starts_with("v1/product=a/"), "{}", b.key);
            assert_eq!(b.destination, vendor_id);
            assert!(store.next_sealed_to(None).await.unwrap().is_none());
            assert_eq!(store.stats().await.unwrap().held_batches, 0);
        });
        drop(store);
        thread.join();
    }
}
