//! Acting on consent changes inside the store, each in one transaction.
//!
//! | last applied → new | what happens to the product's stored events |
//! |---|---|
//! | `on` → `off` | all deleted; one `telemetry_off` event recorded and sealed as the final batch |
//! | `local` → `off` | all deleted; nothing recorded (nothing was ever meant to leave) |
//! | `on` → `local` | pending and sealed events become local-only: never uploaded |
//! | `local` → `on` | nothing: events recorded before consent stay local-only |
//! | undecided/`off` → `on`/`local` | nothing |

use super::{now_us, seal_in, sql, Inner, StoreError};
use crate::record::Record;
use rusqlite::{params, TransactionBehavior};
use telemetry_proto::Mode;

/// What applying a consent decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsentOutcome {
    /// Stored events deleted because the product was turned off.
    pub purged: u64,
    /// Events moved to local-only because the product went `on` → `local`.
    pub made_local: u64,
    /// A final `telemetry_off` event was recorded and sealed for upload.
    pub final_event: bool,
}

impl Inner {
    pub(super) fn apply_consent(
        &mut self,
        product: &str,
        mode: Mode,
        final_record: Record,
    ) -> Result<ConsentOutcome, StoreError> {
        let old = self.applied.get(product).copied();
        if old == Some(mode) {
            return Ok(ConsentOutcome::default());
        }
        let old = old.unwrap_or(Mode::Off);
        let now = now_us(&self.opts.clock);
        let mut out = ConsentOutcome::default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("applying consent"))?;
        match (old, mode) {
            (Mode::On | Mode::Local, Mode::Off) => {
                out.purged = tx
                    .execute("DELETE FROM events WHERE product = ?1", params![product])
                    .map_err(sql("applying consent"))? as u64;
                tx.execute("DELETE FROM batches WHERE product = ?1", params![product])
                    .map_err(sql("applying consent"))?;
                if old == Mode::On {
                    tx.execute(
                        "INSERT OR IGNORE INTO events (id, product, line, received_us, local_only)
                         VALUES (?1, ?2, ?3, ?4, 0)",
                        params![&final_record.id[..], product, final_record.line, now],
                    )
                    .map_err(sql("applying consent"))?;
                    out.final_event = seal_in(&tx, &self.opts, product, now, true)?.is_some();
                }
            }
            (Mode::On, Mode::Local) => {
                out.made_local = tx
                    .execute(
                        "UPDATE events SET local_only = 1, batch_id = NULL
                         WHERE product = ?1 AND local_only = 0",
                        params![product],
                    )
                    .map_err(sql("applying consent"))? as u64;
                tx.execute("DELETE FROM batches WHERE product = ?1", params![product])
                    .map_err(sql("applying consent"))?;
            }
            _ => {}
        }
        tx.execute(
            "INSERT INTO consent_applied (product, mode, since_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (product) DO UPDATE SET mode = excluded.mode, since_us = excluded.since_us",
            params![product, mode.as_str(), now],
        )
        .map_err(sql("applying consent"))?;
        tx.commit().map_err(sql("applying consent"))?;
        // Rare and small: recount rather than track every case by hand.
        self.load_counters()?;
        Ok(out)
    }
}
