#!/bin/sh
# After remove or upgrade: let a running systemd forget the removed units.
# On remove, the `telemetry` group and the daemons' state are left in place,
# as system groups and data are. On purge (.deb only) the machine-wide
# daemon's state goes: its pending events, which a reinstall enabled later
# would otherwise upload, its local outbox (where batches went without a
# bucket), and the machine owner's consent with its locks, temporary and
# kept copies. The administrator's own files (/etc/telemetry/consent, which
# can only force products off, and the catalog) and each user's state
# directory are left: they are theirs. Paths are under $DPKG_ROOT, as in
# postinstall, so a purge of another root never touches this one.
set -e
if [ "$1" = purge ]; then
    rm -rf "$DPKG_ROOT/var/lib/private/telemetry" "$DPKG_ROOT/var/lib/telemetry"
    rm -f "$DPKG_ROOT/etc/telemetry/machine-consent" \
        "$DPKG_ROOT"/etc/telemetry/machine-consent.unreadable-* \
        "$DPKG_ROOT"/etc/telemetry/.consent.*
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
