#!/usr/bin/env bash
# The whole test suite, one stage after another, each timed: what the
# README's test command and CI (.ci/run) run. Installs what the tests need
# and this machine lacks (Debian packages, DuckDB in a venv, the Python
# SDK's dev tools in its own venv); everything else is started by the tests.
#
#   scripts/test-all.sh            every stage
#   scripts/test-all.sh go node    only these stages (names below)
#
# Stages: prereqs fmt clippy cargo spark windows package powerloss go node python
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=never

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(prereqs fmt clippy cargo spark windows package powerloss go node python)

prereqs() {
    local need=()
    # The consent tests trace the shim with strace and drive a prompt on a
    # pseudo-terminal with script(1).
    command -v strace >/dev/null || need+=(strace)
    command -v script >/dev/null || need+=(bsdutils)
    # The service-manager tests check the unit files with systemd's own tools.
    command -v systemd-analyze >/dev/null || need+=(systemd)
    command -v systemd-socket-activate >/dev/null || need+=(systemd)
    # The report test renders index.html in headless Chromium.
    command -v chromium >/dev/null || need+=(chromium)
    # The man pages are rendered with groff (tests/tests/docs.rs).
    command -v groff >/dev/null || need+=(groff-base)
    # The README's JSON-lines example (tests/tests/json_lines.rs).
    command -v socat >/dev/null || need+=(socat)
    # The SDKs: Go, Node, and venvs for DuckDB and the Python SDK's tools.
    command -v go >/dev/null || need+=(golang-go)
    command -v node >/dev/null || need+=(nodejs)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    # DuckDB for tests/tests/report.rs (sql/report.sql must give the
    # report's numbers). The test creates the same venv itself if it is
    # missing; doing it here keeps the download out of the timed test. Keep
    # the version in step with DUCKDB_VERSION in that test.
    local venv="${CARGO_TARGET_DIR:-target}/duckdb-venv"
    if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
        echo "installing duckdb into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q duckdb==2.0.1
    fi
}

fmt() { cargo fmt --all -- --check; }
# The tests behind the tests crate's stage features are linted too.
clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p telemetry-tests --all-targets --features spark,powerloss -- -D warnings
}
cargo_tests() { cargo test --workspace; }

# The SDKs test against the daemon the workspace builds (TELEMETRYD_BIN).
daemon_bin() {
    cargo build --workspace --bins -q
    export TELEMETRYD_BIN="${TELEMETRYD_BIN:-$root/${CARGO_TARGET_DIR:-target}/debug/telemetryd}"
    export TELEMETRYCTL_BIN="${TELEMETRYCTL_BIN:-$(dirname "$TELEMETRYD_BIN")/telemetryctl}"
}

# sql/report.spark.sql in Apache Spark (PySpark, local mode, on the JVM)
# against the real telemetry-report (tests/tests/report_sql.rs, behind the
# tests crate's `spark` feature so that `cargo test` does not start a JVM).
# PySpark's wheel carries Spark's jars (450 MB): its venv is cached outside
# the clone, in ~/.cache/telemetryd-spark. Keep the version in step with
# PYSPARK_VERSION in that test.
spark_tests() {
    if ! command -v java >/dev/null; then
        echo "installing openjdk-17-jre-headless"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless
    fi
    export TELEMETRY_SPARK_VENV="${TELEMETRY_SPARK_VENV:-$HOME/.cache/telemetryd-spark/venv}"
    if ! "$TELEMETRY_SPARK_VENV/bin/python" -c 'import pyspark' 2>/dev/null; then
        echo "installing pyspark into $TELEMETRY_SPARK_VENV"
        python3 -m venv "$TELEMETRY_SPARK_VENV"
        "$TELEMETRY_SPARK_VENV/bin/pip" install -q pyspark==4.3.0
    fi
    cargo build --workspace --bins -q
    cargo test -p telemetry-tests --features spark --test report_sql spark
}

# Cross-built for Windows and run under wine (scripts/windows.sh; its
# target dir and wine prefix are cached in ~/.cache/telemetryd-windows);
# then the crates without C type-checked for macOS with the same toolchain.
windows_tests() { scripts/windows.sh test && scripts/windows.sh macos; }

# The .deb, .rpm and portable tarball from the debug binaries (nfpm, cached
# in ~/.cache/telemetryd-package), lintian and rpmlint, and the README's
# walkthrough from the unpacked .deb (scripts/test-package.sh).
package_tests() { scripts/test-package.sh; }

# Power loss: telemetry-powercut's own proofs that its FUSE file system
# drops everything not fsynced at a cut (plain files, SQLite in WAL mode),
# then tests/tests/power_loss.rs (behind the tests crate's `powerloss`
# feature): the daemon on that file system under real shims. FUSE needs
# /dev/fuse and Debian fuse3's fusermount3; TELEMETRY_POWERLOSS=1 makes a
# missing FUSE a failure instead of a skip (the `cargo` stage skips them
# on a machine without fuse3).
powerloss_tests() {
    if ! command -v fusermount3 >/dev/null; then
        echo "installing fuse3"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
    fi
    export TELEMETRY_POWERLOSS=1
    cargo test -p telemetry-powercut
    cargo build --workspace --bins -q
    cargo test -p telemetry-tests --features powerloss --test power_loss
}

go_sdk() {
    daemon_bin
    cd "$root/sdk/go"
    local unformatted
    unformatted=$(gofmt -l .)
    [ -z "$unformatted" ] || { echo "gofmt: not formatted: $unformatted"; return 1; }
    go vet ./...
    GOOS=windows go vet ./...
    go test -count=1 ./...
}

node_sdk() {
    daemon_bin
    cd "$root/sdk/node"
    for f in $(find . -name '*.js' -o -name '*.cjs' -o -name '*.mjs' | grep -v node_modules); do
        node --check "$f"
    done
    node --test
}

python_sdk() {
    daemon_bin
    "$root/sdk/python/run-tests.sh"
}

total_start=$(date +%s)
for stage in "${stages[@]}"; do
    case "$stage" in
        prereqs) fn=prereqs ;;
        fmt) fn=fmt ;;
        clippy) fn=clippy ;;
        cargo) fn=cargo_tests ;;
        spark) fn=spark_tests ;;
        windows) fn=windows_tests ;;
        package) fn=package_tests ;;
        powerloss) fn=powerloss_tests ;;
        go) fn=go_sdk ;;
        node) fn=node_sdk ;;
        python) fn=python_sdk ;;
        *) echo "unknown stage $stage (stages: prereqs fmt clippy cargo spark windows package powerloss go node python)" >&2; exit 2 ;;
    esac
    echo "== $stage"
    start=$(date +%s)
    # `;`, not `&&`: after `&&` errexit would not apply inside the stage.
    ( cd "$root"; "$fn" )
    # The target dir's size and the disk's free space too: a CI run once
    # failed on a full disk.
    echo "== $stage: $(( $(date +%s) - start )) s, target $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1), $(df -h . | awk 'NR==2 {print $4}') free"
done
echo "== all stages passed in $(( $(date +%s) - total_start )) s"
