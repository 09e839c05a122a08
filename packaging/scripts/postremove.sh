#!/bin/sh
# After remove or upgrade: let a running systemd forget the removed units.
# The `telemetry` group and the daemons' state (/var/lib/telemetry, and
# each user's state directory) are left in place, as system groups and user
# data are: events a user collected are theirs to purge (telemetryctl
# purge) or upload.
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
