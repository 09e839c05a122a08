#!/bin/sh
# Before the package is removed (not upgraded: .deb "remove", .rpm 0): stop
# and disable the machine-wide socket, service and broker while their unit files
# still exist (systemd before v256 cannot disable a unit whose file is
# gone), so nothing is left listening for a daemon that is no longer there.
# Per-user instances are each user's (systemctl --user stop ...).
set -e
case "$1" in
    remove | 0) ;;
    *) exit 0 ;;
esac
# Another root's removal (dpkg --root) is not this system's to stop.
[ -z "$DPKG_ROOT" ] || exit 0
[ -d /run/systemd/system ] || exit 0
# The broker too: a vendor's host runs it from this package, and left
# running it would serve from a deleted binary with a dangling enable link.
units="telemetryd.socket telemetryd.service telemetry-broker.service"
if command -v deb-systemd-invoke >/dev/null 2>&1; then
    deb-systemd-invoke stop $units >/dev/null 2>&1 || true
else
    # An rpm system (this one script serves both packages).
    systemctl --system stop $units >/dev/null 2>&1 || true
fi
# Not deb-systemd-helper disable: it removes only the links it made itself
# (its state file), and the administrator enabled these with systemctl.
systemctl --system disable $units >/dev/null 2>&1 || true
exit 0
