//! Man pages and shell completions for every binary, rendered from the
//! binary's own clap definition, so they cannot drift from `--help`.
//!
//! Each binary calls [`generate_if_asked`] first thing in `main`: invoked
//! as `BINARY --generate-docs man|bash|zsh|fish|elvish|powershell`, it
//! prints that document and exits, before its own argument parsing (whose
//! required arguments would refuse the call). `--generate-docs man DIR`
//! writes a page for the binary and one per subcommand
//! (`telemetryctl-status.1`, which the main page refers to) into DIR. `scripts/docs.sh` runs the
//! built binaries this way for the packages; `telemetryctl completions
//! SHELL` is the public form for users.

use std::ffi::OsString;
use std::io::Write;

/// The argument that asks for a document.
pub const FLAG: &str = "--generate-docs";

/// The documents there are.
pub const KINDS: &[&str] = &["man", "bash", "zsh", "fish", "elvish", "powershell"];

/// Write `kind` (see [`KINDS`]) for `cmd` to `out`. The document is
/// rendered in memory first: `clap_complete` panics when its writer fails
/// (`> /dev/full`, or a reader that has gone on Windows, where that is no
/// signal), and a failed write is an error here.
pub fn generate(cmd: clap::Command, kind: &str, out: &mut dyn Write) -> Result<(), String> {
    let mut text = Vec::new();
    render(cmd, kind, &mut text)?;
    out.write_all(&text)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

fn render(mut cmd: clap::Command, kind: &str, out: &mut Vec<u8>) -> Result<(), String> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    let shell = match kind {
        "man" => {
            return clap_mangen::Man::new(cmd)
                .render(out)
                .map_err(|e| format!("writing the man page: {e}"));
        }
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        "elvish" => Shell::Elvish,
        "powershell" => Shell::PowerShell,
        other => {
            return Err(format!(
                "unknown document {other:?}: one of {}",
                KINDS.join(", ")
            ))
        }
    };
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// When `args` (the process's, program name first) are
/// `--generate-docs KIND`, print KIND for `cmd()` and return the exit
/// code (0; 1 when the pages cannot be written; 2 for an unknown KIND);
/// otherwise `None`, and the binary
/// goes on as usual.
pub fn generate_if_asked(
    args: impl IntoIterator<Item = OsString>,
    cmd: impl FnOnce() -> clap::Command,
) -> Option<u8> {
    let mut args = args.into_iter().skip(1);
    if args.next()? != FLAG {
        return None;
    }
    let kind = args.next().map(|k| k.to_string_lossy().into_owned());
    let cmd = cmd();
    let name = cmd.get_name().to_string();
    if let (Some("man"), Some(dir)) = (kind.as_deref(), args.next()) {
        let dir = std::path::PathBuf::from(dir);
        // Made if missing, as `install -d` would: a packaging script's
        // staging directory often is not there yet.
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir));
        return Some(match written {
            Ok(()) => 0,
            Err(e) => {
                eprintln!(
                    "{name}: error: writing man pages into {}: {e}",
                    dir.display()
                );
                1
            }
        });
    }
    let mut out = std::io::stdout().lock();
    let result = match kind {
        Some(kind) => generate(cmd, &kind, &mut out),
        None => Err(format!("{FLAG} needs one of {}", KINDS.join(", "))),
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            2
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("demo")
            .about("A demo.")
            .arg(
                clap::Arg::new("product")
                    .long("product")
                    .help("The product."),
            )
            .subcommand(clap::Command::new("status").about("Show status."))
    }

    #[test]
    fn every_kind_renders_from_the_definition() {
        for kind in KINDS {
            let mut out = Vec::new();
            generate(cmd(), kind, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("demo"), "{kind}: {text}");
            if *kind != "man" {
                assert!(text.contains("status"), "{kind}: {text}");
            }
        }
        let mut man = Vec::new();
        generate(cmd(), "man", &mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(
            man.contains(".TH demo") && man.contains("\\-\\-product"),
            "{man}"
        );
        assert!(generate(cmd(), "tcsh", &mut Vec::new()).is_err());
    }

    /// A reader that has gone.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_fails_is_an_error_not_a_panic() {
        for kind in KINDS {
            let e = generate(cmd(), kind, &mut Gone).unwrap_err();
            assert!(e.contains("broken pipe"), "{kind}: {e}");
        }
    }

    #[test]
    fn only_the_flag_first_generates() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(generate_if_asked(args(&["demo", "status"]), cmd).is_none());
        assert!(generate_if_asked(args(&["demo"]), cmd).is_none());
        assert!(generate_if_asked(args(&["demo", "status", FLAG, "man"]), cmd).is_none());
    }
}
