//! `telemetry-report`: publish a period's anonymous aggregates, or manage
//! the bucket's five-year retention rule.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};
use telemetry_report::output;
use telemetry_report::output::plural;
use telemetry_report::period::{Day, Period};
use telemetry_report::publish::{self, Completeness, Privacy, MIN_K};
use telemetry_report::retention::{self, Check};
use telemetry_report::source::Source;

#[derive(Parser)]
#[command(
    name = "telemetry-report",
    version,
    about = "Publish anonymous usage aggregates from uploaded telemetry batches (report.json, CSVs, a static index.html), and manage the bucket's five-year retention rule.",
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  telemetry-report --source s3://my-bucket/telemetry --quarter 2026Q4 --out public/2026Q4\n  telemetry-report --source ~/.local/state/telemetry/outbox --from 2026-10-01 --to 2026-10-31 --out oct\n  telemetry-report --source ~/.local/state/telemetry/outbox --quarter 2026Q4 --preview\n  telemetry-report retention --check\n  telemetry-report catalog-sql --product cfdev > catalog.sql\n  telemetry-report compact --into s3://my-bucket/telemetry-mirror --quarter 2026Q4\n\nS3 settings and credentials are the daemon's: flags, then TELEMETRY_S3_* variables, then the [s3] table of the config file; credentials from the standard AWS chain. With --source DIR no configuration is read.\nEvery published number counts at least k distinct machines (--k, default 5, at least 2: with 1 a number could describe a single machine); no machine ID is ever written. With fewer than k machines every table is suppressed: to look at your own data, use --preview, whose output is marked and must never be published. Publish one series of periods that do not overlap (quarters, or months, not both): two reports over overlapping periods can be subtracted to reveal groups under k.\nA period is complete once its last day plus --late-days has passed (UTC); before that the report is refused unless --allow-partial is given."
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
    /// Print the product's catalogue as a SQL view (report_catalog) for sql/report.sql's value tables.
    #[command(
        after_help = "Examples:\n  telemetry-report catalog-sql --product cfdev > catalog.sql\n  telemetry-report catalog-sql --catalog catalog/cfdev.toml --dialect spark > catalog.spark.sql\n\nRun its output before sql/report.sql (or sql/report.spark.sql), after the table definition: the value tables then count exactly what telemetry-report counts."
    )]
    CatalogSql(CatalogSqlArgs),
    /// Copy each day's small batch objects into a few large ones, in a mirror with the same layout that the report and the SQL engines read instead.
    #[command(
        after_help = "Examples:\n  telemetry-report compact --into s3://my-bucket/telemetry-mirror --quarter 2026Q4\n  telemetry-report compact --source ~/.local/state/telemetry/outbox --into /srv/mirror --from 2026-11-01 --to 2026-11-30\n\nReads the days --from to --to plus --late-days, as the report does, and writes each as compacted-RUN-NNNN.ndjson.zst parts under INTO/v1/product=P/dt=D/ (with _sources, the objects it read), replacing the day's earlier parts; an unchanged day is skipped. The raw batches are never changed or deleted. Then: telemetry-report --source INTO ..., and the SQL table definitions with INTO as the location."
    )]
    Compact(CompactArgs),
}

#[derive(Args)]
struct CompactArgs {
    /// The mirror: a directory (created if missing) or s3://BUCKET/PREFIX, not overlapping the source.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    into: String,
    /// Where the raw batches are, as for the report. Default: the daemon's configured bucket, else its outbox.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    source: Option<String>,
    /// Product to compact. Default: the only product in the source.
    #[arg(long, value_name = "NAME")]
    product: Option<String>,
    #[command(flatten)]
    period: PeriodArgs,
    /// No line per day.
    #[arg(long)]
    quiet: bool,
    /// Leave out an object that is not zstd or has a line that is not a valid event, whole, and go on (listed on stderr), as the report's --skip-damaged does, instead of stopping the day; for a bucket clients may write to (broker or anonymous), where one hand-made object would otherwise stop every compaction of its day.
    #[arg(long)]
    skip_damaged: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args)]
struct CatalogSqlArgs {
    /// The product's event catalogue (its manifest, e.g. catalog/cfdev.toml).
    #[arg(long, value_name = "FILE", required_unless_present = "product")]
    catalog: Option<PathBuf>,
    /// The product, for its built-in catalogue (only cfdev has one); with --catalog, checked against it.
    #[arg(long, value_name = "NAME")]
    product: Option<String>,
    /// The SQL it is written in: standard (Athena, Trino, DuckDB: sql/report.sql) or spark (sql/report.spark.sql).
    #[arg(long, value_name = "DIALECT", default_value = "standard", value_parser = ["standard", "spark"])]
    dialect: String,
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
    /// Extra CA certificates (PEM) to trust for S3, added to the platform's roots (default: none). HTTPS_PROXY and NO_PROXY are honoured as by the daemon.
    #[arg(long, env = "TELEMETRY_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
}

/// The period a report (or a compaction) covers, and its grace days.
#[derive(Args)]
struct PeriodArgs {
    /// Calendar quarter, e.g. 2026Q4 (UTC days 2026-10-01 to 2026-12-31).
    #[arg(long, value_name = "YYYYQn", required_unless_present_any = ["from", "to"], conflicts_with_all = ["from", "to"])]
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
}

impl PeriodArgs {
    /// `--quarter`, or `--from` and `--to`.
    fn period(&self) -> anyhow::Result<Period> {
        Ok(match (&self.quarter, &self.from, &self.to) {
            (Some(q), _, _) => Period::quarter(q)?,
            (None, Some(from), Some(to)) => Period::range(from, to)?,
            _ => bail!("give --quarter YYYYQn, or --from and --to"),
        })
    }
}

#[derive(Args)]
struct ReportArgs {
    /// Where the batches are: s3://BUCKET[/PREFIX] or a local outbox directory. Default: the daemon's configured bucket, else its outbox.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    source: Option<String>,
    /// Product to report on (the product= partition). Default: the only product in the source.
    #[arg(long, value_name = "NAME")]
    product: Option<String>,
    /// The product's event catalogue (its manifest, e.g. catalog/cfdev.toml): every enum, bool and int data key it lists is counted by value, and lines with data it does not allow are left out of those counts. Default: the built-in cfdev catalogue for the product cfdev; none (no value tables) for others.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    #[command(flatten)]
    period: PeriodArgs,
    /// Machine IDs whose users asked to be forgotten, one per line (64 hex digits; blank lines and # comments ignored): their lines are left out, like those of IDs with a telemetry_forget marker in the period read. For markers outside it (README: Forgotten IDs).
    #[arg(long, value_name = "FILE")]
    forgotten: Option<PathBuf>,
    /// Directory for report.json, the CSVs and index.html (created if missing). With --preview: where to write the preview's files instead of printing it.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["preview", "json"])]
    out: Option<PathBuf>,
    /// Publish only numbers that count at least this many distinct machines. At least 2: with 1, a published number could describe a single machine (use --preview to see your own data).
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = parse_k, conflicts_with = "preview")]
    k: u64,
    /// Developer preview, NOT FOR PUBLISHING: the same aggregates with no k rule (every count, however few machines). Printed as a table, or with --out written as preview-* files beside PREVIEW-NOT-FOR-PUBLISHING.txt (never report.json or index.html).
    #[arg(long)]
    preview: bool,
    /// With --preview and no --out: print the preview as report.json-shaped JSON instead of a table.
    #[arg(long, requires = "preview", conflicts_with = "out")]
    json: bool,
    /// Write the report although the period or its --late-days have not passed yet; report.json then says "partial": true and when it will be complete. Without it such a run is refused.
    #[arg(long)]
    allow_partial: bool,
    /// Leave out an object that is damaged (not zstd, a line that is not a valid event) and go on, instead of stopping: each object's lines are checked before any is counted, and the skipped objects are listed on stderr. For a bucket that anyone may write to (anonymous mode), where one hand-made object would otherwise stop every report.
    #[arg(long)]
    skip_damaged: bool,
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

/// The day taken as today (`YYYY-MM-DD`, UTC) when deciding whether the
/// period is complete; unset or empty: the system clock. Documented in the
/// README for tests and for checking what a run on another day would do;
/// not in `--help`, since setting it only to get past the partial-period
/// refusal would write `"partial": false` on an incomplete report.
const TODAY_VAR: &str = "TELEMETRY_REPORT_TODAY";

/// The machine IDs of a `--forgotten` file: one per line, 64 lowercase
/// hex digits; blank lines and `#` comments are skipped.
fn read_forgotten(path: &Path) -> anyhow::Result<std::collections::HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--forgotten {}: cannot read it", path.display()))?;
    let mut ids = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() != 64 || !line.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!(
                "--forgotten {} line {}: {line:?} is not a machine ID (64 lowercase hex digits)",
                path.display(),
                n + 1
            );
        }
        ids.insert(line.to_string());
    }
    Ok(ids)
}

/// The catalogue the value tables count against: `path`, checked to be
/// `product`'s, else the built-in one for cfdev, else none.
fn load_catalog(
    path: Option<&std::path::Path>,
    product: &str,
) -> anyhow::Result<Option<telemetry_report::data::Catalog>> {
    use telemetry_report::data::Catalog;
    Ok(match path {
        Some(path) => {
            let m = telemetry_sink::Manifest::load(path)
                .with_context(|| format!("--catalog {}", path.display()))?;
            if m.product != product {
                bail!(
                    "--catalog {}: it is the catalogue of {:?}, not of {product:?}; pass the product's own",
                    path.display(),
                    m.product
                );
            }
            Some(Catalog::from_manifest(&m))
        }
        None if product == "cfdev" => Some(Catalog::from_manifest(
            &telemetry_sink::Manifest::builtin_cfdev(),
        )),
        None => None,
    })
}

/// `catalog-sql`: the catalogue as `report_catalog`, on stdout.
fn catalog_sql_main(args: CatalogSqlArgs) -> anyhow::Result<ExitCode> {
    use telemetry_report::sql::{catalog_view, Dialect};
    let product = match (&args.product, &args.catalog) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => {
            telemetry_sink::Manifest::load(path)
                .with_context(|| format!("--catalog {}", path.display()))?
                .product
        }
        (None, None) => bail!("pass --catalog FILE (the product's manifest) or --product cfdev"),
    };
    let Some(catalog) = load_catalog(args.catalog.as_deref(), &product)? else {
        bail!("no built-in catalogue for {product:?} (only cfdev has one): pass --catalog FILE, the product's manifest");
    };
    let dialect = match args.dialect.as_str() {
        "spark" => Dialect::Spark,
        _ => Dialect::Standard,
    };
    std::io::stdout()
        .write_all(catalog_view(&catalog, dialect).as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `compact`: each day of the period into the mirror.
async fn compact_main(args: CompactArgs) -> anyhow::Result<ExitCode> {
    use telemetry_report::compact::{compact_day, Run, PART_BYTES};
    let period = args.period.period()?;
    let source = open_source("--source", args.source.as_deref(), &args.s3, false).await?;
    let overlap = |into: &Source| {
        anyhow::anyhow!(
            "--into {} overlaps the source {}: the mirror must be somewhere else (another prefix or directory), or the report would read both",
            into.describe(),
            source.describe()
        )
    };
    let into = if args.into.starts_with("s3://") {
        open_source("--into", Some(&args.into), &args.s3, true).await?
    } else {
        // Checked before the directory is made, so a refused mirror leaves
        // nothing behind in the source.
        let path = PathBuf::from(&args.into);
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = std::fs::canonicalize(&parent).with_context(|| {
            format!(
                "--into {}: its parent directory {}",
                args.into,
                parent.display()
            )
        })?;
        let dir = parent.join(
            path.file_name()
                .with_context(|| format!("--into {}: not a directory name", args.into))?,
        );
        let into = Source::Dir(dir.clone());
        if source.overlaps(&into) {
            return Err(overlap(&into));
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("--into {}: cannot create the directory", dir.display()))?;
        into
    };
    if source.overlaps(&into) {
        return Err(overlap(&into));
    }
    let product = choose_product(&source, args.product.as_deref()).await?;
    let work = tempfile::tempdir().context(
        "cannot create a temporary directory for the parts (set TMPDIR to a disk with a day's compressed size free)",
    )?;
    // This run's name for its parts: a later run's parts never overwrite
    // an earlier one's (see compact's module docs).
    let run = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let (mut days, mut unchanged, mut objects, mut bytes_in, mut bytes_out, mut lines) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut skipped = 0u64;
    let last = period.last_dt(args.period.late_days);
    let mut day = period.from;
    while day <= last {
        let damaged = if args.skip_damaged {
            telemetry_report::Damaged::Skip
        } else {
            telemetry_report::Damaged::Stop
        };
        let done = compact_day(
            &source,
            &into,
            &product,
            day,
            Run {
                work: work.path(),
                part_bytes: PART_BYTES,
                name: &run,
                damaged,
            },
        )
        .await
        .map_err(|e| match e {
            telemetry_report::compact::CompactError::Read(
                telemetry_report::source::SourceError::Corrupt { .. }
                | telemetry_report::source::SourceError::Line { .. },
            ) => anyhow::anyhow!("{e}; or pass --skip-damaged to leave such objects out"),
            other => other.into(),
        })
        .with_context(|| format!("dt={day}"))?;
        if let Some(d) = done {
            for why in &d.skipped {
                eprintln!("telemetry-report: dt={day}: left out a damaged object whole (--skip-damaged): {why}");
            }
            skipped += d.skipped.len() as u64;
            let stale = if d.stale > 0 {
                format!(" ({} old parts deleted)", d.stale)
            } else {
                String::new()
            };
            if !args.quiet {
                if d.objects == 0 {
                    println!("dt={day}: no raw objects any more: its parts are deleted{stale}");
                } else if d.unchanged {
                    println!(
                        "dt={day}: {} objects, unchanged since compacted{stale}",
                        d.objects
                    );
                } else {
                    println!(
                        "dt={day}: {} objects, {:.1} MB, {} lines -> {} part{}, {:.1} MB{stale}",
                        d.objects,
                        d.bytes_in as f64 / 1e6,
                        d.lines,
                        d.parts,
                        if d.parts == 1 { "" } else { "s" },
                        d.bytes_out as f64 / 1e6,
                    );
                }
            }
            if d.unchanged {
                unchanged += 1;
            } else if d.objects > 0 {
                days += 1;
                objects += d.objects;
                bytes_in += d.bytes_in;
                bytes_out += d.bytes_out;
                lines += d.lines;
            }
        }
        day = day.plus(1);
    }
    let left_out = if skipped > 0 {
        format!(
            "; {} left out whole (named above)",
            plural(skipped, "damaged object", "damaged objects")
        )
    } else {
        String::new()
    };
    eprintln!(
        "telemetry-report: compacted {days} days of {product} from {} into {} ({unchanged} unchanged): {objects} objects ({:.1} MB) and {lines} lines into {:.1} MB{left_out}",
        source.describe(),
        into.describe(),
        bytes_in as f64 / 1e6,
        bytes_out as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// `--product`, else the only product in `source`; checked, since the
/// name becomes part of a key prefix.
async fn choose_product(source: &Source, arg: Option<&str>) -> anyhow::Result<String> {
    let product = match arg {
        Some(p) => p.to_string(),
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
    // Nothing that could leave the prefix.
    if product.is_empty() || product.contains(['/', '\\']) || product.starts_with('.') {
        bail!("invalid product name {product:?}");
    }
    Ok(product)
}

/// `--k`: a whole number, at least [`MIN_K`].
fn parse_k(s: &str) -> Result<u64, String> {
    let k: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of machines, at least {MIN_K}, e.g. 5"))?;
    if k < MIN_K {
        return Err(format!(
            "k must be at least {MIN_K}: with k = 1 a published number could describe a single machine. To look at your own data with no k rule, use --preview (its output is marked and not for publishing)"
        ));
    }
    Ok(k)
}

/// Today (UTC): [`TODAY_VAR`] if set, else the day of `clock`.
fn today(env: impl Fn(&str) -> Option<OsString>, clock: SystemTime) -> anyhow::Result<Day> {
    match env(TODAY_VAR).filter(|v| !v.is_empty()) {
        Some(v) => {
            let s = v.to_string_lossy();
            Day::parse(s.trim()).with_context(|| {
                format!("environment variable {TODAY_VAR} (the day taken as today; unset it to use the system clock)")
            })
        }
        None => Ok(Day::of(clock)),
    }
}

fn main() -> ExitCode {
    // An empty TELEMETRY_* variable counts as unset.
    telemetry_platform::proc::forget_empty_vars("TELEMETRY_");
    if let Some(code) = telemetry_clidoc::generate_if_asked(
        std::env::args_os(),
        <Cli as clap::CommandFactory>::command,
    ) {
        return ExitCode::from(code);
    }
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
        Some(Command::CatalogSql(args)) => catalog_sql_main(args),
        Some(Command::Compact(args)) => runtime.block_on(compact_main(args)),
        None => runtime
            .block_on(report_main(cli.report))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "telemetry-report: error: {}",
                telemetry_sink::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// The daemon's destination settings (its config file's `[s3]` table and
/// outbox, the same flags and variables); the daemon's other settings are
/// not read. `needed_for` says what the run takes from it, for the error.
fn destination_settings(
    s3: &S3Args,
    needed_for: &str,
) -> anyhow::Result<telemetry_sink::settings::Destination> {
    let overrides = telemetry_sink::settings::Overrides {
        config: s3.config.clone(),
        bucket: s3.s3_bucket.clone(),
        prefix: s3.s3_prefix.clone(),
        endpoint: s3.s3_endpoint.clone(),
        region: s3.s3_region.clone(),
        path_style: s3.s3_path_style.clone(),
        timeout: s3.s3_timeout.clone(),
        ca_bundle: s3.ca_bundle.clone(),
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    #[cfg(unix)]
    let uid = unsafe { libc::getuid() };
    // Windows has no uid; its default paths do not use one.
    #[cfg(not(unix))]
    let uid = 0;
    telemetry_sink::settings::resolve(&overrides, |k| std::env::var_os(k), uid).with_context(|| {
        format!("cannot read {needed_for} from the telemetry configuration (to go on: fix the file or variable named next, point --config or TELEMETRY_CONFIG at another file, or give --source DIR, which needs no configuration)")
    })
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
    cfg: &telemetry_sink::settings::Destination,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<aws_sdk_s3::Client> {
    let s3 = match &cfg.s3 {
        Some(s3) => telemetry_sink::S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            ..s3.clone()
        },
        None => telemetry_sink::S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            path_style: false,
        },
    };
    let telemetry_sink::Sink::S3 { client, .. } =
        telemetry_sink::Sink::s3(&s3, cfg.s3_timeout, &cfg.net).await
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
/// `flag` names the argument in errors (`--source`, `--into`).
async fn open_source(
    flag: &str,
    arg: Option<&str>,
    s3: &S3Args,
    need_bucket: bool,
) -> anyhow::Result<Source> {
    // A directory needs no settings, so the configuration is not read at
    // all: a broken config file or S3 variable cannot stop a report over a
    // local outbox (issue #12).
    if let Some(dir) = arg.filter(|a| !a.starts_with("s3://")) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!(
                "{flag} {}: {} (give the daemon's outbox directory, or s3://BUCKET/PREFIX)",
                dir.display(),
                if dir.exists() {
                    "not a directory"
                } else {
                    "no such directory"
                }
            );
        }
        return Ok(Source::Dir(dir));
    }
    // An s3:// source still takes the endpoint, region and path style from
    // the configuration; the bucket and prefix come from the URL.
    let mut s3 = s3.clone();
    let needed_for = match arg {
        Some(url) => {
            let (bucket, prefix) = parse_s3_url(url).with_context(|| {
                format!("invalid {flag} {url:?}: expected s3://BUCKET[/PREFIX]")
            })?;
            // Checked here, so the error names this flag rather than the
            // bucket setting it is passed on as.
            if let Err(why) = telemetry_sink::s3::parse_bucket(&bucket) {
                bail!("invalid {flag} {url:?}: the bucket {bucket:?}: {why}");
            }
            s3.s3_bucket = Some(bucket);
            s3.s3_prefix = Some(prefix);
            format!("the S3 endpoint, region and path style for {flag} {url}")
        }
        None => "the default source (no --source given: the configured bucket, else the daemon's outbox)".to_string(),
    };
    let cfg = destination_settings(&s3, &needed_for)?;
    match &cfg.s3 {
        Some(s3cfg) => Ok(Source::S3 {
            client: s3_client(&cfg, &s3cfg.bucket, &s3cfg.prefix).await?,
            bucket: s3cfg.bucket.clone(),
            prefix: s3cfg.prefix.clone(),
            read_timeout: cfg.s3_timeout,
        }),
        None if need_bucket => bail!(
            "no bucket: pass --source s3://BUCKET[/PREFIX] or configure the daemon's bucket (TELEMETRY_S3_BUCKET, or [s3] bucket in the config file)"
        ),
        None => {
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
    let period = args.period.period()?;
    let privacy = if args.preview {
        Privacy::Preview
    } else {
        Privacy::K(args.k)
    };
    if !args.preview && args.out.is_none() {
        bail!("--out DIR is required");
    }
    // Decided before anything is read: a refused run costs nothing.
    let today = today(|k| std::env::var_os(k), SystemTime::now())?;
    let completeness = if period.is_complete(args.period.late_days, today) {
        Completeness::Complete
    } else {
        let complete_on = period.complete_on(args.period.late_days);
        // A preview is never published, so it may look at a period that
        // is still running (it is marked partial all the same).
        if !args.allow_partial && !args.preview {
            bail!(
                "{} is not complete yet: batches filed up to {} (its last day, {}, plus --late-days {}) are read, and today is {today} (UTC), so more can still arrive. Run the report on or after {complete_on}, or pass --allow-partial to write it now marked \"partial\": true (or use --preview to look without publishing)",
                period.label,
                period.last_dt(args.period.late_days),
                period.to,
                args.period.late_days
            );
        }
        Completeness::Partial { complete_on }
    };
    if let Some(out) = &args.out {
        output::check_dir(out, args.preview)?;
    }
    let source = open_source("--source", args.source.as_deref(), &args.s3, false).await?;
    let product = choose_product(&source, args.product.as_deref()).await?;
    let last_dt = period.last_dt(args.period.late_days);
    let (objects, strays) = source
        .list_with_strays(&product, period.from, last_dt)
        .await
        .context("cannot list the batches")?;
    if let Some(first) = strays.first() {
        eprintln!(
            "telemetry-report: warning: not read: {} under the period's days that {} (*.ndjson.zst), e.g. {first}",
            plural(strays.len() as u64, "file", "files"),
            if strays.len() == 1 {
                "is not a batch object"
            } else {
                "are not batch objects"
            }
        );
    }
    if objects.is_empty() {
        // A mistyped --product looks the same: say which products there are.
        let there = match source.products().await {
            Ok(p) if !p.contains(&product) && !p.is_empty() => {
                format!(" (products there: {})", p.join(", "))
            }
            _ => String::new(),
        };
        bail!(
            "no batch objects for product {product} filed between {} and {last_dt} under {}{there}",
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
    let mut read_twice = false;
    let mut progress = |pass, done: u64, total: u64, bytes: u64| {
        let again = pass == telemetry_report::Pass::WithoutForgotten;
        read_twice |= again;
        if show && (done == total || last_shown.elapsed() >= Duration::from_millis(100)) {
            last_shown = Instant::now();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{} {done}/{total} objects, {:.1} MB",
                if again {
                    "reading again without the forgotten machines:"
                } else {
                    "reading"
                },
                bytes as f64 / 1e6
            );
            if done == total {
                let _ = writeln!(err);
            }
        }
    };
    let catalog = load_catalog(args.catalog.as_deref(), &product)?;
    let forgotten = match &args.forgotten {
        Some(path) => read_forgotten(path)?,
        None => Default::default(),
    };
    let agg = telemetry_report::aggregate(
        &source,
        &objects,
        &period,
        catalog,
        forgotten,
        if args.skip_damaged {
            telemetry_report::Damaged::Skip
        } else {
            telemetry_report::Damaged::Stop
        },
        &mut progress,
    )
    .await
    .map_err(|e| match e {
        // The report (not compact) can leave such an object out.
        telemetry_report::source::SourceError::Corrupt { .. }
        | telemetry_report::source::SourceError::Line { .. } => {
            anyhow::anyhow!("{e}, or pass --skip-damaged to leave such objects out")
        }
        other => other.into(),
    })?;
    let report = publish::publish(
        &agg,
        &product,
        &period,
        args.period.late_days,
        privacy,
        completeness,
    );
    for w in report.warnings.iter().chain(&report.unlisted) {
        eprintln!("telemetry-report: warning: {w}");
    }
    let wrote = match &args.out {
        Some(out) => {
            let written = output::write_all(&report, out)?;
            format!(
                "wrote {} {}files to {}",
                written.len(),
                if report.preview {
                    "preview (NOT FOR PUBLISHING) "
                } else {
                    ""
                },
                out.display()
            )
        }
        None => {
            let text = if args.json {
                output::json(&report)
            } else {
                output::preview_text(&report)
            };
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("cannot write the preview to stdout")?;
            "printed the preview (NOT FOR PUBLISHING)".to_string()
        }
    };
    let s = &report.source;
    eprintln!(
        "telemetry-report: {product} {}: read {} objects from {} ({:.1} MB, {} lines, {} duplicates ignored, {} outside the period) in {:.1}s{}; {wrote}",
        period.label,
        s.objects,
        source.describe(),
        s.bytes as f64 / 1e6,
        s.lines,
        s.duplicates,
        s.outside_period,
        started.elapsed().as_secs_f64(),
        if read_twice {
            ", each twice (a telemetry_forget marker: the second time without the machines it names)"
        } else {
            ""
        },
    );
    if !agg.skipped.is_empty() {
        eprintln!(
            "telemetry-report: left out {} whole (--skip-damaged):",
            plural(
                agg.skipped.len() as u64,
                "damaged object",
                "damaged objects"
            )
        );
        for why in agg.skipped.iter().take(20) {
            eprintln!("  {why}");
        }
        if agg.skipped.len() > 20 {
            eprintln!("  … and {} more", agg.skipped.len() - 20);
        }
    }
    if s.forgotten_machines > 0 {
        eprintln!(
            "telemetry-report: left out {} of {} whose users asked to be forgotten ({}); delete their lines from the bucket (README: forgotten IDs)",
            plural(s.forgotten_lines, "line", "lines"),
            plural(s.forgotten_machines, "machine ID", "machine IDs"),
            if args.forgotten.is_some() {
                "a telemetry_forget marker, or listed in --forgotten"
            } else {
                "telemetry_forget"
            }
        );
    }
    match agg.data.catalog() {
        Some(c) if report.data_left_out > 0 => eprintln!(
            "telemetry-report: {} lines carried data the catalogue {} does not allow (another catalogue version, or hand-made): counted as events, left out of every value table",
            report.data_left_out, c.source
        ),
        Some(_) => {}
        None => eprintln!(
            "telemetry-report: no catalogue for {product}: data values are not counted (pass --catalog FILE, the product's manifest)"
        ),
    }
    Ok(())
}

async fn retention_main(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let source = match args.source.as_deref() {
        Some(s) if !s.starts_with("s3://") => {
            bail!("--source {s:?}: retention needs a bucket, s3://BUCKET[/PREFIX]")
        }
        s => open_source("--source", s, &args.s3, true).await?,
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
    // The rule adds the layout's `v1/` itself: a prefix that already ends
    // in it would give a rule for `…/v1/v1/`, which covers nothing.
    let trimmed = prefix.trim_matches('/');
    if trimmed == "v1" || trimmed.ends_with("/v1") {
        let parent = trimmed.strip_suffix("v1").unwrap_or_default();
        // Blame what named the prefix: --source, else the daemon's setting.
        let named = match args.source.as_deref() {
            Some(_) => format!("--source s3://{bucket}/{trimmed}"),
            None => format!(
                "the configured prefix {trimmed:?} (TELEMETRY_S3_PREFIX, --s3-prefix or [s3] prefix)"
            ),
        };
        bail!(
            "{named}: give the prefix the daemons upload under, without the layout's own v1 (the rule adds v1/ itself): --source s3://{bucket}/{}",
            parent.trim_end_matches('/')
        );
    }
    let rule = retention::rule_for(&prefix);
    if args.apply || args.check {
        // Nothing there is fine on a new bucket, but also what a mistyped
        // prefix looks like: say so.
        let listed = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&rule.filter.prefix)
            .max_keys(1)
            .send()
            .await;
        if listed.is_ok_and(|l| l.key_count().unwrap_or(0) == 0) {
            eprintln!(
                "note: no object under s3://{bucket}/{} yet; if daemons have uploaded, check --source (the prefix before v1/)",
                rule.filter.prefix
            );
        }
    }
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
        // The command to paste, naming the bucket as this run was told it.
        let apply = match args.source.as_deref() {
            Some(src) => format!("telemetry-report retention --apply --source {src}"),
            None => "telemetry-report retention --apply".to_string(),
        };
        match retention::check(&client, &bucket, &rule).await? {
            Check::InPlace => {
                println!(
                    "ok: s3://{bucket} expires objects under {:?} after {} days (rule {:?})",
                    rule.filter.prefix, rule.expiration.days, rule.id
                );
                Ok(ExitCode::SUCCESS)
            }
            Check::Missing => {
                println!(
                    "missing: s3://{bucket} has no lifecycle rule {:?}; run `{apply}`",
                    rule.id
                );
                Ok(ExitCode::from(EXIT_NOT_IN_PLACE))
            }
            Check::Different(found) => {
                println!(
                    "different: s3://{bucket} has rule {:?} but not as shipped; run `{apply}`.\nfound:\n{found}\nexpected:\n{}",
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

    /// `--json` without `--preview` names `--preview` alone, not `--out`
    /// (which `--json` cannot be used with).
    #[test]
    fn json_without_preview_asks_for_preview_only() {
        let err = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        };
        let e = err(&["r", "--json", "--quarter", "2025Q1", "--source", "/tmp"]);
        assert!(e.contains("--preview") && !e.contains("--out"), "{e}");
        let e = err(&["r", "--quarter", "2025Q1", "--source", "/tmp"]);
        assert!(e.contains("--out"), "{e}");
    }

    #[test]
    fn k_is_at_least_two_and_the_refusal_points_to_preview() {
        assert_eq!(parse_k("2"), Ok(2));
        assert_eq!(parse_k(" 50 "), Ok(50));
        let one = parse_k("1").unwrap_err();
        assert!(
            one.contains("at least 2") && one.contains("--preview"),
            "{one}"
        );
        assert!(parse_k("0").is_err());
        assert!(parse_k("five").unwrap_err().contains("e.g. 5"));
    }

    #[test]
    fn today_is_the_clock_s_utc_day_unless_the_variable_sets_it() {
        let clock = std::time::UNIX_EPOCH + Duration::from_secs(20_423 * 86_400 + 3600);
        let none = |_: &str| None;
        assert_eq!(today(none, clock).unwrap(), Day(20_423));
        let set = |v: &'static str| move |k: &str| (k == TODAY_VAR).then(|| OsString::from(v));
        assert_eq!(
            today(set("2027-01-15"), clock).unwrap().to_string(),
            "2027-01-15"
        );
        assert_eq!(today(set(""), clock).unwrap(), Day(20_423), "empty: unset");
        let err = format!("{:#}", today(set("tomorrow"), clock).unwrap_err());
        assert!(
            err.contains(TODAY_VAR) && err.contains("\"tomorrow\"") && err.contains("YYYY-MM-DD"),
            "{err}"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
