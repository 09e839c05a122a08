//! Consent: the file format and how the layers combine. Pure functions; the
//! callers (the shim, `telemetryctl`, the daemon) read the files.
//!
//! # Layers, most authoritative first
//! 1. **System file** (`/etc/telemetry/consent`): an administrator's `off`
//!    for a product, or for `*` (every product), cannot be overridden by a
//!    user. Other modes in the system file are ignored: only users opt in.
//! 2. **Environment**: `DO_NOT_TRACK` or `TELEMETRY_OPTOUT` set to anything
//!    but empty, `0` or `false` forces every product off.
//! 3. **User file** (`$STATE_DIR/consent`): what the user chose with
//!    `telemetryctl consent`.
//! 4. **Default**: `off`. Nothing is collected before the user opts in.
//!
//! # File format
//! UTF-8 text, one decision per line: `PRODUCT MODE [RFC3339-TIME]`, where
//! MODE is `on`, `off` or `local`. `#` starts a comment; blank lines are
//! ignored; a later line for the same product wins. Lines that do not parse
//! are ignored (and reported by `telemetryctl consent`), so a damaged file
//! can only ever mean *less* collection, never more.
//!
//! ```text
//! # written by telemetryctl consent
//! cfdev on 2026-11-27T10:00:00Z
//! othertool local 2026-11-27T10:05:00Z
//! ```

use serde::{Deserialize, Serialize};

/// What a product may do. (JSON: `"off"`, `"local"`, `"on"`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `[0]` Collect nothing, send nothing.
    Off,
    /// `[1]` Collect and keep on this machine; never upload.
    Local,
    /// `[2]` Collect and upload.
    On,
}

impl Mode {
    /// The word used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Local => "local",
            Mode::On => "on",
        }
    }

    /// Parse `on`, `off` or `local`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "local" => Some(Mode::Local),
            "on" => Some(Mode::On),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which layer decided a product's mode. (JSON: `"system"`,
/// `"environment"`, `"user_file"`, `"default"`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// `[0]` The administrator's system file.
    System,
    /// `[1]` `DO_NOT_TRACK` / `TELEMETRY_OPTOUT`.
    Environment,
    /// `[2]` The user's consent file.
    UserFile,
    /// `[3]` Nobody decided: off.
    Default,
}

impl Layer {
    /// A short name for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::System => "system file",
            Layer::Environment => "environment",
            Layer::UserFile => "user file",
            Layer::Default => "default",
        }
    }
}

/// One parsed line of a consent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Product name, or `*` for every product.
    pub product: String,
    /// The mode.
    pub mode: Mode,
    /// When it was decided, as written (RFC 3339), if present.
    pub since: Option<String>,
}

/// A parsed consent file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentFile {
    /// Valid entries in file order.
    pub entries: Vec<Entry>,
    /// 1-based numbers of lines that did not parse.
    pub bad_lines: Vec<usize>,
}

impl ConsentFile {
    /// Parse the file's text.
    pub fn parse(text: &str) -> ConsentFile {
        let mut out = ConsentFile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(product), Some(mode)) = (words.next(), words.next()) else {
                out.bad_lines.push(i + 1);
                continue;
            };
            let since = words.next().map(str::to_string);
            let valid_product = product == "*"
                || crate::validate_name("product", product, &crate::Limits::default()).is_ok();
            match (valid_product, Mode::parse(mode), words.next()) {
                (true, Some(mode), None) => out.entries.push(Entry {
                    product: product.to_string(),
                    mode,
                    since,
                }),
                _ => out.bad_lines.push(i + 1),
            }
        }
        out
    }

    /// The last entry for `product` (exact name, not `*`).
    pub fn get(&self, product: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.product == product)
    }

    /// Whether the file forces `product` off (its own line or `*`).
    fn forces_off(&self, product: &str) -> bool {
        self.entries
            .iter()
            .rev()
            .find(|e| e.product == product || e.product == "*")
            .is_some_and(|e| e.mode == Mode::Off)
    }

    /// Render entries back to text (one line each, latest per product).
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# telemetry consent, one \"PRODUCT MODE TIME\" per line; change it with `telemetryctl consent PRODUCT on|off|local`\n",
        );
        let mut seen = std::collections::BTreeSet::new();
        let latest: Vec<&Entry> = self
            .entries
            .iter()
            .rev()
            .filter(|e| seen.insert(e.product.clone()))
            .collect();
        for e in latest.into_iter().rev() {
            out.push_str(&e.product);
            out.push(' ');
            out.push_str(e.mode.as_str());
            if let Some(s) = &e.since {
                out.push(' ');
                out.push_str(s);
            }
            out.push('\n');
        }
        out
    }

    /// Set `product` to `mode` (replacing earlier lines for it).
    pub fn set(&mut self, product: &str, mode: Mode, since: Option<String>) {
        self.entries.retain(|e| e.product != product);
        self.entries.push(Entry {
            product: product.to_string(),
            mode,
            since,
        });
    }
}

/// Whether an opt-out variable's value means "opt out": anything but
/// empty, `0` or `false`.
pub fn env_opts_out(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// The opt-out environment variables.
pub const OPT_OUT_VARS: [&str; 2] = ["DO_NOT_TRACK", "TELEMETRY_OPTOUT"];

/// Combine the layers for `product`. `env_off` is whether an opt-out
/// variable is set (see [`env_opts_out`]).
pub fn resolve(
    product: &str,
    system: Option<&ConsentFile>,
    env_off: bool,
    user: Option<&ConsentFile>,
) -> (Mode, Layer) {
    if system.is_some_and(|s| s.forces_off(product)) {
        return (Mode::Off, Layer::System);
    }
    if env_off {
        return (Mode::Off, Layer::Environment);
    }
    match user.and_then(|u| u.get(product)) {
        Some(e) => (e.mode, Layer::UserFile),
        None => (Mode::Off, Layer::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_in_order() {
        let user = ConsentFile::parse("cfdev on\nother local\n");
        let sys_all = ConsentFile::parse("* off\n");
        let sys_on = ConsentFile::parse("cfdev on\nnew on\n");
        assert_eq!(
            resolve("cfdev", None, false, Some(&user)),
            (Mode::On, Layer::UserFile)
        );
        assert_eq!(
            resolve("other", None, false, Some(&user)),
            (Mode::Local, Layer::UserFile)
        );
        assert_eq!(
            resolve("unknown", None, false, Some(&user)),
            (Mode::Off, Layer::Default)
        );
        assert_eq!(
            resolve("cfdev", None, true, Some(&user)),
            (Mode::Off, Layer::Environment)
        );
        assert_eq!(
            resolve("cfdev", Some(&sys_all), false, Some(&user)),
            (Mode::Off, Layer::System)
        );
        // The system file cannot opt anyone in.
        assert_eq!(
            resolve("new", Some(&sys_on), false, None),
            (Mode::Off, Layer::Default)
        );
    }

    #[test]
    fn damaged_lines_are_ignored_and_counted() {
        let f = ConsentFile::parse(
            "# c\n\ncfdev on 2026-01-01T00:00:00Z\ncfdev maybe\nBad on\nx on y z\n",
        );
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.bad_lines, vec![4, 5, 6]);
        assert_eq!(
            f.get("cfdev").unwrap().since.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn later_lines_win_and_render_round_trips() {
        let mut f = ConsentFile::parse("a on\nb local\na off\n");
        assert_eq!(f.get("a").unwrap().mode, Mode::Off);
        f.set("b", Mode::On, Some("t".into()));
        let again = ConsentFile::parse(&f.render());
        assert_eq!(again.get("a").unwrap().mode, Mode::Off);
        assert_eq!(again.get("b").unwrap().mode, Mode::On);
        assert_eq!(again.entries.len(), 2);
    }

    #[test]
    fn opt_out_values() {
        for v in ["1", "true", "yes", "anything"] {
            assert!(env_opts_out(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("0"), Some("false"), Some(" 0 ")] {
            assert!(!env_opts_out(v), "{v:?}");
        }
    }
}
