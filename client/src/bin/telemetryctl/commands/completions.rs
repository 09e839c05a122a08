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
pub fn run(args: &Args) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    telemetry_clidoc::generate(
        <crate::Cli as clap::CommandFactory>::command(),
        &args.shell,
        &mut out,
    )
    .map_err(Failure::internal)
}
