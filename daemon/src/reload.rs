//! Reloading the configuration file (SIGHUP; `systemctl reload`).
//!
//! The same flags and environment, the file read anew. What can change
//! while running is applied at once: `upload_interval`, `batch_max_events`,
//! `batch_max_bytes`, `max_store_bytes`, `retry_min` and `retry_max`.
//! Everything else (the socket, the state and outbox directories, the S3
//! settings, timeouts, connection limits, durability, the identity, the
//! manifest and consent paths) is fixed at start: a change to it is logged,
//! naming each setting, and takes effect at the next restart. A file that
//! does not load is logged and changes nothing. Manifests and consent files
//! need no reload: they are read again whenever they change.

use crate::config::Config;
use crate::server::Ctx;
use crate::uploader::Timing;
use std::sync::Arc;

/// Where reload requests come from and how the configuration is read
/// again; set by `main` (tests inject their own).
#[derive(Clone)]
pub struct Reload {
    /// Notified once per request (SIGHUP).
    pub requests: Arc<tokio::sync::Notify>,
    /// Reads the configuration again; the error names the file and key.
    pub load: Arc<dyn Fn() -> Result<Config, String> + Send + Sync>,
}

/// What a new configuration changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Settings applied now.
    pub applied: Vec<&'static str>,
    /// Settings that changed but take effect only after a restart.
    pub need_restart: Vec<&'static str>,
}

/// Compare two configurations setting by setting.
pub fn changes(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    macro_rules! live {
        ($($f:ident),*) => {$(
            if old.$f != new.$f { c.applied.push(stringify!($f)); }
        )*};
    }
    macro_rules! fixed {
        ($($f:ident),*) => {$(
            // Debug text: not every setting's type has PartialEq.
            if format!("{:?}", old.$f) != format!("{:?}", new.$f) {
                c.need_restart.push(stringify!($f));
            }
        )*};
    }
    live!(
        upload_interval,
        batch_max_events,
        batch_max_bytes,
        max_store_bytes,
        retry_min,
        retry_max
    );
    fixed!(
        socket_path,
        state_dir,
        outbox_dir,
        s3,
        s3_timeout,
        net,
        connection_timeout,
        max_connections,
        spool_check_interval,
        shutdown_timeout,
        sync,
        identity,
        catalog_dir,
        manifest_system_dirs,
        consent_file,
        system_consent_file,
        idle_exit,
        idle_trim
    );
    c
}

/// Serve reload requests until the daemon stops.
pub async fn serve(ctx: Arc<Ctx>, mut current: Config, reload: Reload) {
    loop {
        reload.requests.notified().await;
        let new = match (reload.load)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload: the configuration was not changed");
                continue;
            }
        };
        let c = changes(&current, &new);
        if let Err(e) = ctx
            .store
            .set_limits(
                new.batch_max_events,
                new.batch_max_bytes,
                new.upload_interval,
                new.max_store_bytes,
            )
            .await
        {
            tracing::error!(error = %e, "reload: the store did not take the new limits");
            continue;
        }
        ctx.uploader.set_timing(Timing {
            upload_interval: new.upload_interval,
            retry_min: new.retry_min,
            retry_max: new.retry_max,
        });
        if !c.need_restart.is_empty() {
            tracing::warn!(
                settings = %c.need_restart.join(", "),
                "reload: these settings changed but take effect only after a restart"
            );
        }
        tracing::info!(
            applied = %if c.applied.is_empty() { "nothing changed".to_string() } else { c.applied.join(", ") },
            "reloaded the configuration"
        );
        // What is running now: the restart-only settings keep their old
        // values, so they are reported again until the restart.
        current.upload_interval = new.upload_interval;
        current.batch_max_events = new.batch_max_events;
        current.batch_max_bytes = new.batch_max_bytes;
        current.max_store_bytes = new.max_store_bytes;
        current.retry_min = new.retry_min;
        current.retry_max = new.retry_max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_settings_are_applied_and_the_rest_named_for_a_restart() {
        let old = Config::with_paths("/run/t.sock".into(), "/var/lib/t".into());
        assert_eq!(changes(&old, &old.clone()), Changes::default());
        let mut new = old.clone();
        new.upload_interval = Duration::from_secs(60);
        new.max_store_bytes = 1;
        new.socket_path = "/run/other.sock".into();
        new.max_connections = 3;
        let c = changes(&old, &new);
        assert_eq!(c.applied, ["upload_interval", "max_store_bytes"]);
        assert_eq!(c.need_restart, ["socket_path", "max_connections"]);
    }
}
