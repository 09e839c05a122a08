//! `telemetry-broker`: parse settings, load manifests and credentials,
//! listen, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeSet;
use std::sync::Arc;
use telemetry_broker::config::{Args, Settings, TODAY_VAR};
use telemetry_broker::{presign::Presigner, Broker};

fn main() -> std::process::ExitCode {
    // An empty TELEMETRY_* variable counts as unset; done before the
    // runtime's threads exist, as changing the environment requires.
    telemetry_platform::proc::forget_empty_vars("TELEMETRY_");
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(serve()));
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, named like the daemon's, with every cause.
            let chain: &dyn std::error::Error = e.as_ref();
            eprintln!(
                "telemetry-broker: error: {}",
                telemetry_sink::error_chain(chain)
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    if let Some(code) = telemetry_clidoc::generate_if_asked(
        std::env::args_os(),
        <Args as clap::CommandFactory>::command,
    ) {
        std::process::exit(code.into());
    }
    // TELEMETRY_LOG as for telemetryd, then RUST_LOG, then info without
    // the AWS SDK's configuration warnings.
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TELEMETRY_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(telemetry_sink::DEFAULT_LOG_FILTER)
            })
    };
    // TELEMETRY_LOG_FORMAT=json: one JSON object per line, as telemetryd.
    let format = std::env::var("TELEMETRY_LOG_FORMAT").unwrap_or_default();
    let json = format.trim().eq_ignore_ascii_case("json");
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init();
    } else {
        // Colours only on a terminal: journald and log files would keep
        // the escape codes.
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
        if !format.trim().is_empty() && !format.trim().eq_ignore_ascii_case("text") {
            tracing::warn!(
                "TELEMETRY_LOG_FORMAT={format:?} is not a log format (text or json); logging as text"
            );
        }
    }
    let today = std::env::var(TODAY_VAR).ok();
    if let Some(t) = &today {
        // A fixed "today" is for reproducible tests; left set in
        // production it would refuse every batch once the days move on.
        tracing::warn!(
            "{TODAY_VAR}={t} fixes today's date for the day window; unset it in production"
        );
    }
    let mut settings = Settings::load(Args::parse(), today)?;
    // Every connection is a descriptor, and so is each request to S3 or
    // the credentials' endpoint: with the usual soft limit (1024) accept
    // would fail before --max-connections is reached.
    if let Some(fds) = telemetry_platform::proc::raise_fd_limit() {
        let room = usize::try_from(fds.saturating_sub(FDS_KEPT_BACK)).unwrap_or(usize::MAX);
        if settings.max_connections > room {
            tracing::warn!(
                "--max-connections {} is over what the open-file limit ({fds}) leaves room for; serving {} at once (raise LimitNOFILE or ulimit -n)",
                settings.max_connections,
                room.max(1)
            );
            settings.max_connections = room.max(1);
        }
    }
    let products = load_products(&settings)?;
    let presigner = Presigner::from_chain(settings.s3.clone()).await?;
    // Fail at start, not at every request, when the chain has nothing.
    presigner
        .credentials(settings.url_lifetime)
        .await
        .context("the broker signs URLs with its own AWS credentials")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--listen / TELEMETRY_BROKER_LISTEN)",
                settings.listen
            )
        })?;
    let local = listener
        .local_addr()
        .with_context(|| format!("no local address for {}", settings.listen))?;
    tracing::info!(
        "listening on {local}; signing for {}; products: {}",
        settings.s3.url(),
        products.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    if let (Some(header), true) = (
        &settings.client_ip_header,
        settings.trusted_proxies_by_default,
    ) {
        // The default suits a balancer in a private network of its own;
        // where other machines share that network, each could name its own
        // address in the header (escaping the per-address limits) and hold
        // connections uncapped, as a balancer may.
        tracing::warn!(
            "--client-ip-header {header} is set but --trusted-proxies / TELEMETRY_BROKER_TRUSTED_PROXIES is not: every peer in the private and loopback ranges ({}) is believed as a load balancer (it names its client's address and its connections are not capped per address); set it to your load balancers' own range",
            telemetry_broker::config::DEFAULT_TRUSTED_PROXIES.join(", ")
        );
    }
    if settings.client_ip_header.is_none() && settings.client_ip_hops != 1 {
        tracing::warn!(
            "--client-ip-hops / TELEMETRY_BROKER_CLIENT_IP_HOPS is {} but no --client-ip-header is set: it does nothing, and each connection's peer counts as the client",
            settings.client_ip_hops
        );
    }
    let broker = Arc::new(Broker::new(settings, products, presigner));
    #[cfg(unix)]
    explain_sighup();
    telemetry_broker::run(listener, broker, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Descriptors kept back from client connections: the listener, the
/// log, and requests to S3 and the credentials' endpoints.
const FDS_KEPT_BACK: u64 = 64;

/// The products with a valid manifest. A bad manifest is logged with its
/// file and line and disables only its own product.
fn load_products(settings: &Settings) -> anyhow::Result<BTreeSet<String>> {
    let dir = &settings.manifests;
    // A mistyped path would give a broker that refuses every upload while
    // it looks healthy: refuse to start instead. (An empty directory is a
    // choice, warned about below.)
    if !dir.is_dir() {
        anyhow::bail!(
            "--manifests / TELEMETRY_BROKER_MANIFESTS: {} is not a directory: create it and put each product's manifest in it (the file its CLI ships), or name the right one",
            dir.display()
        );
    }
    let loaded = telemetry_sink::manifest::load_dir(dir).with_context(|| {
        format!(
            "--manifests / TELEMETRY_BROKER_MANIFESTS: {}",
            dir.display()
        )
    })?;
    let mut products = BTreeSet::new();
    for m in loaded {
        match m {
            Ok(m) => {
                for w in &m.warnings {
                    tracing::warn!("{}: {w}", m.source_name);
                }
                products.insert(m.product);
            }
            Err(e) => tracing::error!("{e}; that product is refused until it is fixed"),
        }
    }
    if products.is_empty() {
        tracing::warn!(
            "no valid product manifest in {}: every upload will be refused",
            dir.display()
        );
    }
    Ok(products)
}

/// Resolves on Ctrl-C (Windows has no SIGTERM).
#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("Ctrl-C received");
}

/// SIGHUP's default is to end the process: an operator who sends it to
/// reload (as to the daemon) would take the broker down. It is answered
/// with a log line saying how to reload instead.
#[cfg(unix)]
fn explain_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!("SIGHUP received: the broker does not reload; restart it to read its manifests, retired list and settings again (systemctl restart telemetry-broker)");
                }
            });
        }
        Err(e) => tracing::warn!("cannot watch SIGHUP ({e})"),
    }
}

/// Resolves on SIGTERM or SIGINT.
#[cfg(unix)]
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
