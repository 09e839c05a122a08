//! `telemetryctl completions SHELL`: this tool's shell completions, from
//! its own clap definition (the packages install the same files for every
//! binary; `scripts/docs.sh`).

use crate::Failure;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  telemetryctl completions bash > ~/.local/share/bash-completion/completions/telemetryctl\n  telemetryctl completions zsh > ~/.zfunc/_telemetryctl\n  telemetryctl completions fish > ~/.config/fish/completions/telemetryctl.fish"
)]
pub struct Args {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
    pub shell: String,
}

/// Print the completions for `args.shell`.
/// Rendered in memory and printed as every other output is (`outln!`):
/// a reader that has gone ends the command quietly, also on Windows.
pub fn run(args: &Args) -> Result<(), Failure> {
    let mut text = Vec::new();
    telemetry_clidoc::generate(
        <crate::Cli as clap::CommandFactory>::command(),
        &args.shell,
        &mut text,
    )
    .map_err(Failure::internal)?;
    crate::write_out(format_args!("{}", String::from_utf8_lossy(&text)));
    Ok(())
}
