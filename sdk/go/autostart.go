package telemetry

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Autostart: when nothing serves the socket (no socket file, or nobody
// listening), Emit and EmitNoWait spool the event and then start
// telemetryd as client/src/autostart.rs does: TELEMETRY_DAEMON, else
// telemetryd beside the running executable (a vendor ships it next to
// their CLI), else telemetryd on PATH; `--autostarted --socket SOCKET`;
// its own session, stdin /dev/null, output appended to
// STATE_DIR/telemetryd.log; no cloud credentials in its environment; at
// most once per 10 s per state dir (STATE_DIR/autostart.stamp).
// TELEMETRY_AUTOSTART=0 (or false, no, off) turns it off. Never when
// consent is off (Emit returns before).

// autostartInterval is the least time between two starts from one state dir.
const autostartInterval = 10 * time.Second

// autostartDisabled reads TELEMETRY_AUTOSTART: 0, false, no or off mean no.
func autostartDisabled(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "0", "false", "no", "off":
		return true
	}
	return false
}

// scrubbed tells whether the daemon must not inherit the variable name:
// cloud credentials, tokens and secrets, the ssh agent, and a service
// manager's variables (client/src/autostart.rs, scrubbed).
func scrubbed(name string) bool {
	upper := strings.ToUpper(name)
	if strings.HasPrefix(upper, "TELEMETRY_") {
		return false
	}
	for _, p := range []string{"AWS_", "AZURE_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "ALIBABA_CLOUD_", "OCI_", "DIGITALOCEAN_"} {
		if strings.HasPrefix(upper, p) {
			return true
		}
	}
	for _, s := range []string{"_TOKEN", "_SECRET", "_SECRET_KEY", "_ACCESS_KEY", "_API_KEY", "_PASSWORD", "_CREDENTIALS", "_PAT", "_AUTHTOKEN"} {
		if strings.HasSuffix(upper, s) {
			return true
		}
	}
	switch upper {
	case "DATABASE_URL", "SSH_AUTH_SOCK", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC":
		return true
	}
	return false
}

// daemonEnv is environ without scrubbed variables, with the client's paths
// (so the daemon serves the files this client uses) and no AWS files.
func (c *Client) daemonEnv(environ []string) []string {
	out := make([]string, 0, len(environ)+6)
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "TELEMETRY_STATE_DIR", "TELEMETRY_CONSENT_FILE", "TELEMETRY_SYSTEM_CONSENT_FILE", "TELEMETRY_SOCKET":
			continue
		}
		if !scrubbed(k) {
			out = append(out, kv)
		}
	}
	return append(out,
		"TELEMETRY_STATE_DIR="+c.paths.StateDir,
		"TELEMETRY_CONSENT_FILE="+c.paths.ConsentFile,
		"TELEMETRY_SYSTEM_CONSENT_FILE="+c.paths.SystemConsentFile,
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true")
}

// findDaemon is TELEMETRY_DAEMON, else telemetryd beside the running
// executable, else telemetryd on PATH (as the client's environment has
// them), else "": the order of client/src/autostart.rs find_daemon. Beside
// and on PATH, only a regular file with an execute bit counts.
func (c *Client) findDaemon() string {
	if p := c.env("TELEMETRY_DAEMON"); p != "" {
		// Checked here: started through sh, a path that cannot run would
		// fail where nobody sees it, and be reported as started.
		if !isExecutable(p) {
			return ""
		}
		return p
	}
	// os.Executable as Rust's current_exe: on Linux the binary itself
	// (/proc/self/exe), symlinks to it resolved.
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "telemetryd"); isExecutable(p) {
			return p
		}
	}
	for _, dir := range filepath.SplitList(c.env("PATH")) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "telemetryd")
		if isExecutable(p) {
			return p
		}
	}
	return ""
}
