#!/usr/bin/env bash
# The packages' test (issue #17): builds the .deb, the .rpm and the
# portable tarball from the debug binaries with scripts/package.sh, lints
# them (lintian, rpmlint), checks the checksums and what goes where, then
# unpacks the .deb into a temporary root and runs the README's walkthrough
# from there. Nothing is installed on this machine beyond the tools below
# (apt-get, if missing): the machine's own /usr and /etc are never written.
#
#   scripts/test-package.sh
#
# Each check prints what it checked; the first failure stops the test with
# a message and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bins=(telemetryd telemetryctl telemetry-emit telemetry-report telemetry-broker)

fail() { echo "test-package: FAIL: $*" >&2; exit 1; }
# Each check's line ends with the seconds it took since the previous one.
last=$SECONDS
ok() { echo "ok: $* ($((SECONDS - last)) s)"; last=$SECONDS; }

# Tools. rpmlint needs python3-magic to recognise ELF files (without it,
# every binary check is silently skipped) and rpm2cpio and cpio to unpack.
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpmlint >/dev/null || need+=(rpmlint)
/usr/bin/python3 -c 'import magic' 2>/dev/null || need+=(python3-magic)
command -v rpm2cpio >/dev/null || need+=(rpm2cpio)
command -v rpm >/dev/null || need+=(rpm)
command -v cpio >/dev/null || need+=(cpio)
command -v ruby >/dev/null || need+=(ruby)
command -v zstd >/dev/null || need+=(zstd)
command -v objdump >/dev/null || need+=(binutils)
command -v man >/dev/null || need+=(man-db)
command -v groff >/dev/null || need+=(groff-base)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } \
        || fail "could not install ${need[*]} with apt-get: install them and run again"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/telemetryd-test-package.XXXXXX")
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- Build -----------------------------------------------------------------
target=${CARGO_TARGET_DIR:-target}
cargo build --workspace --bins -q || fail "cargo build --workspace --bins failed (output above)"
ok "cargo build --workspace --bins (debug)"
out=$tmp/out
scripts/package.sh "$out" "$target/debug" | tee "$tmp/package.log"
version=$(sed -n 's/^package\.sh: telemetryd \([^ ]*\) for .*/\1/p' "$tmp/package.log")
[ -n "$version" ] || fail "package.sh did not print the version line"
deb=$(find "$out" -name 'telemetryd_*.deb')
rpm=$(find "$out" -name 'telemetryd-*.rpm')
tarball=$(find "$out" -name 'telemetryd-*-linux.tar.gz')
{ [ -f "$deb" ] && [ -f "$rpm" ] && [ -f "$tarball" ]; } || fail "package.sh did not write a .deb, an .rpm and a tarball to $out"
ok "package.sh built $(basename "$deb"), $(basename "$rpm"), $(basename "$tarball")"

# --- Checksums -------------------------------------------------------------
(cd "$out" && sha256sum -c --quiet SHA256SUMS) || fail "sha256sum -c SHA256SUMS in $out"
for f in "$deb" "$rpm" "$tarball"; do
    grep -q " $(basename "$f")\$" "$out/SHA256SUMS" || fail "SHA256SUMS has no line for $(basename "$f")"
done
ok "SHA256SUMS covers the three artifacts and sha256sum -c accepts it"

# --- lintian ---------------------------------------------------------------
# Every tag at every level fails the test unless the package's own
# overrides (packaging/lintian-overrides, each with its reason) cover it;
# an override that no longer matches anything fails it too.
lintian_rc=0
lintian --fail-on error,warning,info,pedantic --display-info --pedantic "$deb" \
    >"$tmp/lintian.log" 2>&1 || lintian_rc=$?
grep -E '^[EWIPX]:' "$tmp/lintian.log" >"$tmp/lintian.tags" || true
if [ -s "$tmp/lintian.tags" ] || [ "$lintian_rc" -ne 0 ]; then
    cat "$tmp/lintian.log" >&2
    fail "lintian reports the above on $(basename "$deb") (exit $lintian_rc): fix it, or add an override with its reason to packaging/lintian-overrides"
fi
ok "lintian (errors, warnings, info, pedantic): clean, with the overrides in packaging/lintian-overrides"

# --- rpmlint ---------------------------------------------------------------
# rpmlint unpacks with `rpm2cpio | cpio -id`, and nfpm writes absolute paths
# into the rpm's cpio payload (nfpm#1122): plain cpio would write them into
# this machine's /usr and /etc. A cpio first on PATH adds
# --no-absolute-filenames; the check after rpmlint makes sure nothing
# appeared there.
real_cpio=$(command -v cpio)
mkdir -p "$tmp/shim"
printf '#!/bin/sh\nexec %s --no-absolute-filenames "$@"\n' "$real_cpio" >"$tmp/shim/cpio"
chmod 0755 "$tmp/shim/cpio"
rpm -qlp "$rpm" >"$tmp/rpm.files" 2>/dev/null || fail "rpm -qlp cannot list $(basename "$rpm")"
absent_before=$(while read -r f; do [ -e "$f" ] || echo "$f"; done <"$tmp/rpm.files")
(cd "$tmp" && PATH="$tmp/shim:$PATH" rpmlint -c "$root/packaging/rpmlint.toml" "$rpm") >"$tmp/rpmlint.log" 2>&1 \
    || { cat "$tmp/rpmlint.log" >&2; fail "rpmlint reports the findings above on $(basename "$rpm"): fix them, or add a filter with its reason to packaging/rpmlint.toml"; }
appeared=$(for f in $absent_before; do [ ! -e "$f" ] || echo "$f"; done)
[ -z "$appeared" ] || fail "rpmlint's unpacking wrote into this machine: $appeared (remove them; the cpio wrapper did not take effect)"
grep -q '0 errors, 0 warnings' "$tmp/rpmlint.log" || { cat "$tmp/rpmlint.log" >&2; fail "rpmlint's summary is not '0 errors, 0 warnings'"; }
grep -q 'no-binary' "$tmp/rpmlint.log" && fail "rpmlint did not see the ELF binaries (python3-magic missing?)"
ok "rpmlint: 0 errors, 0 warnings with packaging/rpmlint.toml; nothing written outside its temporary directory"

# --- What goes where -------------------------------------------------------
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|; s|/$||' >"$tmp/deb.files"
expect=(
    /etc/telemetry /etc/telemetry/catalog
    /usr/lib/systemd/user/telemetryd.socket /usr/lib/systemd/user/telemetryd.service
    /usr/lib/systemd/system/telemetryd.socket /usr/lib/systemd/system/telemetryd.service
    /usr/lib/systemd/system/telemetry-broker.service
    /usr/lib/sysusers.d/telemetry.conf
    /usr/share/telemetry/products/cfdev.toml
    /usr/share/doc/telemetryd/launchd/dev.telemetryd.agent.plist
    /usr/share/doc/telemetryd/launchd/dev.telemetryd.daemon.plist
)
for b in "${bins[@]}"; do
    expect+=("/usr/bin/$b" "/usr/share/man/man1/$b.1.gz"
        "/usr/share/bash-completion/completions/$b"
        "/usr/share/fish/vendor_completions.d/$b.fish")
done
for f in "${expect[@]}"; do
    grep -qx "$f" "$tmp/deb.files" || fail "the .deb has no $f"
    grep -qx "$f" "$tmp/rpm.files" || fail "the .rpm has no $f"
done
for b in "${bins[@]}"; do
    grep -qx "/usr/share/zsh/vendor-completions/_$b" "$tmp/deb.files" || fail "the .deb has no zsh completion /usr/share/zsh/vendor-completions/_$b"
    grep -qx "/usr/share/zsh/site-functions/_$b" "$tmp/rpm.files" || fail "the .rpm has no zsh completion /usr/share/zsh/site-functions/_$b"
done
grep -E '^/usr/share/man/man1/.' "$tmp/deb.files" | grep -v '\.1\.gz$' && fail "the man pages above are not gzipped"
grep -q '^/usr/local' "$tmp/deb.files" "$tmp/rpm.files" && fail "a package installs into /usr/local"
ok "both packages hold the binaries in /usr/bin, the units, sysusers.d, the manifest, the plists, gzipped man pages, bash/zsh/fish completions and /etc/telemetry{,/catalog}"

# The .deb's own maintainer scripts against a staged root (DPKG_ROOT, as dpkg
# --root sets it): a purge deletes the machine-wide daemon's state and the
# owner's consent with its lock files, and keeps the administrator's files; a
# remove keeps everything; neither touches this system.
stage="$tmp/root"
mkdir -p "$stage/var/lib/private/telemetry/outbox" "$stage/etc/telemetry/catalog"
ln -s private/telemetry "$stage/var/lib/telemetry"
touch "$stage/etc/telemetry/machine-consent" "$stage/etc/telemetry/.consent.lock" \
    "$stage/etc/telemetry/.consent.node-lock" "$stage/etc/telemetry/consent" \
    "$stage/etc/telemetry/catalog/mytool.toml" "$stage/var/lib/private/telemetry/events.sqlite3"
dpkg-deb -e "$deb" "$tmp/control"
for step in "prerm remove" "postrm remove"; do
    set -- $step
    DPKG_ROOT="$stage" sh "$tmp/control/$1" "$2" || fail "$1 $2 failed"
done
[ -e "$stage/var/lib/private/telemetry/events.sqlite3" ] && [ -e "$stage/etc/telemetry/machine-consent" ] \
    || fail "a remove (not a purge) deleted the daemon's state or consent"
DPKG_ROOT="$stage" sh "$tmp/control/postrm" purge || fail "postrm purge failed"
for gone in var/lib/private/telemetry var/lib/telemetry etc/telemetry/machine-consent \
    etc/telemetry/.consent.lock etc/telemetry/.consent.node-lock; do
    [ -e "$stage/$gone" ] || [ -L "$stage/$gone" ] && fail "postrm purge left /$gone"
done
for kept in etc/telemetry/consent etc/telemetry/catalog/mytool.toml; do
    [ -e "$stage/$kept" ] || fail "postrm purge deleted the administrator's /$kept"
done
set --
ok "the .deb's prerm/postrm under DPKG_ROOT: remove keeps the state, purge deletes the daemon's state and the owner's consent and keeps the administrator's files"

# rpm marks the documentation; deb and rpm depend on the glibc the binaries need.
# postinst makes the `telemetry` group, also where there is no
# systemd-sysusers (a container, another init): groupadd, once.
nosys="$tmp/nosysusers-bin"
mkdir -p "$nosys" "$stage/etc"
for tool in sh groupadd cat; do ln -s "$(command -v "$tool")" "$nosys/$tool"; done
printf 'root:x:0:\n' > "$stage/etc/group"
printf 'root:*::\n' > "$stage/etc/gshadow"
for run in first again; do
    PATH="$nosys" DPKG_ROOT="$stage" sh "$tmp/control/postinst" configure \
        || fail "postinst configure ($run run) without systemd-sysusers failed"
done
[ "$(grep -c '^telemetry:' "$stage/etc/group")" = 1 ] \
    || fail "postinst without systemd-sysusers did not make the telemetry group once: $(cat "$stage/etc/group")"
ok "the .deb's postinst makes the telemetry group with groupadd where systemd-sysusers is missing, once"

rpm -qdp "$rpm" 2>/dev/null | grep -qx /usr/share/man/man1/telemetryd.1.gz || fail "the .rpm does not mark its man pages as documentation"
dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= ' || fail "the .deb does not depend on libc6 (>= ...)"
rpm -qRp "$rpm" 2>/dev/null | grep -q '^libc\.so\.6(GLIBC_' || fail "the .rpm does not require libc.so.6(GLIBC_...)"
ok "dependencies: $(dpkg-deb -f "$deb" Depends) (.deb); $(rpm -qRp "$rpm" 2>/dev/null | grep -v '^rpmlib' | tr '\n' ' ')(.rpm)"

# --- The .deb, unpacked ----------------------------------------------------
pkgroot=$tmp/root
mkdir -p "$pkgroot"
dpkg-deb -x "$deb" "$pkgroot"
for unit in "$pkgroot"/usr/lib/systemd/*/*.service; do
    exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    case "$exec_path" in
        /usr/bin/*) [ -x "$pkgroot$exec_path" ] || fail "${unit#"$pkgroot"} runs $exec_path, which the package does not install" ;;
        *) fail "${unit#"$pkgroot"} has ExecStart=$exec_path, not a binary in /usr/bin" ;;
    esac
done
ok "every packaged service's ExecStart= is a packaged binary in /usr/bin"

for b in "${bins[@]}"; do
    got=$("$pkgroot/usr/bin/$b" --version) || fail "$b --version failed from the unpacked package"
    [ "$got" = "$b $version" ] || fail "$b --version says '$got', expected '$b $version'"
    readelf -S "$pkgroot/usr/bin/$b" | grep -q '\.debug_info' && fail "$b is not stripped (.debug_info present)"
done
ok "every unpacked binary answers --version with $version and is stripped"

man_out=$(MANWIDTH=80 man --warnings -P cat -l "$pkgroot/usr/share/man/man1/telemetryctl.1.gz" 2>"$tmp/man.err") \
    || fail "man -l telemetryctl.1.gz failed: $(cat "$tmp/man.err")"
[ ! -s "$tmp/man.err" ] || fail "man -l telemetryctl.1.gz warns: $(cat "$tmp/man.err")"
{ grep -q 'telemetryctl' <<<"$man_out" && grep -q 'SYNOPSIS' <<<"$man_out"; } || fail "man -l telemetryctl.1.gz rendered no synopsis"
ok "man -l renders the packaged telemetryctl(1) without warnings"

completion=$(bash -c "source '$pkgroot/usr/share/bash-completion/completions/telemetryctl' && complete -p telemetryctl") \
    || fail "the packaged bash completion for telemetryctl does not load"
ok "bash completion loads: $completion"

# The README's walkthrough, from the unpacked paths, with private XDG
# directories, the package's manifest directory as the only data dir and
# a system consent file under the temporary root, not /etc.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(TELEMETRY_[A-Z_]*\)=.*/\1/p')
export HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/run XDG_STATE_HOME=$tmp/state XDG_CONFIG_HOME=$tmp/config
export XDG_DATA_DIRS=$pkgroot/usr/share TELEMETRY_SYSTEM_CONSENT_FILE=$pkgroot/etc/telemetry/consent
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$XDG_STATE_HOME" "$XDG_CONFIG_HOME"
chmod 0700 "$XDG_RUNTIME_DIR"
bin=$pkgroot/usr/bin
"$bin/telemetryd" >"$tmp/telemetryd.log" 2>&1 &
daemon_pid=$!
deadline=$((SECONDS + 20))
until "$bin/telemetryctl" status >/dev/null 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/telemetryd.log" >&2; fail "the unpacked telemetryd exited (log above)"; }
    [ "$SECONDS" -lt "$deadline" ] || { cat "$tmp/telemetryd.log" >&2; fail "the unpacked telemetryd did not answer within 20 s (log above)"; }
    sleep 0.1
done
"$bin/telemetryctl" consent cfdev on || fail "telemetryctl consent cfdev on"
"$bin/telemetry-emit" --product cfdev --build 0.9.1 app_created buildpack=go || fail "telemetry-emit exited non-zero"
status=$("$bin/telemetryctl" status) || fail "telemetryctl status"
echo "$status"
grep -q "^manifest: *cfdev version [0-9]*: $pkgroot/usr/share/telemetry/products/cfdev.toml\$" <<<"$status" \
    || fail "telemetryctl status does not show the packaged manifest $pkgroot/usr/share/telemetry/products/cfdev.toml in use"
"$bin/telemetryctl" flush || fail "telemetryctl flush"
batch=$(find "$XDG_STATE_HOME/telemetry/outbox" -name '*.ndjson.zst' | head -1)
[ -n "$batch" ] || fail "no .ndjson.zst in $XDG_STATE_HOME/telemetry/outbox after flush"
line=$(zstd -dc "$batch")
echo "$line"
{ grep -q '"event":"app_created","product":"cfdev","build":"0.9.1"' <<<"$line" && grep -q '"data":{"buildpack":"go"}' <<<"$line"; } \
    || fail "the batch $batch does not hold the emitted app_created event"
kill "$daemon_pid"
wait "$daemon_pid" || fail "telemetryd did not exit 0 on SIGTERM (log: $(tail -3 "$tmp/telemetryd.log"))"
daemon_pid=
ok "README walkthrough from the unpacked .deb: consent, emit, status (packaged manifest), flush, the event in the outbox batch"

# --- The portable tarball --------------------------------------------------
mkdir -p "$tmp/tarball"
tar -xzf "$tarball" -C "$tmp/tarball"
tdir=$(find "$tmp/tarball" -mindepth 1 -maxdepth 1 -type d)
[ -f "$tdir/PORTABILITY" ] || fail "the tarball has no PORTABILITY file"
for b in "${bins[@]}"; do
    [ -x "$tdir/bin/$b" ] || fail "the tarball has no bin/$b"
    [ -f "$tdir/man/man1/$b.1" ] || fail "the tarball has no man/man1/$b.1"
done
floor=$(sed -n 's/^glibc: *//p' "$tdir/PORTABILITY")
[ -n "$floor" ] || fail "PORTABILITY states no glibc version (a 'glibc: X.Y' line)"
# Computed again with another tool: readelf's version-needs table.
needed_max=$(for b in "${bins[@]}"; do readelf -V "$tdir/bin/$b"; done \
    | grep -o 'Name: GLIBC_[0-9][0-9.]*' | sed 's/.*GLIBC_//' | sort -uV | tail -1)
[ "$floor" = "$needed_max" ] || fail "PORTABILITY says glibc $floor, but the binaries need GLIBC_$needed_max (readelf -V)"
for b in "${bins[@]}"; do objdump -T "$tdir/bin/$b"; done >"$tmp/objdump.txt"
grep -qE "GLIBC_${floor//./\\.}([^0-9.]|\$)" "$tmp/objdump.txt" \
    || fail "GLIBC_$floor is not among the binaries' symbol references (objdump -T)"
ok "the tarball states glibc $floor, the highest GLIBC_ version its binaries reference (readelf -V and objdump -T agree)"

# --- Homebrew --------------------------------------------------------------
ruby -c packaging/homebrew/telemetryd.rb >/dev/null || fail "ruby -c packaging/homebrew/telemetryd.rb"
ok "ruby -c packaging/homebrew/telemetryd.rb: syntax OK"

echo "test-package: all checks passed ($(du -h "$deb" | cut -f1) .deb, $(du -h "$rpm" | cut -f1) .rpm, $(du -h "$tarball" | cut -f1) tarball)"
