#!/usr/bin/env bash
# Man pages and shell completions for every binary, from the built
# binaries themselves (`BINARY --generate-docs KIND`, rendered from each
# one's clap definition, so they match --help): what the packages install.
#
#   scripts/docs.sh OUT [BINDIR]     BINDIR defaults to target/release
#
# Writes OUT/man/man1/NAME.1 (and NAME-SUBCOMMAND.1), OUT/completions/bash/NAME,
# OUT/completions/zsh/_NAME and OUT/completions/fish/NAME.fish.
set -euo pipefail
out=${1:?usage: scripts/docs.sh OUT [BINDIR]}
bindir=${2:-"$(dirname "$0")/../target/release"}
bins=(telemetryd telemetryctl telemetry-emit telemetry-report telemetry-broker)
mkdir -p "$out/man/man1" "$out/completions/bash" "$out/completions/zsh" "$out/completions/fish"
for b in "${bins[@]}"; do
    exe="$bindir/$b"
    [ -x "$exe" ] || { echo "docs.sh: $exe is missing: build the binaries first (cargo build --release --workspace --bins), or pass their directory" >&2; exit 1; }
    # The binary's page and one per subcommand (NAME-SUB.1).
    "$exe" --generate-docs man "$out/man/man1"
    "$exe" --generate-docs bash > "$out/completions/bash/$b"
    "$exe" --generate-docs zsh > "$out/completions/zsh/_$b"
    "$exe" --generate-docs fish > "$out/completions/fish/$b.fish"
done
echo "docs.sh: man pages and completions for ${#bins[@]} binaries in $out"
