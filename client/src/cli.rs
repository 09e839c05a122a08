//! What the client binaries (`telemetry-emit`, `telemetryctl`) share about
//! their command lines.

/// clap's error message on one line, without its usage text or the
/// `error: ` prefix: a host CLI's output or a script's log gets one line.
pub fn error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let one_line = |paragraph: &str| {
        paragraph
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut paragraphs = rendered.split("\n\n");
    let text = one_line(paragraphs.next().unwrap_or_default());
    let mut line = text.strip_prefix("error: ").unwrap_or(&text).to_string();
    // clap's "tip: a similar subcommand exists: 'status'" is worth its
    // place on the line (git and cargo suggest too); the usage is not.
    for tip in paragraphs.map(one_line).filter(|p| p.starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(&tip);
    }
    line
}

/// Whether `flag` was given among the options of this process's command
/// line (after `--` everything is data), for when clap failed to parse it
/// and so cannot say.
pub fn flag_given(flag: &str) -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == flag)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_message_is_one_line_without_usage() {
        let err = clap::Command::new("x")
            .arg(clap::Arg::new("n").long("n").required(true))
            .try_get_matches_from(["x"])
            .unwrap_err();
        let line = super::error_line(&err);
        assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        assert!(
            line.starts_with("the following required arguments"),
            "{line}"
        );
        assert!(line.contains("--n"), "{line}");
    }

    #[test]
    fn a_suggestion_is_kept() {
        let err = clap::Command::new("x")
            .subcommand(clap::Command::new("status"))
            .try_get_matches_from(["x", "stauts"])
            .unwrap_err();
        let line = super::error_line(&err);
        assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        assert!(
            line.contains("'stauts'")
                && line.contains("tip: a similar subcommand exists: 'status'"),
            "{line}"
        );
    }
}
