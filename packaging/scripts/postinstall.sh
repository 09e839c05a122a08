#!/bin/sh
# After install or upgrade (.deb: "configure"; .rpm: 1 or 2): create the
# `telemetry` group that may use the machine-wide socket, and let a running
# systemd see the new or changed units. Nothing is enabled or started:
# telemetry is opt-in (systemctl enable --now telemetryd.socket, per user
# with --user). Both steps are idempotent, so every invocation may run them.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} telemetry.conf
elif command -v groupadd >/dev/null 2>&1; then
    # No systemd here (a container, another init): the same group, made
    # as sysusers.d/telemetry.conf describes it (--force: kept if there).
    # A failure here must not leave the package half-configured.
    groupadd ${DPKG_ROOT:+--root "$DPKG_ROOT"} --force --system telemetry \
        || echo "telemetryd: could not create the group 'telemetry' (groupadd failed); create it to let its members use the machine-wide socket" >&2
elif command -v addgroup >/dev/null 2>&1 && [ -z "$DPKG_ROOT" ]; then
    getent group telemetry >/dev/null || addgroup -S telemetry \
        || echo "telemetryd: could not create the group 'telemetry' (addgroup failed); create it to let its members use the machine-wide socket" >&2
else
    echo "telemetryd: cannot create the group 'telemetry' (no systemd-sysusers, groupadd or addgroup); create it to let its members use the machine-wide socket" >&2
fi
# The machine-wide unit once read /etc/telemetry/config.toml itself; it
# now reads only /etc/telemetry/env, so say how to keep such a file.
if [ -e "$DPKG_ROOT/etc/telemetry/config.toml" ] && [ ! -e "$DPKG_ROOT/etc/telemetry/env" ]; then
    echo "telemetryd: /etc/telemetry/config.toml is no longer read by default; to keep using it, put TELEMETRY_CONFIG=/etc/telemetry/config.toml in /etc/telemetry/env" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
