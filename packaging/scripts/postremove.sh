#!/bin/sh
# After remove or upgrade: let a running systemd forget the removed units.
# On remove, the `telemetry` group and the daemons' state are left in place,
# as system groups and data are. On purge (.deb only) the machine-wide
# daemon's state goes: its pending events, which a reinstall enabled later
# would otherwise upload, and the machine owner's consent with its lock and
# kept copies. The administrator's own files (/etc/telemetry/consent, which
# can only force products off, and the catalog) and each user's state
# directory are left: they are theirs.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/private/telemetry /var/lib/telemetry
    rm -f /etc/telemetry/machine-consent /etc/telemetry/.consent.lock \
        /etc/telemetry/machine-consent.unreadable-*
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
