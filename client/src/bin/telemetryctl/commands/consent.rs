//! `telemetryctl consent [PRODUCT] [on|off|local] [--prompt]`.

use crate::Failure;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;
use telemetry_client::consent::{self, ConsentPaths};
use telemetry_client::{Client, ClientError, Layer, Mode};

/// Flags of `consent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The product, e.g. cfdev. Without it, every product in the consent files.
    product: Option<String>,
    /// The new mode: on (collect and upload), local (collect, never upload) or off.
    #[arg(value_parser = ["on", "off", "local"])]
    mode: Option<String>,
    /// Ask the user once, on a terminal, default No; for a CLI's first start.
    /// Records nothing (stays off) when not on a terminal or already decided.
    #[arg(long, conflicts_with = "mode")]
    prompt: bool,
    /// Prompt text to show instead of the generic one.
    #[arg(long, requires = "prompt", value_name = "TEXT")]
    text: Option<String>,
    /// The calling CLI's version, recorded in the final telemetry_off event.
    #[arg(long, env = "TELEMETRY_BUILD", default_value = "unknown")]
    build: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
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

/// Run `consent`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let paths = ConsentPaths::from_env();
    let Some(product) = &args.product else {
        return list(&paths, args.json);
    };
    let limits = telemetry_proto::Limits::default();
    if let Err(e) = telemetry_proto::validate_name("product", product, &limits) {
        return Err(Failure::usage(e.to_string()));
    }
    let new_mode = if args.prompt {
        match prompt(product, args, &paths)? {
            Some(mode) => mode,
            None => return Ok(()),
        }
    } else if let Some(m) = &args.mode {
        Mode::parse(m).ok_or_else(|| Failure::usage(format!("unknown mode {m:?}")))?
    } else {
        return show_one(product, &paths, args.json);
    };
    consent::record(product, new_mode, &paths).map_err(|e| Failure {
        code: 1,
        message: format!("cannot write consent file {}: {e}", paths.user.display()),
    })?;
    // The file is the source of truth; the daemon applies it now if it is
    // running, or at its next start otherwise.
    let applied = Client::connect(socket)
        .and_then(|mut c| c.consent_changed(product, &args.build, Duration::from_secs(10)));
    if let Ok(r) = &applied {
        if Path::new(&r.file) != paths.user {
            return Err(Failure {
                code: 3,
                message: format!(
                    "telemetryd reads consent from {}, but this command wrote {}; set TELEMETRY_CONSENT_FILE={} \
                     (for telemetryctl and telemetry-emit) so they agree, then run this again",
                    r.file,
                    paths.user.display(),
                    r.file
                ),
            });
        }
    }
    let (mode, layer) = consent::resolve(product, &paths);
    if args.json {
        let (purged, final_event, daemon) = match &applied {
            Ok(r) => (r.purged, r.final_event, true),
            Err(_) => (0, false, false),
        };
        println!(
            "{}",
            serde_json::json!({
                "product": product, "mode": mode.as_str(), "layer": layer.as_str(),
                "file": paths.user, "purged": purged, "final_event": final_event,
                "daemon_notified": daemon,
            })
        );
    } else {
        println!("{product}: {mode} ({})", describe(layer, &paths));
        if mode != new_mode {
            println!(
                "note: you chose {new_mode}, but the {} keeps {product} {mode}",
                layer.as_str()
            );
        }
        match &applied {
            Ok(r) if r.purged > 0 => println!("deleted {} stored event(s) of {product}", r.purged),
            _ => {}
        }
        match &applied {
            Ok(r) if r.final_event => {
                println!("recorded a final telemetry_off event; nothing after it will be sent")
            }
            Ok(_) => {}
            Err(ClientError::Unreachable { .. }) => {
                println!("telemetryd is not running; it will apply this when it starts")
            }
            Err(e) => {
                eprintln!("telemetryctl: warning: telemetryd did not apply the change yet: {e}")
            }
        }
    }
    Ok(())
}

fn describe(layer: Layer, paths: &ConsentPaths) -> String {
    match layer {
        Layer::System => format!("decided by the system file {}", paths.system.display()),
        Layer::Environment => {
            "decided by DO_NOT_TRACK / TELEMETRY_OPTOUT in the environment".into()
        }
        Layer::UserFile => format!("decided by the user file {}", paths.user.display()),
        Layer::Default => "nobody decided yet: off until you opt in".into(),
    }
}

fn show_one(product: &str, paths: &ConsentPaths, json: bool) -> Result<(), Failure> {
    let (mode, layer) = consent::resolve(product, paths);
    if json {
        println!(
            "{}",
            serde_json::json!({"product": product, "mode": mode.as_str(), "layer": layer.as_str()})
        );
    } else {
        println!("{product}: {mode} ({})", describe(layer, paths));
    }
    Ok(())
}

fn list(paths: &ConsentPaths, json: bool) -> Result<(), Failure> {
    let mut products: Vec<String> = consent::user_file(paths)
        .entries
        .into_iter()
        .chain(consent::system_file(paths).entries)
        .map(|e| e.product)
        .filter(|p| p != "*")
        .collect();
    products.sort();
    products.dedup();
    let rows: Vec<(String, Mode, Layer)> = products
        .into_iter()
        .map(|p| {
            let (m, l) = consent::resolve(&p, paths);
            (p, m, l)
        })
        .collect();
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, m, l)| serde_json::json!({"product": p, "mode": m.as_str(), "layer": l.as_str()}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no product has a consent decision yet: everything is off");
    }
    for (p, m, l) in &rows {
        println!("{p}: {m} ({})", describe(*l, paths));
    }
    if consent::env_opt_out() {
        println!(
            "DO_NOT_TRACK / TELEMETRY_OPTOUT is set: every product is off in this environment"
        );
    }
    println!(
        "user file: {}; system file: {}",
        paths.user.display(),
        paths.system.display()
    );
    Ok(())
}

/// Ask once. Returns the mode to record, or `None` to record nothing.
fn prompt(product: &str, args: &Args, paths: &ConsentPaths) -> Result<Option<Mode>, Failure> {
    if consent::user_decision(product, paths).is_some() {
        return Ok(None); // asked before
    }
    let (_, layer) = consent::resolve(product, paths);
    if matches!(layer, Layer::System | Layer::Environment) {
        return Ok(None); // forced off: do not even ask
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(None); // nobody to ask: stays off
    }
    let text = args.text.clone().unwrap_or_else(|| generic_prompt(product));
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
        return Ok(None);
    }
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    Ok(Some(if yes { Mode::On } else { Mode::Off }))
}
