#!/usr/bin/env bash
# The release artifacts, from binaries already built (no second build):
# a .deb and an .rpm (nfpm, configured in packaging/nfpm.yaml), a portable
# tarball of the stripped binaries with their man pages and completions,
# and SHA256SUMS over all three.
#
#   scripts/package.sh OUT [BINDIR]     BINDIR defaults to target/release
#
# Writes to OUT:
#   telemetryd_VERSION-1_ARCH.deb, telemetryd-VERSION-1.ARCH.rpm
#   telemetryd-VERSION-ARCH-linux.tar.gz   bin/, man/man1/, completions/,
#                                          PORTABILITY (the glibc floor)
#   SHA256SUMS                             `sha256sum -c SHA256SUMS` in OUT
#
# The binaries are dynamically linked against glibc, except telemetry-emit,
# a static PIE (client/build.rs; it needs no libc at run time). The oldest
# glibc they
# run on is the highest GLIBC_x.y among their versioned symbol references
# (objdump -T): the dynamic linker refuses to start a binary that needs a
# version its libc lacks. It is printed, written to PORTABILITY and becomes
# the packages' libc dependency.
#
# Environment: TELEMETRYD_MAINTAINER (the packages' Maintainer/Packager),
# TELEMETRYD_HOMEPAGE (their URL), SOURCE_DATE_EPOCH (file times; default:
# the last commit's time, so a rebuild from the same commit and binaries
# gives the same tarball), NFPM (an nfpm binary to use).
set -euo pipefail
out=${1:?usage: scripts/package.sh OUT [BINDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
bindir=${2:-"$root/target/release"}
bins=(telemetryd telemetryctl telemetry-emit telemetry-report telemetry-broker)
nfpm_version=v2.45.2

die() { echo "package.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is missing: $2"; }

need objdump "install binutils (apt-get install binutils)"
need strip "install binutils (apt-get install binutils)"
need readelf "install binutils (apt-get install binutils)"
need gzip "install gzip"
need sha256sum "install coreutils"
for b in "${bins[@]}"; do
    [ -x "$bindir/$b" ] || die "$bindir/$b is missing: build the binaries first (cargo build --release --workspace --bins), or pass their directory as BINDIR"
done

# nfpm: $NFPM, else on PATH, else the pinned version in a cache outside the
# clone (go install, through the Go module proxy).
nfpm=${NFPM:-}
if [ -z "$nfpm" ]; then
    cache_bin="${XDG_CACHE_HOME:-$HOME/.cache}/telemetryd-package/bin"
    if command -v nfpm >/dev/null; then
        nfpm=$(command -v nfpm)
    elif [ -x "$cache_bin/nfpm" ]; then
        nfpm=$cache_bin/nfpm
    else
        command -v go >/dev/null || die "nfpm is missing and so is Go to install it: install Go (apt-get install golang-go), or nfpm itself (https://nfpm.goreleaser.com/install/) and set NFPM=PATH"
        echo "package.sh: installing nfpm $nfpm_version into $cache_bin"
        GOBIN=$cache_bin go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version" \
            || die "go install nfpm@$nfpm_version failed (see above): check the Go module proxy (GOPROXY), or install nfpm and set NFPM=PATH"
        nfpm=$cache_bin/nfpm
    fi
fi
[ -x "$nfpm" ] || die "NFPM=$nfpm is not an executable"

# The version: the workspace's, and the binaries must say the same (a
# stale BINDIR would otherwise be packaged under the new number).
version=$(awk '
    /^\[/ { in_pkg = ($0 == "[workspace.package]") }
    in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
' "$root/Cargo.toml")
[ -n "$version" ] || die "no version under [workspace.package] in $root/Cargo.toml"
for b in "${bins[@]}"; do
    got=$("$bindir/$b" --version) || die "$bindir/$b --version failed"
    [ "$got" = "$b $version" ] || die "$bindir/$b --version says '$got', Cargo.toml says $version: rebuild the binaries"
done

# The architecture, from the binaries themselves (they may be cross-built).
machine=$(readelf -h "$bindir/telemetryd" | sed -n 's/^ *Machine: *//p')
case "$machine" in
    *X86-64*) arch=x86_64 deb_arch=amd64 ;;
    AArch64) arch=aarch64 deb_arch=arm64 ;;
    *) die "$bindir/telemetryd is built for '$machine'; this script knows x86-64 and AArch64" ;;
esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/telemetryd-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/bin" "$stage/systemd/user" "$stage/systemd/system" "$stage/sysusers" \
    "$stage/products" "$stage/launchd"

# Binaries, stripped the way Debian's dh_strip strips executables.
for b in "${bins[@]}"; do
    cp "$bindir/$b" "$stage/bin/$b"
    strip --remove-section=.comment --remove-section=.note "$stage/bin/$b"
    chmod 0755 "$stage/bin/$b"
done

# Man pages and completions, from the stripped binaries themselves.
"$root/scripts/docs.sh" "$work/docs" "$stage/bin" >/dev/null
cp -R "$work/docs/completions" "$stage/completions"
mkdir -p "$stage/man/man1"
for page in "$work/docs/man/man1/"*.1; do
    gz="$stage/man/man1/${page##*/}.gz"
    gzip -9n <"$page" >"$gz"
done

# Unit files. In the repository their ExecStart= is /usr/local/bin/NAME, the
# template `telemetryd install` replaces with the binary's path; the
# packages put the binaries in /usr/bin.
for scope in user system; do
    for unit in "$root/systemd/$scope/"*.service "$root/systemd/$scope/"*.socket; do
        sed 's|^ExecStart=/usr/local/bin/|ExecStart=/usr/bin/|' "$unit" >"$stage/systemd/$scope/$(basename "$unit")"
    done
done
if grep -rl '/usr/local' "$stage/systemd"; then
    die "the unit files above still name /usr/local after rewriting ExecStart=: update the rewrite in $0"
fi
cp "$root/systemd/system/telemetry.sysusers.conf" "$stage/sysusers/telemetry.conf"
cp "$root/catalog/cfdev.toml" "$stage/products/"
cp "$root/launchd/"*.plist "$stage/launchd/"

# The oldest glibc: the highest GLIBC_x.y any binary references.
glibc_versions() {
    local b
    for b in "${bins[@]}"; do
        objdump -T "$stage/bin/$b"
    done | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV
}
glibc_floor=$(glibc_versions | tail -1)
[ -n "$glibc_floor" ] || die "no GLIBC_ symbol versions in the binaries (objdump -T): are they static? Then state that instead of a glibc floor"
gcc_floor=$(for b in "${bins[@]}"; do objdump -T "$stage/bin/$b"; done \
    | grep -o 'GCC_[0-9][0-9.]*' | sed 's/^GCC_//' | sort -uV | tail -1)
needed=$(for b in "${bins[@]}"; do readelf -d "$stage/bin/$b"; done \
    | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
for lib in $needed; do
    case "$lib" in
        libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*.so.*) ;;
        libgcc_s.so.1) ;;
        *) die "the binaries need $lib, which the packages' dependencies do not cover: add it to $0 and packaging/nfpm.yaml" ;;
    esac
done

# Dependencies. Debian: the packages that hold those libraries. rpm: the
# libraries themselves, each with its highest symbol version, as rpm's own
# dependency generator names them.
export PKG_LIBC_DEB="libc6 (>= $glibc_floor)"
export PKG_LIBGCC_DEB=
if grep -qx libgcc_s.so.1 <<<"$needed"; then
    PKG_LIBGCC_DEB="libgcc-s1 (>= ${gcc_floor:-3.0})"
fi
bits=
if [ "$(readelf -h "$stage/bin/telemetryd" | sed -n 's/^ *Class: *//p')" = ELF64 ]; then
    bits='(64bit)'
fi
i=0
for lib in $needed; do
    # readelf -V: under "Version needs section '.gnu.version_r'", a
    # "File: LIB" line, then one "Name: VERSION" line per version needed.
    ver=$(for b in "${bins[@]}"; do readelf -V "$stage/bin/$b"; done | awk -v lib="$lib" '
        /section \047/ { needs = /\.gnu\.version_r/; cur = "" }
        needs { for (i = 1; i < NF; i++) if ($i == "File:") cur = $(i + 1) }
        needs && cur == lib { for (i = 1; i < NF; i++) if ($i == "Name:") print $(i + 1) }
    ' | sort -uV | tail -1)
    i=$((i + 1))
    [ "$i" -le 8 ] || die "more than 8 shared libraries needed; add PKG_RPM_REQ_$i to packaging/nfpm.yaml"
    if [ -n "$ver" ]; then
        export "PKG_RPM_REQ_$i=$lib($ver)$bits"
    else
        export "PKG_RPM_REQ_$i=$lib()$bits"
    fi
done
while [ "$i" -lt 8 ]; do i=$((i + 1)); export "PKG_RPM_REQ_$i="; done

export PKG_STAGE=$stage PKG_VERSION=$version PKG_ARCH=$deb_arch
export PKG_MAINTAINER=${TELEMETRYD_MAINTAINER:-telemetryd maintainers <maintainers@telemetryd.invalid>}
export PKG_HOMEPAGE=${TELEMETRYD_HOMEPAGE:-}

# Packages. nfpm.yaml, with one rpm %doc entry per documentation file
# appended to its contents (nfpm does not expand globs in those); nfpm
# reads its relative paths from the repository's root.
cp "$root/packaging/nfpm.yaml" "$work/nfpm.yaml"
for f in "$stage/man/man1/"*; do
    printf '  - {src: "%s", dst: "/usr/share/man/man1/%s", type: doc, packager: rpm, file_info: {mode: 0644}}\n' "$f" "${f##*/}"
done >>"$work/nfpm.yaml"
for f in "$stage/launchd/"*; do
    printf '  - {src: "%s", dst: "/usr/share/doc/telemetryd/launchd/%s", type: doc, packager: rpm, file_info: {mode: 0644}}\n' "$f" "${f##*/}"
done >>"$work/nfpm.yaml"
rm -f "$out"/telemetryd*.deb "$out"/telemetryd*.rpm "$out"/telemetryd-*.tar.gz "$out/SHA256SUMS"
# nfpm compresses on one core (the .deb's xz takes most of the time), so
# the .deb, the .rpm and the tarball are built side by side.
declare -A nfpm_pid
for fmt in deb rpm; do
    (cd "$root" && exec "$nfpm" package --config "$work/nfpm.yaml" --packager "$fmt" --target "$out/") \
        >"$work/nfpm-$fmt.log" 2>&1 &
    nfpm_pid[$fmt]=$!
done

# The oldest release of each distribution whose glibc is at least $1,
# for the reader of PORTABILITY (their stable releases' glibc versions).
distros_from() {
    local v family release seen=" " list=
    while read -r v family release; do
        case "$seen" in *" $family "*) continue ;; esac
        if [ "$(printf '%s\n%s\n' "$1" "$v" | sort -V | head -1)" = "$1" ]; then
            list="$list, $family $release"
            seen="$seen$family "
        fi
    done <<'EOF'
2.28 RHEL 8
2.31 Debian 11
2.31 Ubuntu 20.04
2.34 RHEL 9
2.35 Ubuntu 22.04
2.36 Debian 12
2.39 Ubuntu 24.04
2.41 Debian 13
EOF
    if [ -n "$list" ]; then
        printf '%s and later' "${list#, }"
    else
        printf 'newer than every release listed in scripts/package.sh'
    fi
}

# The portable tarball.
name=telemetryd-$version-$arch-linux
tdir=$work/$name
mkdir -p "$tdir/man"
cp -R "$stage/bin" "$tdir/bin"
cp -R "$work/docs/man/man1" "$tdir/man/man1"
cp -R "$work/docs/completions" "$tdir/completions"
cat >"$tdir/PORTABILITY" <<EOF
telemetryd $version for Linux on $arch.

glibc: $glibc_floor
  The binaries are dynamically linked against glibc and run on glibc
  $glibc_floor or newer: $(distros_from "$glibc_floor").
  telemetry-emit is linked statically (a static PIE: it starts without the
  dynamic loader) and needs no libc; it carries the glibc it was built
  with until it is rebuilt.
  This is the highest GLIBC_x.y among their versioned symbol references
  (objdump -T); an older glibc refuses to start them ("version
  \`GLIBC_$glibc_floor' not found").
Shared libraries: $(echo "$needed" | tr '\n' ' ' | sed 's/ $//')
Symbol versions needed from glibc: $(glibc_versions | tr '\n' ' ' | sed 's/ $//')

bin/                   telemetryd, telemetryctl, telemetry-emit,
                       telemetry-report, telemetry-broker (stripped)
man/man1/              man pages
completions/           bash, zsh (_NAME) and fish completions
EOF
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$work" -cf - "$name" | gzip -n >"$out/$name.tar.gz"

for fmt in deb rpm; do
    wait "${nfpm_pid[$fmt]}" \
        || { cat "$work/nfpm-$fmt.log" >&2; die "nfpm failed to build the .$fmt (its output is above)"; }
done

(cd "$out" && sha256sum -- *.deb *.rpm "$name.tar.gz" >SHA256SUMS)

echo "package.sh: telemetryd $version for $arch, oldest glibc: $glibc_floor"
(cd "$out" && for f in *.deb *.rpm "$name.tar.gz" SHA256SUMS; do
    printf '  %-45s %s\n' "$f" "$(du -h "$f" | cut -f1)"
done)
