//! Consent: the file format and how the layers combine. Pure functions; the
//! callers (the shim, `telemetryctl`, the daemon) read the files.
//!
//! # Layers, most authoritative first
//! 1. **System file** (`/etc/telemetry/consent`): an administrator's `off`
//!    for a product, or for `*` (every product), cannot be overridden by a
//!    user. Other modes in the system file are ignored: only users opt in.
//! 2. **Environment**: `DO_NOT_TRACK` or `TELEMETRY_OPTOUT` set to anything
//!    but empty or `0` (so `false` too, and a value that is not UTF-8)
//!    forces every product off.
//! 3. **User file** (`$STATE_DIR/consent`): what the user chose with
//!    `telemetryctl consent`.
//! 4. **Default**: `off`. Nothing is collected before the user opts in.
//!
//! # File format
//! UTF-8 text, one decision per line:
//! `PRODUCT MODE [TIME] [off=TIME] [KEY=VALUE ...] [#+ KEY=VALUE ...]`,
//! where MODE is `on`, `off` or `local` (any case), TIME is RFC 3339, and
//! `off=TIME` records when the product was last turned off — so a daemon
//! that missed an `off` followed by an `on` still purges what was collected
//! before the `off`. `#` starts a comment; blank lines are ignored; a later
//! line for the same product wins.
//!
//! # Fields added later, and older readers
//! `version=N` is the version of the product's manifest (`consent.version`)
//! the decision was given for; events a newer version adds are kept on the
//! machine until the user decides again. A line without it was written
//! before versions existed, or by an older `telemetryctl`, or while no
//! daemon could say the version: the daemon then uses the event set it
//! first saw with that decision.
//!
//! Parsers before this one (format 1) reject a line with any token beyond
//! `[TIME] [off=TIME]`, which would silently turn that product off. So
//! writers put every field added after format 1 after `#+`: to a format-1
//! parser `#` starts a comment and the line reads exactly as before; this
//! parser reads the `KEY=VALUE` tokens after `#+`. From this format on,
//! unknown `KEY=VALUE` tokens (before or after `#+`) are ignored, so later
//! fields need no such care with readers of this format or newer. A bad
//! value of a known extension field reads as absent (for `version`: the
//! decision is treated as unversioned, which never collects more).
//!
//! Damage always means *less* collection: in the user file a line that does
//! not parse is ignored (that product stays undecided, so off); in the
//! system file any unparsable line, or a file that exists but cannot be
//! read, forces every product off.
//!
//! ```text
//! # written by telemetryctl consent
//! cfdev on 2026-11-27T10:00:00Z off=2026-11-20T09:00:00Z #+ version=2
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

    /// Parse `on`, `off` or `local`, in any case.
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
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
    /// When the product was last turned off, if ever (RFC 3339).
    pub last_off: Option<String>,
    /// The manifest version the decision was given for (`version=N`), if
    /// recorded.
    pub version: Option<u32>,
}

/// A parsed consent file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentFile {
    /// Valid entries in file order.
    pub entries: Vec<Entry>,
    /// 1-based numbers of lines that did not parse.
    pub bad_lines: Vec<usize>,
    /// The products those lines name (their first word, when it is a
    /// product's name): see [`ConsentFile::unclear`].
    pub unclear_products: Vec<String>,
}

impl ConsentFile {
    /// Parse the file's text. One byte-order mark at its very start is
    /// skipped: Windows PowerShell 5.1 (`Set-Content -Encoding UTF8`) and
    /// older Notepad write one, and the user's first line must still
    /// decide. Anywhere else it is an ordinary character (not whitespace).
    pub fn parse(text: &str) -> ConsentFile {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut out = ConsentFile::default();
        for (i, line) in text.lines().enumerate() {
            let (line, extension) = split_extension(line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let named = |product: &str| {
                crate::validate_name("product", product, &crate::Limits::default()).is_ok()
            };
            let (Some(product), Some(mode)) = (words.next(), words.next()) else {
                out.bad_lines.push(i + 1);
                out.unclear_products.extend(
                    line.split_whitespace()
                        .next()
                        .filter(|p| named(p))
                        .map(str::to_string),
                );
                continue;
            };
            let mut since = None;
            let mut last_off = None;
            let mut version = None;
            let mut keyed = false;
            let mut extra = false;
            for w in words {
                match w.split_once('=') {
                    Some(("off", t)) if last_off.is_none() => last_off = Some(t.to_string()),
                    Some(("off", _)) => extra = true,
                    Some((key, value)) if is_field_key(key) => {
                        if key == "version" {
                            version = parse_version(value);
                        }
                    }
                    Some(_) => extra = true,
                    None if since.is_none() && last_off.is_none() && !keyed => {
                        since = Some(w.to_string())
                    }
                    None => extra = true,
                }
                keyed |= w.contains('=');
            }
            // After `#+` only `KEY=VALUE` tokens mean anything; the rest is
            // a comment to every reader.
            for w in extension.split_whitespace() {
                if let Some(("version", value)) = w.split_once('=') {
                    version = parse_version(value);
                }
            }
            let valid_product = product == "*"
                || crate::validate_name("product", product, &crate::Limits::default()).is_ok();
            match (valid_product, Mode::parse(mode), extra) {
                (true, Some(mode), false) => out.entries.push(Entry {
                    product: product.to_string(),
                    mode,
                    since,
                    last_off,
                    version,
                }),
                (valid, ..) => {
                    out.bad_lines.push(i + 1);
                    if valid && product != "*" {
                        out.unclear_products.push(product.to_string());
                    }
                }
            }
        }
        out
    }

    /// Whether `product` is named by a line not understood (a mode
    /// misspelt by hand: `cfdev onn`) and decided by no line that is: the
    /// user wrote something for it that is not a decision. It reads as
    /// undecided (nothing collected), but a daemon takes no change of
    /// decision from it (which would delete what it stored, and tell its
    /// vendor of an off nobody asked for).
    pub fn unclear(&self, product: &str) -> bool {
        self.get(product).is_none() && self.unclear_products.iter().any(|p| p == product)
    }

    /// The last entry for `product` (exact name, not `*`).
    pub fn get(&self, product: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.product == product)
    }

    /// A system file that exists but cannot be read: fail closed.
    pub fn unreadable() -> ConsentFile {
        ConsentFile {
            entries: Vec::new(),
            bad_lines: vec![0],
            unclear_products: Vec::new(),
        }
    }

    /// Whether this file, read as the administrator's, forces `product`
    /// off: any `off` line for it or for `*`, or any damage at all.
    fn forces_off(&self, product: &str) -> bool {
        !self.bad_lines.is_empty()
            || self
                .entries
                .iter()
                .any(|e| (e.product == product || e.product == "*") && e.mode == Mode::Off)
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
            if let Some(s) = &e.last_off {
                out.push_str(" off=");
                out.push_str(s);
            }
            // After `#+`, where format-1 readers see a comment (see the
            // module docs).
            if let Some(v) = e.version {
                out.push_str(" #+ version=");
                out.push_str(&v.to_string());
            }
            out.push('\n');
        }
        out
    }

    /// Set `product` to `mode` at time `since` (replacing earlier lines
    /// for it), without a manifest version. Turning it off records `since`
    /// as its last `off`; other modes keep the earlier `off` time.
    pub fn set(&mut self, product: &str, mode: Mode, since: Option<String>) {
        self.set_version(product, mode, since, None)
    }

    /// [`ConsentFile::set`], recording that the decision was given for
    /// manifest version `version`.
    pub fn set_version(
        &mut self,
        product: &str,
        mode: Mode,
        since: Option<String>,
        version: Option<u32>,
    ) {
        let previous_off = self.get(product).and_then(|e| e.last_off.clone());
        let last_off = if mode == Mode::Off {
            since.clone()
        } else {
            previous_off
        };
        self.entries.retain(|e| e.product != product);
        self.entries.push(Entry {
            product: product.to_string(),
            mode,
            since,
            last_off,
            version,
        });
    }
}

/// A line's text before any comment, and what follows a `#+` that starts
/// its comment (empty if the comment is a plain one).
fn split_extension(line: &str) -> (&str, &str) {
    match line.split_once('#') {
        None => (line, ""),
        Some((before, after)) => match after.strip_prefix('+') {
            // A further `#` ends the fields and starts a plain comment.
            Some(fields) => (before, fields.split('#').next().unwrap_or("")),
            None => (before, ""),
        },
    }
}

/// Whether `key` can name a field: lowercase ASCII letters, digits and `_`,
/// starting with a letter.
fn is_field_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A `version=` value: a whole number from 1; anything else reads as absent.
fn parse_version(value: &str) -> Option<u32> {
    value.parse().ok().filter(|v| *v >= 1)
}

/// What a user can do about an `off` decided by `layer`, as a clause to
/// append to a message ("; turn it on with ..."): only the administrator
/// can lift the system file's, only unsetting `opt_out` (the variable, and
/// where it is set) the environment's. Shared by the shim and the daemon's
/// refusal, so neither advises a `consent on` that cannot help.
pub fn how_to_turn_on(product: &str, layer: Layer, opt_out: &str) -> String {
    match layer {
        Layer::System => "; only the administrator can change that".to_string(),
        Layer::Environment => format!("; unset {opt_out} to record events"),
        Layer::UserFile | Layer::Default => {
            format!("; turn it on with `telemetryctl consent {product} on`")
        }
    }
}

/// Whether an opt-out variable's value means "opt out": any value but
/// empty or `0` (as the `DO_NOT_TRACK` convention has it).
pub fn env_opts_out(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), None | Some("") | Some("0"))
}

/// [`env_opts_out`] for a value as the environment holds it: one that is
/// not UTF-8 is still set to something, so it opts out (reading it as
/// unset would fail open).
pub fn env_opts_out_os(value: Option<&std::ffi::OsStr>) -> bool {
    env_opts_out(value.map(|v| v.to_string_lossy()).as_deref())
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
            "# c\n\ncfdev on 2026-01-01T00:00:00Z\ncfdev maybe\nBad on\nx on y z\nq On\n",
        );
        assert_eq!(f.entries.len(), 2);
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

    /// An entry as format 1 knew it: product, mode, since, last off.
    type OldEntry = (String, Mode, Option<String>, Option<String>);

    /// The parser as it was before `version=` (format 1), verbatim but
    /// for its name and the tuple it returns: what older shims, daemons and
    /// `telemetryctl`s run.
    fn parse_format_1(text: &str) -> (Vec<OldEntry>, Vec<usize>) {
        let mut entries = Vec::new();
        let mut bad_lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(product), Some(mode)) = (words.next(), words.next()) else {
                bad_lines.push(i + 1);
                continue;
            };
            let mut since = None;
            let mut last_off = None;
            let mut extra = false;
            for w in words {
                match w.strip_prefix("off=") {
                    Some(t) if last_off.is_none() => last_off = Some(t.to_string()),
                    None if since.is_none() && last_off.is_none() => since = Some(w.to_string()),
                    _ => extra = true,
                }
            }
            let valid_product = product == "*"
                || crate::validate_name("product", product, &crate::Limits::default()).is_ok();
            match (valid_product, Mode::parse(mode), extra) {
                (true, Some(mode), false) => {
                    entries.push((product.to_string(), mode, since, last_off))
                }
                _ => bad_lines.push(i + 1),
            }
        }
        (entries, bad_lines)
    }

    #[test]
    fn older_parsers_read_a_versioned_file_as_the_same_decisions() {
        let mut f = ConsentFile::default();
        f.set_version("cfdev", Mode::Off, Some("t1".into()), Some(1));
        f.set_version("cfdev", Mode::On, Some("t2".into()), Some(3));
        f.set_version("other", Mode::Local, None, Some(2));
        f.set("plain", Mode::On, Some("t3".into()));
        let text = f.render();
        assert!(text.contains("cfdev on t2 off=t1 #+ version=3\n"), "{text}");
        let (old, old_bad) = parse_format_1(&text);
        assert!(old_bad.is_empty(), "format 1 rejects lines of {text}");
        let new = ConsentFile::parse(&text);
        assert!(new.bad_lines.is_empty());
        let as_old: Vec<_> = new
            .entries
            .iter()
            .map(|e| {
                (
                    e.product.clone(),
                    e.mode,
                    e.since.clone(),
                    e.last_off.clone(),
                )
            })
            .collect();
        assert_eq!(old, as_old);
        let versions: Vec<_> = new.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, [Some(3), Some(2), None]);
        // What format 1 would have made of the version as a plain token:
        // the line is invalid, so the product would read as off.
        assert_eq!(parse_format_1("cfdev on t2 version=3\n").1, vec![1]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_versions_read_as_absent() {
        let f = ConsentFile::parse(
            "a on t off=t0 colour=blue #+ version=4 future=x\n\
             b on #+ version=0\n\
             c on t #+ version=seven # a note version=9\n\
             d on t #+version=2\n\
             e on # version=5\n\
             f on t Version=2\n\
             g on t off=1 off=2\n",
        );
        assert_eq!(f.bad_lines, vec![6, 7]);
        let v = |p: &str| f.get(p).unwrap().version;
        assert_eq!(v("a"), Some(4));
        assert_eq!(f.get("a").unwrap().last_off.as_deref(), Some("t0"));
        assert_eq!(
            (v("b"), v("c"), v("d"), v("e")),
            (None, None, Some(2), None)
        );
    }

    #[test]
    fn a_product_named_only_by_lines_not_understood_is_unclear() {
        let f = ConsentFile::parse(
            "cfdev onn t\n\
             acme\n\
             zed on t\n\
             zed maybe t\n\
             * maybe\n\
             Bad! on t\n",
        );
        assert_eq!(f.bad_lines, vec![1, 2, 4, 5, 6]);
        assert_eq!(f.unclear_products, vec!["cfdev", "acme", "zed"]);
        assert!(f.unclear("cfdev") && f.unclear("acme"));
        // A line understood decides it; a name no line gives is not unclear.
        assert!(!f.unclear("zed") && !f.unclear("other") && !f.unclear("*"));
    }

    #[test]
    fn opt_out_values() {
        for v in ["1", "true", "yes", "false", "anything"] {
            assert!(env_opts_out(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("0"), Some(" 0 ")] {
            assert!(!env_opts_out(v), "{v:?}");
        }
    }

    /// A value that is not UTF-8 is set, so it opts out: reading it as
    /// unset would fail open.
    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_opts_out() {
        use std::os::unix::ffi::OsStrExt;
        assert!(env_opts_out_os(Some(std::ffi::OsStr::from_bytes(b"\xff"))));
        assert!(env_opts_out_os(Some(std::ffi::OsStr::new("1"))));
        assert!(!env_opts_out_os(Some(std::ffi::OsStr::new("0"))));
        assert!(!env_opts_out_os(None));
    }

    #[test]
    fn the_system_file_fails_closed() {
        let user = ConsentFile::parse("cfdev on\n");
        // Any off wins, whatever comes after it.
        let later_on = ConsentFile::parse("cfdev OFF\n* on\n");
        assert_eq!(
            resolve("cfdev", Some(&later_on), false, Some(&user)).0,
            Mode::Off
        );
        // A damaged or unreadable file forces everything off.
        let damaged = ConsentFile::parse("cfdev of\n");
        assert_eq!(
            resolve("cfdev", Some(&damaged), false, Some(&user)),
            (Mode::Off, Layer::System)
        );
        let unreadable = ConsentFile::unreadable();
        assert_eq!(
            resolve("cfdev", Some(&unreadable), false, Some(&user)),
            (Mode::Off, Layer::System)
        );
        // An empty system file forces nothing.
        let empty = ConsentFile::parse("# nothing\n");
        assert_eq!(
            resolve("cfdev", Some(&empty), false, Some(&user)).0,
            Mode::On
        );
    }

    #[test]
    fn the_last_off_time_survives_turning_on_again() {
        let mut f = ConsentFile::default();
        f.set("cfdev", Mode::On, Some("t1".into()));
        assert_eq!(f.get("cfdev").unwrap().last_off, None);
        f.set("cfdev", Mode::Off, Some("t2".into()));
        f.set("cfdev", Mode::On, Some("t3".into()));
        let again = ConsentFile::parse(&f.render());
        let e = again.get("cfdev").unwrap();
        assert_eq!(
            (e.mode, e.since.as_deref(), e.last_off.as_deref()),
            (Mode::On, Some("t3"), Some("t2"))
        );
    }
}
