#!/usr/bin/env bash
# Build for Windows on this Linux machine and run the Windows tests under
# wine (facts in ../shared/notes/windows-on-linux.md):
#
#   scripts/windows.sh setup     install the toolchain, wine and the DLL wine lacks
#   scripts/windows.sh build     cross-build every binary for x86_64-pc-windows-gnu
#   scripts/windows.sh test      the unit tests of proto, client and daemon under wine
#   scripts/windows.sh check ARGS...   cargo check for the target with ARGS
#   scripts/windows.sh macos      type-check proto, platform and client for macOS
#   scripts/windows.sh bench [N]  the transport's cost: named pipe under wine
#                                 against a Unix socket here (BENCHMARKS.md)
#
# Debian's rustc-web (1.96, with the standard library's source) builds the
# standard library for the target (-Zbuild-std); rustup's toolchain stays
# first on PATH for everything else. The target dir and the wine prefix live
# under ~/.cache/telemetryd-windows (slow one-time work, never required:
# deleting it only costs time).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${TELEMETRY_WINDOWS_CACHE:-$HOME/.cache/telemetryd-windows}"
target=x86_64-pc-windows-gnu
# Build dirs are kept per generation: the lock file, the root manifest and
# the compiler. Cargo never deletes old artifacts, so a change would add a
# second copy of every crate (about 8 GB); setup removes generations unused
# for a day, and two checkouts of different generations on one machine do
# not wipe each other's.
generation=$(cat Cargo.lock Cargo.toml <(/usr/bin/rustc --version 2>/dev/null || true) | sha256sum | cut -c1-16)
export CARGO_TARGET_DIR="$cache/target-$generation"
macos_target="$cache/macos-target-$generation"
export WINEPREFIX="$cache/wine"
export WINEDEBUG=-all
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
export CARGO_TERM_COLOR=never
cargo=/usr/bin/cargo
build_std=(-Zbuild-std=std,panic_abort --target "$target")

setup() {
    local need=()
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q . || need+=(rustc-web cargo-web)
    [ -d /usr/lib/rustlib/src/rust/library ] || need+=(rust-web-src)
    command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
    command -v wine >/dev/null || need+=(wine64)
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    mkdir -p "$cache"
    # The one-dir layout before generations: kept if it is this one.
    if [ "$(cat "$cache/target.stamp" 2>/dev/null)" = "$generation" ]; then
        [ -e "$CARGO_TARGET_DIR" ] || mv "$cache/target" "$CARGO_TARGET_DIR" 2>/dev/null || true
        [ -e "$macos_target" ] || mv "$cache/macos-target" "$macos_target" 2>/dev/null || true
    fi
    rm -rf "$cache/target" "$cache/macos-target" "$cache/target.stamp" "$cache/native-bench-target"
    mkdir -p "$CARGO_TARGET_DIR" "$macos_target"
    touch "$CARGO_TARGET_DIR" "$macos_target"
    find "$cache" -mindepth 1 -maxdepth 1 \( -name 'target-*' -o -name 'macos-target-*' -o -name 'native-bench-target-*' \) \
        ! -name "*-$generation" -mtime +0 -exec rm -rf {} +
    # Wine 8 lacks bcryptprimitives.dll, which Rust's std imports for
    # ProcessPrng: every Rust .exe fails with c0000135 without it.
    local dll="$cache/bcryptprimitives.dll"
    if [ ! -f "$dll" ]; then
        cat > "$cache/bcp.c" <<'C'
#include <windows.h>
#include <bcrypt.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    return BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
C
        x86_64-w64-mingw32-gcc -shared -o "$dll" "$cache/bcp.c" -lbcrypt
    fi
    if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
        echo "creating the wine prefix $WINEPREFIX"
        wineboot --init >/dev/null 2>&1 || true
    fi
    cp "$dll" "$WINEPREFIX/drive_c/windows/system32/"
}

case "${1:-}" in
    setup) setup ;;
    build)
        setup
        $cargo build "${build_std[@]}" --workspace --bins --exclude telemetry-bench --exclude telemetry-tests
        ls -la "$CARGO_TARGET_DIR/$target/debug/"*.exe
        ;;
    test)
        setup
        # The daemon the end-to-end test runs, then every unit test of the
        # crates that ship on Windows, then the end-to-end test.
        $cargo build "${build_std[@]}" -p telemetryd --bin telemetryd
        $cargo test "${build_std[@]}" --no-fail-fast -p telemetry-proto -p telemetry-platform -p telemetry-client -p telemetryd --lib
        $cargo test "${build_std[@]}" -p telemetry-client --test windows
        ;;
    check)
        shift
        setup
        $cargo check "${build_std[@]}" "$@"
        ;;
    macos)
        # The same standard-library build, for Darwin: only crates without
        # C build scripts (the daemon's bundled SQLite, zstd and TLS need a
        # Darwin SDK, which is not here).
        setup
        CARGO_TARGET_DIR="$macos_target" $cargo check -Zbuild-std=std,panic_abort \
            --target x86_64-apple-darwin -p telemetry-proto -p telemetry-platform -p telemetry-client --all-targets
        ;;
    bench)
        n="${2:-200}"
        setup
        # Optimised without fat LTO on both sides (the same code, a
        # fraction of the build): the ratio is what this measures.
        export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
        pkgs=(-p telemetryd --bin telemetryd -p telemetry-client --bin telemetry-emit --example transport_bench)
        $cargo build --release "${build_std[@]}" "${pkgs[@]}"
        # Per generation too, pruned with the others.
        native_target="$cache/native-bench-target-$generation"
        (unset RUSTC RUSTDOC RUSTC_BOOTSTRAP
         CARGO_TARGET_DIR="$native_target" cargo build --release "${pkgs[@]}")
        echo "== Unix socket, native ($n of each)"
        unix=$("$native_target/release/examples/transport_bench" "$n")
        echo "$unix"
        echo "== named pipe, under wine ($n of each)"
        win=$(wine "$CARGO_TARGET_DIR/$target/release/examples/transport_bench.exe" "$n" | tr -d '\r')
        echo "$win"
        python3 - "$unix" "$win" <<'PY'
import json, sys
u, w = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("%-10s %12s %12s %8s" % ("p50", "socket us", "pipe us", "ratio"))
for k in ("status", "acked", "shim"):
    a, b = u[k + "_p50_us"], w[k + "_p50_us"]
    print("%-10s %12.0f %12.0f %7.2fx" % (k, a, b, b / a))
PY
        ;;
    *)
        echo "usage: scripts/windows.sh setup|build|test|check|macos|bench [args]" >&2
        exit 2
        ;;
esac
