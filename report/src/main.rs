//! `telemetry-report`: publish a period's anonymous aggregates, or manage
//! the bucket's five-year retention rule.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use telemetry_report::period::Period;
use telemetry_report::retention::{self, Check};
use telemetry_report::source::Source;
use telemetryd::config as daemon_config;

#[derive(Parser)]
#[command(
    name = "telemetry-report",
    version,
    about = "Publish anonymous usage aggregates from uploaded telemetry batches (report.json, CSVs, a static index.html), and manage the bucket's five-year retention rule.",
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  telemetry-report --source s3://my-bucket/telemetry --quarter 2026Q4 --out public/2026Q4\n  telemetry-report --source ~/.local/state/telemetry/outbox --from 2026-10-01 --to 2026-10-31 --out oct\n  telemetry-report retention --check\n\nS3 settings and credentials are the daemon's: flags, then TELEMETRY_S3_* variables, then the [s3] table of the config file; credentials from the standard AWS chain.\nEvery published number counts at least k distinct machines; no machine ID is ever written."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print, apply or check the S3 lifecycle rule that expires raw batches after five years.
    Retention(RetentionArgs),
}

/// The daemon's S3 settings, under the same flags and variables.
#[derive(Args, Clone, Default)]
struct S3Args {
    /// The daemon's config file (TOML); its [s3] table is used. Default: $XDG_CONFIG_HOME/telemetry/config.toml.
    #[arg(long, env = "TELEMETRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Bucket, when --source is not given.
    #[arg(long, env = "TELEMETRY_S3_BUCKET", value_name = "NAME")]
    s3_bucket: Option<String>,
    /// Key prefix, when --source is not given.
    #[arg(long, env = "TELEMETRY_S3_PREFIX", value_name = "PREFIX")]
    s3_prefix: Option<String>,
    /// Endpoint URL of an S3-compatible store (MinIO, R2, Garage, Ceph).
    #[arg(long, env = "TELEMETRY_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: from the AWS chain, else us-east-1).
    #[arg(long, env = "TELEMETRY_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
    /// Path-style addressing (true/false); the default is true when an endpoint is set.
    #[arg(long, env = "TELEMETRY_S3_PATH_STYLE", value_name = "BOOL")]
    s3_path_style: Option<String>,
    /// Longest one S3 request may take (default 60s).
    #[arg(long, env = "TELEMETRY_S3_TIMEOUT", value_name = "DURATION")]
    s3_timeout: Option<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// Where the batches are: s3://BUCKET[/PREFIX] or a local outbox directory. Default: the daemon's configured bucket, else its outbox.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    source: Option<String>,
    /// Product to report on (the product= partition). Default: the only product in the source.
    #[arg(long, value_name = "NAME")]
    product: Option<String>,
    /// Calendar quarter, e.g. 2026Q4 (UTC days 2026-10-01 to 2026-12-31).
    #[arg(long, value_name = "YYYYQn", required_unless_present_all = ["from", "to"], conflicts_with_all = ["from", "to"])]
    quarter: Option<String>,
    /// First day of the period (UTC, inclusive); needs --to.
    #[arg(long, value_name = "YYYY-MM-DD", requires = "to")]
    from: Option<String>,
    /// Last day of the period (UTC, inclusive); needs --from.
    #[arg(long, value_name = "YYYY-MM-DD", requires = "from")]
    to: Option<String>,
    /// Also read batches filed up to this many days after the period, for events uploaded late.
    #[arg(long, value_name = "DAYS", default_value_t = 14, value_parser = clap::value_parser!(u16).range(0..=366))]
    late_days: u16,
    /// Directory for report.json, the CSVs and index.html (created if missing).
    #[arg(long, value_name = "DIR", required = true)]
    out: Option<PathBuf>,
    /// Publish only numbers that count at least this many distinct machines.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..))]
    k: u64,
    /// No progress line, even on a terminal.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args)]
struct RetentionArgs {
    /// Put the rule on the bucket, keeping the bucket's other lifecycle rules.
    #[arg(long, conflicts_with = "check")]
    apply: bool,
    /// Read the bucket's lifecycle configuration back: exit 0 if the rule is in place, 3 if it is missing or different.
    #[arg(long)]
    check: bool,
    /// The bucket: s3://BUCKET[/PREFIX]. Default: the daemon's configured bucket and prefix.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    source: Option<String>,
    #[command(flatten)]
    s3: S3Args,
}

/// Exit code of `retention --check` when the rule is not in place.
const EXIT_NOT_IN_PLACE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telemetry-report: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Retention(args)) => runtime.block_on(retention_main(args)),
        None => runtime
            .block_on(report_main(cli.report))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "telemetry-report: error: {}",
                telemetryd::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// The daemon's configuration, from the same flags, variables and file.
fn daemon_settings(s3: &S3Args) -> anyhow::Result<telemetryd::Config> {
    let args = daemon_config::Args {
        config: s3.config.clone(),
        s3_bucket: s3.s3_bucket.clone(),
        s3_prefix: s3.s3_prefix.clone(),
        s3_endpoint: s3.s3_endpoint.clone(),
        s3_region: s3.s3_region.clone(),
        s3_path_style: s3.s3_path_style.clone(),
        s3_timeout: s3.s3_timeout.clone(),
        ..Default::default()
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    daemon_config::load(&args, None, |k| std::env::var_os(k), uid)
        .context("cannot use the telemetry configuration")
}

/// Split `s3://bucket/prefix`.
fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An S3 client built exactly as the daemon builds it (same settings and
/// credential chain), with the SDK's standard retries turned back on: the
/// daemon retries uploads itself, a report run should ride out a throttle.
async fn s3_client(
    cfg: &telemetryd::Config,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<aws_sdk_s3::Client> {
    let s3 = match &cfg.s3 {
        Some(s3) => daemon_config::S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            ..s3.clone()
        },
        None => daemon_config::S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            path_style: false,
        },
    };
    let telemetryd::sink::Sink::S3 { client, .. } =
        telemetryd::sink::Sink::s3(&s3, cfg.s3_timeout).await
    else {
        bail!("the daemon's S3 client builder returned no S3 client");
    };
    let conf = client
        .config()
        .to_builder()
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(4))
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// `--source`, or the daemon's destination.
async fn open_source(arg: Option<&str>, s3: &S3Args, need_bucket: bool) -> anyhow::Result<Source> {
    // An s3:// source still takes the endpoint, region and path style from
    // the configuration; the bucket and prefix come from the URL.
    let mut s3 = s3.clone();
    if let Some(url) = arg.filter(|a| a.starts_with("s3://")) {
        let (bucket, prefix) = parse_s3_url(url)
            .with_context(|| format!("invalid --source {url:?}: expected s3://BUCKET[/PREFIX]"))?;
        s3.s3_bucket = Some(bucket);
        s3.s3_prefix = Some(prefix);
    }
    let cfg = daemon_settings(&s3)?;
    match (arg, &cfg.s3) {
        (Some(dir), _) if !dir.starts_with("s3://") => {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                bail!(
                    "--source {}: no such directory (give the daemon's outbox directory, or s3://BUCKET/PREFIX)",
                    dir.display()
                );
            }
            Ok(Source::Dir(dir))
        }
        (_, Some(s3cfg)) => Ok(Source::S3 {
            client: s3_client(&cfg, &s3cfg.bucket, &s3cfg.prefix).await?,
            bucket: s3cfg.bucket.clone(),
            prefix: s3cfg.prefix.clone(),
            read_timeout: cfg.s3_timeout,
        }),
        (_, None) if need_bucket => bail!(
            "no bucket: pass --source s3://BUCKET[/PREFIX] or configure the daemon's bucket (TELEMETRY_S3_BUCKET, or [s3] bucket in the config file)"
        ),
        (_, None) => {
            if !cfg.outbox_dir.is_dir() {
                bail!(
                    "no --source given, no bucket configured, and the daemon's outbox {} does not exist; pass --source DIR or --source s3://BUCKET/PREFIX",
                    cfg.outbox_dir.display()
                );
            }
            Ok(Source::Dir(cfg.outbox_dir.clone()))
        }
    }
}

async fn report_main(args: ReportArgs) -> anyhow::Result<()> {
    let period = match (&args.quarter, &args.from, &args.to) {
        (Some(q), _, _) => Period::quarter(q)?,
        (None, Some(from), Some(to)) => Period::range(from, to)?,
        _ => bail!("give --quarter YYYYQn, or --from and --to"),
    };
    let out = args.out.clone().context("--out DIR is required")?;
    let source = open_source(args.source.as_deref(), &args.s3, false).await?;
    let product = match &args.product {
        Some(p) => p.clone(),
        None => {
            let products = source
                .products()
                .await
                .context("cannot find the products in the source")?;
            match products.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "no batches under {} (no v1/product=*/ folders); is --source right?",
                    source.describe()
                ),
                many => bail!(
                    "{} holds several products ({}); choose one with --product",
                    source.describe(),
                    many.join(", ")
                ),
            }
        }
    };
    // The name becomes part of a key prefix: nothing that could leave it.
    if product.is_empty() || product.contains(['/', '\\']) || product.starts_with('.') {
        bail!("invalid product name {product:?}");
    }
    let last_dt = period.to.plus(args.late_days as i64);
    let objects = source
        .list(&product, period.from, last_dt)
        .await
        .context("cannot list the batches")?;
    if objects.is_empty() {
        bail!(
            "no batch objects for product {product} filed between {} and {last_dt} under {}",
            period.from,
            source.describe()
        );
    }
    let show = !args.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    // A second ago, so the first progress line shows at once; on a clock
    // that started less than a second ago (Instant may count from boot),
    // now, which only delays that first line.
    let mut last_shown = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    let mut progress = |done: u64, total: u64, bytes: u64| {
        if show && (done == total || last_shown.elapsed() >= Duration::from_millis(100)) {
            last_shown = Instant::now();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\rreading {done}/{total} objects, {:.1} MB",
                bytes as f64 / 1e6
            );
            if done == total {
                let _ = writeln!(err);
            }
        }
    };
    let agg = telemetry_report::aggregate(&source, &objects, &period, &mut progress).await?;
    let report =
        telemetry_report::publish::publish(&agg, &product, &period, args.late_days, args.k);
    let written = telemetry_report::output::write_all(&report, &out)?;
    let s = &report.source;
    eprintln!(
        "telemetry-report: {product} {}: read {} objects ({:.1} MB, {} lines, {} duplicates ignored, {} outside the period) in {:.1}s; wrote {} files to {}",
        period.label,
        s.objects,
        s.bytes as f64 / 1e6,
        s.lines,
        s.duplicates,
        s.outside_period,
        started.elapsed().as_secs_f64(),
        written.len(),
        out.display()
    );
    Ok(())
}

async fn retention_main(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let source = match args.source.as_deref() {
        Some(s) if !s.starts_with("s3://") => {
            bail!("--source {s:?}: retention needs a bucket, s3://BUCKET[/PREFIX]")
        }
        s => open_source(s, &args.s3, true).await?,
    };
    let Source::S3 {
        client,
        bucket,
        prefix,
        ..
    } = source
    else {
        bail!("retention needs a bucket, not a directory");
    };
    let rule = retention::rule_for(&prefix);
    if args.apply {
        let kept = retention::apply(&client, &bucket, &rule).await?;
        // Read it back: some stores accept a configuration they then
        // ignore in part.
        match retention::check(&client, &bucket, &rule).await? {
            Check::InPlace => {
                println!(
                    "applied lifecycle rule {:?} to s3://{bucket}: objects under {:?} expire after {} days ({kept} other rule(s) kept)",
                    rule.id, rule.filter.prefix, rule.expiration.days
                );
                Ok(ExitCode::SUCCESS)
            }
            other => bail!("s3://{bucket} accepted the lifecycle rule but reads back {other:?}"),
        }
    } else if args.check {
        match retention::check(&client, &bucket, &rule).await? {
            Check::InPlace => {
                println!(
                    "ok: s3://{bucket} expires objects under {:?} after {} days (rule {:?})",
                    rule.filter.prefix, rule.expiration.days, rule.id
                );
                Ok(ExitCode::SUCCESS)
            }
            Check::Missing => {
                println!("missing: s3://{bucket} has no lifecycle rule {:?}; run `telemetry-report retention --apply`", rule.id);
                Ok(ExitCode::from(EXIT_NOT_IN_PLACE))
            }
            Check::Different(found) => {
                println!(
                    "different: s3://{bucket} has rule {:?} but not as shipped; run `telemetry-report retention --apply`.\nfound:\n{found}\nexpected:\n{}",
                    rule.id,
                    retention::to_json(&rule)
                );
                Ok(ExitCode::from(EXIT_NOT_IN_PLACE))
            }
        }
    } else {
        println!("{}", retention::to_json(&rule));
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(
            parse_s3_url("s3://b/x/y/"),
            Some(("b".into(), "x/y".into()))
        );
        assert_eq!(parse_s3_url("s3:///x"), None);
        assert_eq!(parse_s3_url("/tmp/x"), None);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
