#!/usr/bin/env bash
# Fuzz the frame decoder and request handling for a bounded time.
# Not part of CI (it is open-ended by nature); run it before releases.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Without a nightly toolchain, fuzz with coverage instrumentation but no
# sanitizer; with one, cargo fuzz's default (AddressSanitizer) is better.
sanitizer=(--sanitizer none)
if rustc --version | grep -q nightly; then sanitizer=(); fi
for target in frame_decoder request_handling; do
    echo "== fuzzing $target for ${secs}s"
    cargo fuzz run "${sanitizer[@]}" "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
