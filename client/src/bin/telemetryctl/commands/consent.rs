//! `telemetryctl consent [PRODUCT] [on|off|local] [--prompt]`.
//!
//! Works without the daemon: the user's consent file is the source of
//! truth, read and written here; a running daemon is told to apply a
//! change at once. The `--json` outputs are built from telemetry-proto's
//! own types (`ProductConsent`, `ConsentReport`), so they have the shape
//! and spelling of `status --json` and of the daemon's replies.

use super::print_json;
use crate::Failure;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;
use telemetry_client::consent::{self, ConsentPaths};
use telemetry_client::{Client, ClientError, ConsentReport, Layer, Mode, ProductConsent};

/// Flags of `consent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The product, e.g. cfdev. Without it, every product in the consent files.
    product: Option<String>,
    /// The new mode: on (collect and upload), local (collect, never upload) or off.
    #[arg(value_parser = ["on", "off", "local"])]
    mode: Option<String>,
    /// Ask the user once, on a terminal, default No; for a CLI's first
    /// start. Not on a terminal (stdin or stderr): asks nothing, records
    /// nothing, says so on stderr, exits 0. Already decided, or forced off
    /// by the system file or the environment: asks nothing, prints nothing.
    /// With --json the output's "prompt" field says which: asked,
    /// already_decided, forced_off, not_a_terminal or no_answer.
    #[arg(long, conflicts_with = "mode", requires = "product")]
    prompt: bool,
    /// Prompt text to show instead of the generic one.
    #[arg(long, requires = "prompt", value_name = "TEXT")]
    text: Option<String>,
    /// The calling CLI's version, recorded in the final telemetry_off event.
    #[arg(long, env = "TELEMETRY_BUILD", default_value = "unknown")]
    build: String,
    /// Print the result as JSON: the serde form of telemetry-proto's
    /// ProductConsent (a list of them without a product); after a change or
    /// --prompt, its ConsentReport plus "daemon_notified" (and "prompt").
    #[arg(long)]
    pub json: bool,
}

fn generic_prompt(product: &str) -> String {
    format!(
        "{product} would like to collect anonymous usage telemetry to learn which features are used.\n\
         Each event holds: the event name, a little catalogued data, a UTC timestamp, an anonymous\n\
         machine ID (a SHA-256 hash, never your machine's real ID), your OS and the version.\n\
         No names, paths, IP addresses or host names are collected."
    )
}

/// Always shown after the prompt text, whoever wrote it: how to change the
/// answer later and how to see what is kept.
fn how_to_change(product: &str) -> String {
    format!(
        "Change your mind at any time: `telemetryctl consent {product} off` (or `local`: keep it on\n\
         this machine only); see exactly what is kept: `telemetryctl show`."
    )
}

/// What `--prompt` did: the `prompt` field of the `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Prompted {
    /// Asked on the terminal; the answer is recorded (`mode` says which).
    Asked,
    /// The user's file already has a decision for the product: not asked
    /// again, nothing changed.
    AlreadyDecided,
    /// The system file or the environment forces the product off: not
    /// asked, nothing recorded.
    ForcedOff,
    /// stdin or stderr is not a terminal, so nobody could answer: not
    /// asked, nothing recorded; ask again at the next start.
    NotATerminal,
    /// Asked, but reading the answer failed: nothing recorded.
    NoAnswer,
}

/// The `--json` output after a change or a `--prompt`: the daemon's
/// `ConsentReport` when it applied the change, else one made from the
/// files (nothing purged, no final event), and what happened.
#[derive(serde::Serialize)]
struct Changed {
    #[serde(flatten)]
    report: ConsentReport,
    /// Whether the daemon applied the change now (else at its next start).
    daemon_notified: bool,
    /// With `--prompt`: what it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<Prompted>,
}

/// Run `consent`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let paths = ConsentPaths::from_env();
    let Some(product) = &args.product else {
        return list(socket, &paths, args.json);
    };
    // `consent off` (the product left out) would show a product named
    // "off" and exit 0: the user would believe telemetry is off.
    if Mode::parse(product).is_some() {
        return Err(Failure::usage(format!(
            "'{product}' is a setting, not a product: name the product first, e.g. `telemetryctl consent PRODUCT {product}`; `telemetryctl consent` lists the products here"
        )));
    }
    let limits = telemetry_proto::Limits::default();
    if let Err(e) = telemetry_proto::validate_name("product", product, &limits) {
        return Err(Failure::usage(format!("{e}; e.g. cfdev")));
    }
    if args.prompt {
        return match prompt(socket, product, args, &paths) {
            (Prompted::Asked, Some(mode)) => change(socket, args, product, mode, &paths, true),
            (why, _) => not_recorded(product, why, &paths, args.json),
        };
    }
    match &args.mode {
        Some(m) => {
            let mode = Mode::parse(m).ok_or_else(|| {
                Failure::usage(format!(
                    "invalid value '{m}' for MODE: expected on, off or local"
                ))
            })?;
            change(socket, args, product, mode, &paths, false)
        }
        None => show_one(socket, product, &paths, args.json),
    }
}

/// When this shell's environment keeps `local` off but the running daemon
/// (its view `daemon`) has it otherwise: the daemon was started elsewhere,
/// does not see this environment, and goes by the file, so CLIs run from
/// another shell still send events. Said, or the user would believe it off.
fn env_note(local: &ProductConsent, daemon: &[ProductConsent]) -> Option<String> {
    if local.layer != Layer::Environment {
        return None;
    }
    let d = daemon.iter().find(|d| d.product == local.product)?;
    (d.mode != local.mode).then(|| {
        format!(
            "note: telemetryd does not see this shell's environment and has {p} {}: CLIs run from a shell without it still send events; `telemetryctl consent {p} off` stops them all",
            d.mode,
            p = local.product
        )
    })
}

/// `product`'s consent as this process sees it (its environment, the
/// files).
fn local(product: &str, paths: &ConsentPaths) -> ProductConsent {
    let (mode, layer) = consent::resolve(product, paths);
    ProductConsent::new(product.to_string(), mode, layer)
}

/// Every product's consent as a running daemon sees it, with its manifest
/// (empty if no daemon answers).
pub(crate) fn daemon_view(socket: &Path) -> Vec<ProductConsent> {
    daemon_view_and_file(socket).0
}

/// [`daemon_view`], and whether the user consent file the daemon follows
/// is this user's `paths.user` (`true` when no daemon answers): a
/// machine-wide daemon follows its owner's, whose consented versions are
/// not this user's.
fn daemon_view_and_file(socket: &Path) -> (Vec<ProductConsent>, Option<String>) {
    Client::connect(socket)
        .and_then(|mut c| c.status(Duration::from_secs(5)))
        .map(|s| (s.consent, Some(s.consent_file)))
        .unwrap_or_default()
}

/// A warning when a running daemon (its view `daemon`, empty when none
/// answered) has no manifest for `product`: most likely a misspelt name,
/// which would otherwise be recorded in silence while the product the user
/// meant stays as it was. `None` when it has one, or nobody can tell.
pub(crate) fn unknown_product(product: &str, daemon: &[ProductConsent]) -> Option<String> {
    let known: Vec<&str> = daemon
        .iter()
        .filter(|c| !c.manifest.is_empty() || c.manifest_error.is_some())
        .map(|c| c.product.as_str())
        .collect();
    if daemon.is_empty() || known.contains(&product) {
        return None;
    }
    let listed = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    Some(format!(
        "telemetryd has no manifest for product {product:?} (products with one: {listed}); check the name"
    ))
}

/// `pc` (this process's view of the files) with what the daemon knows of
/// the product's manifest; with no daemon (`daemon` empty), what the
/// manifest on the search path says of itself, whatever the mode.
fn with_manifest(mut pc: ProductConsent, daemon: &[ProductConsent], ours: bool) -> ProductConsent {
    if daemon.is_empty() {
        return from_manifest_on_path(pc);
    }
    if let Some(d) = daemon.iter().find(|d| d.product == pc.product) {
        pc.manifest = d.manifest.clone();
        pc.manifest_error = d.manifest_error.clone();
        pc.version = d.version;
        // Nothing decided here, or the daemon follows another user's file
        // (a machine-wide daemon, its owner's): the version consented to
        // and the events new since are not this user's.
        if ours && pc.layer != Layer::Default {
            pc.consented_version = d.consented_version;
            pc.new_events = d.new_events.clone();
        }
        pc.manifest_warnings = d.manifest_warnings.clone();
    }
    pc
}

/// The lines after a product's mode about its manifest and versions.
fn manifest_lines(c: &ProductConsent) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &c.manifest_error {
        out.push(format!(
            "  manifest unusable, {} is disabled: {e}",
            c.product
        ));
    } else if !c.manifest.is_empty() {
        let consented = match c.consented_version {
            0 => String::new(),
            v => format!("; your decision was for version {v}"),
        };
        out.push(format!(
            "  manifest: {} (catalogue version {}{consented})",
            c.manifest, c.version
        ));
    }
    if super::changed_without_a_new_version(c) {
        out.push(format!(
            "  changed without a new catalogue version: {}; kept on this machine (as in local) until the product's manifest raises its version and you consent to it",
            c.new_events.join(", "),
        ));
    } else if !c.new_events.is_empty() {
        out.push(format!(
            "  new or changed since the version you consented to: {}; kept on this machine (as in local) until you run `telemetryctl consent {} on` again",
            c.new_events.join(", "),
            c.product
        ));
    }
    out
}

/// A report made from the files, for when the daemon did not apply it.
fn local_report(product: &str, paths: &ConsentPaths) -> ConsentReport {
    ConsentReport {
        // With its manifest as plain `consent PRODUCT --json` shows it
        // (scripts read `manifest` and `version` from either).
        consent: from_manifest_on_path(local(product, paths)),
        purged: 0,
        final_event: false,
        file: paths.user.display().to_string(),
    }
}

/// Record `new_mode` for `product` and have a running daemon apply it.
fn change(
    socket: &Path,
    args: &Args,
    product: &str,
    new_mode: Mode,
    paths: &ConsentPaths,
    prompted: bool,
) -> Result<(), Failure> {
    // The decision is for the catalogue as it is now: its version comes
    // from the daemon, which reads the manifests. Without a daemon the
    // daemon binds it to the catalogue it has when it first acts on it.
    let version = match new_mode {
        Mode::Off => None,
        Mode::On | Mode::Local => daemon_view(socket)
            .into_iter()
            .find(|c| c.product == product && c.manifest_error.is_none())
            .map(|c| c.version)
            .filter(|v| *v > 0),
    };
    let kept = consent::record_version(product, new_mode, version, paths).map_err(|e| {
        // Something that is no file stands there (a device, a FIFO, a
        // broken link): the message says what; permissions are not it.
        let fix = match e.kind() {
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound => String::new(),
            _ => "; make it and its directory writable by this user (a file elsewhere, \
                  through TELEMETRY_CONSENT_FILE, counts only if telemetryd reads that one too)"
                .to_string(),
        };
        Failure::consent_file(
            crate::EXIT_UNREACHABLE,
            format!(
                "cannot write the consent file {}: {e}{fix}{}",
                paths.user.display(),
                if new_mode == Mode::Off {
                    "; until then, DO_NOT_TRACK=1 in the environment your CLIs run in keeps \
                     them from sending anything"
                } else {
                    ""
                }
            ),
        )
    })?;
    if let Some(kept) = kept {
        eprintln!(
            "telemetryctl: warning: {} could not be read, so it was kept as {} and a new one \
             holds this decision; copy any other product's line from it if you need it",
            paths.user.display(),
            kept.display()
        );
    }
    // The file is the source of truth; the daemon applies it now if it is
    // running, or at its next start otherwise.
    let applied = Client::connect(socket)
        .and_then(|mut c| c.consent_changed(product, &args.build, Duration::from_secs(10)));
    if let Ok(r) = &applied {
        if !consent::same_file(Path::new(&r.file), &paths.user) {
            return Err(Failure::consent_file(
                crate::EXIT_REFUSED,
                format!(
                    "telemetryd reads consent from {}, but this command wrote {}; set TELEMETRY_CONSENT_FILE={} \
                     (for telemetryctl and telemetry-emit) so they agree, then run this again",
                    r.file,
                    paths.user.display(),
                    r.file
                ),
            ));
        }
        // The daemon read the file it names, and came to another mode than
        // the one written, though no layer above the user's file decided:
        // it could not read what was written (a machine-wide daemon runs as
        // a user of its own, and this file is 0600 when newly made).
        let forced = matches!(r.consent.layer, Layer::System | Layer::Environment);
        // Unless another writer changed the file meanwhile (then the daemon
        // read that, and the local view below shows it).
        let still_ours = consent::user_decision(product, paths) == Some(new_mode);
        if r.consent.mode != new_mode && !forced && still_ours {
            return Err(Failure::consent_file(
                crate::EXIT_REFUSED,
                format!(
                    "{} says {product} {new_mode}, but telemetryd reads it as {} ({}): it cannot read the file as written; make it readable by the daemon's user (a machine-wide daemon's file must be world-readable: chmod 0644 {}), then run this again",
                    paths.user.display(),
                    r.consent.mode,
                    consent::describe(product, r.consent.layer, paths),
                    paths.user.display()
                ),
            ));
        }
    }
    if let Err(e) = &applied {
        // A daemon that is not this user's (a machine-wide one) takes
        // consent only from its own user and root: the change never applies.
        // The decision is recorded and this user's own clients follow it;
        // the daemon goes on following its owner's file (events it stored
        // already stay the owner's to purge). Said, not failed: the user's
        // file did change, and a CLI's `--no-telemetry` must not see an error.
        if let ClientError::Refused {
            code: telemetry_client::ErrorCode::PermissionDenied,
            ..
        } = e
        {
            eprintln!(
                "telemetryctl: note: {} now says {product} {new_mode}, and this user's clients follow it; telemetryd at {} serves this machine and follows its owner's consent file, not yours ({e}), so what it stored already stays there: ask the administrator, or use a daemon of your own (TELEMETRY_SOCKET unset)",
                paths.user.display(),
                socket.display()
            );
        } else if !matches!(e, ClientError::Unreachable { .. }) {
            eprintln!("telemetryctl: warning: telemetryd did not apply the change yet: {e}");
        }
    }
    // From the search path only when no daemon runs: a daemon that
    // refused or did not answer in time may read another catalogue (a
    // machine-wide one reads /etc/telemetry/catalog).
    let unknown = match &applied {
        Ok(_) => unknown_product(product, &daemon_view(socket)),
        Err(ClientError::Unreachable { .. }) => unknown_on_path(product),
        Err(_) => None,
    };
    if let Some(w) = unknown {
        eprintln!(
            "telemetryctl: warning: {w}; the decision is recorded, and applies if that product is installed later"
        );
    }
    if args.json {
        let daemon_notified = applied.is_ok();
        return print_json(&Changed {
            report: applied.unwrap_or_else(|_| local_report(product, paths)),
            daemon_notified,
            prompt: prompted.then_some(Prompted::Asked),
        });
    }
    let now = local(product, paths);
    outln!(
        "{product}: {} (decided by {})",
        now.mode,
        consent::describe(product, now.layer, paths)
    );
    if now.mode != new_mode {
        outln!(
            "note: you chose {new_mode}, but {} keeps {product} {}",
            consent::describe(product, now.layer, paths),
            now.mode
        );
    }
    if let Some(note) = applied
        .as_ref()
        .ok()
        .and_then(|r| env_note(&now, std::slice::from_ref(&r.consent)))
    {
        outln!("{note}");
    }
    match &applied {
        Ok(r) if r.purged > 0 => outln!(
            "deleted {} of {product}",
            super::count(r.purged, "stored event", "stored events")
        ),
        _ => {}
    }
    match &applied {
        Ok(r) if r.final_event => {
            outln!("recorded a final telemetry_off event; nothing after it will be sent");
            outln!(
                "what was uploaded before stays where it went (`telemetryctl receipts` lists it); to have its vendor delete it, once `telemetryctl status` shows this event uploaded, `telemetryctl forget {product}` gives the ID to ask with"
            )
        }
        Err(ClientError::Unreachable { source, path })
            if telemetry_client::is_not_open_to_this_user(source, path) =>
        {
            outln!(
                "telemetryd at {} is not open to this user, so it was not told: {}",
                socket.display(),
                applied
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        }
        // After a prompt the user answered a question about a CLI: which
        // process reads the answer is no news to them.
        Err(ClientError::Unreachable { .. }) if prompted => {}
        Err(e @ ClientError::Unreachable { .. }) if telemetry_client::autostart::nothing_serves(e) => outln!(
            "no telemetryd is running: every CLI reads this decision from the file before it sends, and telemetryd applies it when it starts"
        ),
        // Its message names the socket and what went wrong.
        Err(e @ ClientError::Unreachable { .. }) => outln!(
            "{e}; every CLI reads this decision from the file before it sends, and telemetryd follows the file before it stores anything more"
        ),
        _ => {}
    }
    Ok(())
}

/// `--prompt` recorded nothing: say why (on stderr, where a calling CLI's
/// user sees it; silent when the decision was made earlier or elsewhere,
/// as that is no news on every start), and with `--json` print the
/// product's consent and the reason.
fn not_recorded(
    product: &str,
    why: Prompted,
    paths: &ConsentPaths,
    json: bool,
) -> Result<(), Failure> {
    let now = local(product, paths);
    let reason = match why {
        Prompted::NotATerminal => Some(format!(
            "did not ask about telemetry for {product}: {}",
            not_terminals()
        )),
        Prompted::NoAnswer => Some(format!(
            "no answer to the telemetry question for {product} could be read"
        )),
        Prompted::Asked | Prompted::AlreadyDecided | Prompted::ForcedOff => None,
    };
    if let Some(reason) = reason {
        eprintln!(
            "telemetryctl: {reason}; nothing was recorded and {product} stays {}. \
             Decide later with `telemetryctl consent {product} on|off|local`",
            now.mode
        );
    }
    if json {
        // From the files alone: `--prompt` runs at each start of a CLI,
        // and must not wait on a daemon for what it does not need.
        return print_json(&Changed {
            report: local_report(product, paths),
            daemon_notified: false,
            prompt: Some(why),
        });
    }
    Ok(())
}

/// Which of stdin and stderr are not terminals, for a message.
fn not_terminals() -> &'static str {
    match (
        std::io::stdin().is_terminal(),
        std::io::stderr().is_terminal(),
    ) {
        (false, false) => "stdin and stderr are not terminals",
        (false, true) => "stdin is not a terminal",
        _ => "stderr is not a terminal",
    }
}

/// Say what is wrong with the user's consent file, if anything (on stderr,
/// so `--json` stays one document).
fn warn_of_the_file(paths: &ConsentPaths) {
    if let Some(w) = consent::user_file_warning(&paths.user) {
        eprintln!("telemetryctl: warning: {w}");
    }
}

fn show_one(socket: &Path, product: &str, paths: &ConsentPaths, json: bool) -> Result<(), Failure> {
    warn_of_the_file(paths);
    let mine = local(product, paths);
    // A script checks consent with `--json` before it sends anything: for
    // a product that is off, from the files alone. Asking the daemon would
    // connect on behalf of a user who said no (or whose environment did).
    if json && mine.mode == Mode::Off {
        return print_json(&from_manifest_on_path(mine));
    }
    let (daemon, file) = daemon_view_and_file(socket);
    let ours = file.is_none_or(|f| consent::same_file(Path::new(&f), &paths.user));
    let now = with_manifest(mine, &daemon, ours);
    if json {
        return print_json(&now);
    }
    outln!(
        "{product}: {} (decided by {})",
        now.mode,
        consent::describe(product, now.layer, paths)
    );
    for line in manifest_lines(&now) {
        outln!("{line}");
    }
    if let Some(note) = env_note(&now, &daemon) {
        outln!("{note}");
    }
    Ok(())
}

fn list(socket: &Path, paths: &ConsentPaths, json: bool) -> Result<(), Failure> {
    warn_of_the_file(paths);
    let (daemon, file) = daemon_view_and_file(socket);
    let ours = file.is_none_or(|f| consent::same_file(Path::new(&f), &paths.user));
    let mut products: Vec<String> = consent::user_file(paths)
        .entries
        .into_iter()
        .chain(consent::system_file(paths).entries)
        .map(|e| e.product)
        .filter(|p| p != "*")
        // And every product the daemon has a manifest for, decided or not.
        .chain(
            daemon
                .iter()
                .filter(|c| !c.manifest.is_empty() || c.manifest_error.is_some())
                .map(|c| c.product.clone()),
        )
        .collect();
    products.sort();
    products.dedup();
    let rows: Vec<ProductConsent> = products
        .iter()
        .map(|p| with_manifest(local(p, paths), &daemon, ours))
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        outln!("no product has a consent decision yet: everything is off");
    }
    for c in &rows {
        outln!(
            "{}: {} (decided by {})",
            c.product,
            c.mode,
            consent::describe(&c.product, c.layer, paths)
        );
        for line in manifest_lines(c) {
            outln!("{line}");
        }
        if let Some(note) = env_note(c, &daemon) {
            outln!("{note}");
        }
    }
    if let Some(var) = consent::env_opt_out_var() {
        outln!("{var} is set: every product is off in this environment");
    }
    outln!(
        "user file: {}; system file: {}",
        paths.user.display(),
        paths.system.display()
    );
    Ok(())
}

/// The manifest file a daemon started now would use for `product`: the
/// first `PRODUCT.toml` on its search path (the user's directory, then the
/// system ones). Used before any
/// daemon runs (a CLI's first start asks before it sends anything), so
/// the vendor's wording is shown then too. A `catalog_dir` set only in
/// the daemon's config file is not followed: the question is then the
/// generic one.
fn manifest_file_on_path(product: &str) -> Option<std::path::PathBuf> {
    manifest_dirs()
        .into_iter()
        .map(|dir| dir.join(format!("{product}.toml")))
        .find(|f| f.exists())
}

/// The manifest search path as a daemon started now would use it (its
/// environment's, not a config file's `catalog_dir`).
fn manifest_dirs() -> Vec<std::path::PathBuf> {
    use telemetry_proto::paths;
    let env = |k: &str| std::env::var_os(k);
    let user = env("TELEMETRY_CATALOG_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| paths::default_catalog_dir(env));
    let system = paths::manifest_system_dirs(
        env("XDG_DATA_DIRS")
            .and_then(|v| v.into_string().ok())
            .as_deref(),
        env("ProgramData").map(std::path::PathBuf::from).as_deref(),
    );
    user.into_iter().chain(system).collect()
}

/// The `catalog_dir` the config file a daemon started now would read sets
/// (`TELEMETRY_CONFIG`, else the default one): `Err(())` when it sets one
/// that cannot be followed from here (relative, or the file unreadable).
fn configured_catalog_dir() -> Result<Option<std::path::PathBuf>, ()> {
    let env = |k: &str| std::env::var_os(k);
    let file = match env("TELEMETRY_CONFIG").filter(|v| !v.is_empty()) {
        Some(f) => std::path::PathBuf::from(f),
        None => match telemetry_proto::paths::default_config_file(env) {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    let table: toml::Table = text.parse().map_err(|_| ())?;
    match table.get("catalog_dir") {
        None => Ok(None),
        Some(toml::Value::String(d)) if std::path::Path::new(d).is_absolute() => {
            Ok(Some(std::path::PathBuf::from(d)))
        }
        Some(_) => Err(()),
    }
}

/// [`unknown_product`] for when no daemon runs: a warning when no
/// manifest on the search path a daemon started now would use (its
/// config file's `catalog_dir` included), nor the built-in example,
/// describes `product`, naming the products that have one. Without it a
/// misspelt `off` was recorded in silence while the product meant stayed
/// on. `None` when nobody can tell from here.
fn unknown_on_path(product: &str) -> Option<String> {
    if product == "cfdev" {
        return None;
    }
    let mut dirs = manifest_dirs();
    match configured_catalog_dir() {
        Ok(Some(dir)) => dirs.insert(0, dir),
        Ok(None) => {}
        Err(()) => return None,
    }
    let file = format!("{product}.toml");
    if dirs.iter().any(|d| d.join(&file).exists()) {
        return None;
    }
    let mut known: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .filter(|p| super::product_arg(p).is_ok())
        .chain(std::iter::once("cfdev".to_string()))
        .collect();
    known.sort();
    known.dedup();
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Some(format!(
        "no manifest for product {product:?} in {} (products with one: {}); check the name",
        searched.join(", "),
        known.join(", ")
    ))
}

/// `pc` with its manifest and version as a daemon started now would find
/// them (the first `PRODUCT.toml` on the search path, read here), for a
/// product whose consent is answered without asking a daemon: scripts read
/// `manifest` and `version` from it as from any other. A manifest that
/// cannot be read or trusted here is left out, as the daemon would not use
/// it either.
fn from_manifest_on_path(mut pc: ProductConsent) -> ProductConsent {
    let Some(file) = manifest_file_on_path(&pc.product) else {
        // The daemon's built-in example, when no file of that name came
        // first.
        if pc.product == "cfdev" {
            if let Ok(m) = toml::from_str::<ManifestHead>(BUILTIN_CFDEV) {
                pc.manifest = "built-in cfdev.toml".to_string();
                pc.version = m.version();
            }
        }
        return pc;
    };
    if let Some(m) = ManifestHead::read(&file) {
        pc.manifest = file.display().to_string();
        pc.version = m.version();
        // The two checks of the daemon's that make a readable file
        // unusable as this product's (the rest need its full reading).
        if m.product.as_deref() != Some(pc.product.as_str()) {
            pc.manifest_error = Some(format!(
                "`product` is {:?} but the file is named {}.toml; they must match",
                m.product.unwrap_or_default(),
                pc.product
            ));
        } else if pc.version == 0 {
            pc.manifest_error = Some("`consent.version`: must be at least 1".to_string());
        }
    }
    pc
}

/// What `telemetryctl` reads of a manifest itself (the daemon reads it
/// whole): its product, and its `[consent]` version and prompt.
#[derive(serde::Deserialize)]
struct ManifestHead {
    product: Option<String>,
    consent: Option<ConsentHead>,
}

#[derive(serde::Deserialize)]
struct ConsentHead {
    version: Option<u32>,
    prompt: Option<String>,
}

impl ManifestHead {
    /// `file`'s, if it is a manifest this user may trust and it parses:
    /// only an absolute path (not one looked up from the working
    /// directory), and never another user's file, as the daemon trusts a
    /// manifest.
    fn read(file: &Path) -> Option<ManifestHead> {
        if !file.is_absolute() || telemetry_platform::fs::untrusted(file).is_some() {
            return None;
        }
        let text = telemetry_platform::fs::read_config_text(file).ok()?;
        toml::from_str(&text).ok()
    }

    /// `consent.version`, 1 when not given, as the daemon reads it.
    fn version(&self) -> u32 {
        self.consent.as_ref().and_then(|c| c.version).unwrap_or(1)
    }
}

/// The daemon's built-in example manifest (`sink`'s `CFDEV`).
const BUILTIN_CFDEV: &str = include_str!("../../../../../catalog/cfdev.toml");

/// The vendor's wording of the question (`consent.prompt` in the product's
/// manifest: the one the running daemon names, else the one it would
/// find), if there is one and the manifest is usable. Control characters
/// other than newlines and tabs are dropped: the text goes to the user's
/// terminal.
fn manifest_prompt(socket: &Path, product: &str) -> Option<String> {
    let daemon = daemon_view(socket);
    let file = if daemon.is_empty() {
        manifest_file_on_path(product)?
    } else {
        let pc = daemon
            .into_iter()
            .find(|c| c.product == product && c.manifest_error.is_none())?;
        // A built-in manifest has no file (and the built-in one no prompt):
        // its name is no path.
        std::path::PathBuf::from(pc.manifest)
    };
    // Another user's file never words the question (see `ManifestHead::read`).
    let prompt = ManifestHead::read(&file)?.consent?.prompt?;
    let clean: String = prompt
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect();
    (!clean.trim().is_empty()).then_some(clean)
}

/// Ask once. Returns what happened and, when asked, the mode to record.
fn prompt(
    socket: &Path,
    product: &str,
    args: &Args,
    paths: &ConsentPaths,
) -> (Prompted, Option<Mode>) {
    if consent::user_decision(product, paths).is_some() {
        return (Prompted::AlreadyDecided, None);
    }
    let (_, layer) = consent::resolve(product, paths);
    if matches!(layer, Layer::System | Layer::Environment) {
        return (Prompted::ForcedOff, None);
    }
    // The question goes to stderr and the answer comes from stdin.
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return (Prompted::NotATerminal, None);
    }
    let text = args
        .text
        .clone()
        .or_else(|| manifest_prompt(socket, product))
        .unwrap_or_else(|| generic_prompt(product));
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "{}\n{}\n\nEnable anonymous telemetry for {product}? [y/N] ",
        text.trim_end(),
        how_to_change(product)
    );
    let _ = err.flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return (Prompted::NoAnswer, None);
    }
    // Enter, or end of input, means the default: No.
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    (
        Prompted::Asked,
        Some(if yes { Mode::On } else { Mode::Off }),
    )
}
