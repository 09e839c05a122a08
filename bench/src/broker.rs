//! Benchmark 6: the broker. Grants per second and their latency, and whole
//! uploads through the broker (grant + presigned PUT, the daemon's path),
//! against the S3 test server's own PUT rate measured in the same run
//! (presigned PUTs with the same HTTP client; and, for reference, the real
//! SDK's PutObject). All rows drive the same server on 127.0.0.1 with the
//! same concurrency and body size.

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use telemetry_sink::broker::{put_via_broker, UploadRequest};
use telemetry_sink::BatchKey;
use telemetry_tests::broker::{send, Broker, TODAY};
use telemetry_tests::{S3Server, BUCKET};

/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Body size: a typical small batch after compression.
const BODY: usize = 4096;

struct Run {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn key(i: usize) -> BatchKey {
    BatchKey {
        product: "cfdev".into(),
        date: TODAY.into(),
        machine8: format!("{:08x}", i % 4096),
        first: i as i64 + 1,
        last: i as i64 + 1,
    }
}

/// Run `op(i)` for i in `offset..offset + n`, `CONCURRENCY` at a time, on
/// the S3 server's runtime; rate and latency percentiles.
fn measure<F, Fut>(s3: &S3Server, n: usize, offset: usize, op: F) -> Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    s3.block_on(async move {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut lat = Vec::with_capacity(n);
        for i in offset..offset + n {
            if tasks.len() >= CONCURRENCY {
                lat.push(tasks.join_next().await.context("task")???);
            }
            let op = op.clone();
            tasks.spawn(async move {
                let t = Instant::now();
                op(i).await?;
                Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64())
            });
        }
        while let Some(r) = tasks.join_next().await {
            lat.push(r??);
        }
        let secs = started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e3;
        Ok(Run {
            per_sec: n as f64 / secs,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        })
    })
}

/// Print the broker's figures.
pub fn run(quick: bool) -> Result<()> {
    let n = if quick { 500 } else { 5000 };
    println!("\n## 6. Broker ({n} requests per row, {CONCURRENCY} in flight, {BODY}-byte bodies)");
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_PER_ADDRESS", "1000000000/1s"),
            ("TELEMETRY_BROKER_PER_MACHINE", "1000000000/1s"),
        ],
    );
    let body = vec![0x5au8; BODY];
    let url = format!("{}/v1/upload", broker.url);
    // Baseline: the S3 server's own PUT rate, with the lightest client:
    // presigned PUTs through the same HTTP client, URLs granted beforehand
    // (untimed), so the row is the store's cost plus one round trip.
    let mut granted = Vec::with_capacity(n);
    for i in 3 * n..4 * n {
        let req = serde_json::to_vec(&UploadRequest::new(&key(i), &body))?;
        let a = s3.block_on(send(
            "POST",
            &url,
            &[("content-type", "application/json")],
            req,
        ))?;
        anyhow::ensure!(a.status == 200, "grant: HTTP {} {}", a.status, a.text());
        granted.push(a.json());
    }
    let granted = std::sync::Arc::new(granted);
    let b = body.clone();
    let baseline = measure(&s3, n, 0, move |i| {
        let (g, b) = (granted.clone(), b.clone());
        async move {
            let grant = &g[i];
            let headers: Vec<(String, String)> = grant["headers"]
                .as_object()
                .context("grant headers")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let a = send(
                "PUT",
                grant["url"].as_str().context("grant url")?,
                &pairs,
                b,
            )
            .await?;
            anyhow::ensure!(a.status == 200, "PUT: HTTP {} {}", a.status, a.text());
            Ok(())
        }
    })?;
    let sdk = s3.client();
    let b = body.clone();
    let sdk_put = measure(&s3, n, 4 * n, move |i| {
        let (sdk, b) = (sdk.clone(), b.clone());
        async move {
            sdk.put_object()
                .bucket(BUCKET)
                .key(key(i).render("sdk"))
                .if_none_match("*")
                .body(b.into())
                .send()
                .await
                .context("SDK PutObject")?;
            Ok(())
        }
    })?;
    let b = body.clone();
    let grants = measure(&s3, n, n, move |i| {
        let (url, req) = (url.clone(), UploadRequest::new(&key(i), &b));
        async move {
            let a = send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                serde_json::to_vec(&req)?,
            )
            .await?;
            anyhow::ensure!(a.status == 200, "grant: HTTP {} {}", a.status, a.text());
            Ok(())
        }
    })?;
    let base = broker.url.clone();
    // One client for the run, as the daemon keeps one per broker.
    let client = telemetry_sink::net::http_client(&Default::default())?;
    let whole = measure(&s3, n, 2 * n, move |i| {
        let (base, b, client) = (base.clone(), body.clone(), client.clone());
        async move {
            put_via_broker(&client, &base, &key(i), b, Duration::from_secs(30)).await?;
            Ok(())
        }
    })?;
    println!(
        "| row | per second | × S3 PUT rate | p50 ms | p99 ms | p99 × S3 PUT p99 |\n|---|---|---|---|---|---|"
    );
    for (name, r) in [
        (
            "S3 server PUT (presigned, same client), baseline",
            &baseline,
        ),
        ("S3 server PutObject through aws-sdk-s3", &sdk_put),
        ("broker grants (POST /v1/upload)", &grants),
        ("grant + presigned PUT (put_via_broker)", &whole),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.per_sec,
            r.per_sec / baseline.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p99_ms / baseline.p99_ms
        );
    }
    drop(broker);
    Ok(())
}
