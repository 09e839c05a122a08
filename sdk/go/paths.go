package telemetry

import (
	"fmt"
	"os"
	"strings"
)

// SocketFile is the daemon socket's file name inside its runtime directory.
const SocketFile = "telemetryd.sock"

// SystemConsentFileDefault is the administrator's consent file, used when
// TELEMETRY_SYSTEM_CONSENT_FILE is not set.
const SystemConsentFileDefault = "/etc/telemetry/consent"

// MaxSpoolFiles is the most files a writer leaves in a spool directory;
// past it, events are dropped.
const MaxSpoolFiles = 1000

// MaxDropsBytes is the largest drop file (SpoolDropsFile) a writer appends
// to; past it, drops are no longer noted one by one.
const MaxDropsBytes = 64 * 1024

// Paths are the locations a client uses, as resolved from an environment.
type Paths struct {
	// Socket is the daemon's Unix socket.
	Socket string
	// StateDir is the daemon's state directory.
	StateDir string
	// ConsentFile is the user's consent file.
	ConsentFile string
	// SystemConsentFile is the administrator's consent file.
	SystemConsentFile string
	// SpoolDir is the portable spool directory for events meant for the
	// daemon on Socket.
	SpoolDir string
}

// Getenv looks up an environment variable; "" means unset.
type Getenv func(key string) string

// ResolvePaths computes every path from an environment, a user id and an
// operating system name (runtime.GOOS, or "macos" for darwin). It is pure:
// it reads nothing but its arguments. The override variables
// (TELEMETRY_SOCKET, TELEMETRY_STATE_DIR, TELEMETRY_CONSENT_FILE,
// TELEMETRY_SYSTEM_CONSENT_FILE) are checked first; empty values count as
// unset.
func ResolvePaths(env Getenv, uid int, goos string) (p Paths) {
	defer func() {
		if r := recover(); r != nil {
			p = Paths{}
		}
	}()
	env = orEmpty(env)
	p.Socket = env("TELEMETRY_SOCKET")
	if p.Socket == "" {
		p.Socket = DefaultSocketPath(env, uid, goos)
	}
	p.StateDir = env("TELEMETRY_STATE_DIR")
	if p.StateDir == "" {
		p.StateDir = DefaultStateDir(env, uid)
	}
	p.ConsentFile = env("TELEMETRY_CONSENT_FILE")
	if p.ConsentFile == "" {
		p.ConsentFile = joinPath(p.StateDir, "consent")
	}
	p.SystemConsentFile = env("TELEMETRY_SYSTEM_CONSENT_FILE")
	if p.SystemConsentFile == "" {
		p.SystemConsentFile = SystemConsentFileDefault
	}
	p.SpoolDir = SpoolDir(p.StateDir, p.Socket)
	return p
}

// DefaultSocketPath is the daemon's default socket:
// $XDG_RUNTIME_DIR/telemetry/telemetryd.sock; else on macOS
// $HOME/Library/Application Support/telemetry/telemetryd.sock; else
// $TMPDIR/telemetry-<uid>/telemetryd.sock (TMPDIR unset: /tmp).
func DefaultSocketPath(env Getenv, uid int, goos string) string {
	env = orEmpty(env)
	if dir := env("XDG_RUNTIME_DIR"); dir != "" {
		return joinPath(dir, "telemetry", SocketFile)
	}
	if goos == "darwin" || goos == "macos" {
		if home := env("HOME"); home != "" {
			return joinPath(home, "Library/Application Support/telemetry", SocketFile)
		}
	}
	tmp := env("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return joinPath(tmp, fmt.Sprintf("telemetry-%d", uid), SocketFile)
}

// DefaultStateDir is the daemon's default state directory:
// $XDG_STATE_HOME/telemetry, else $HOME/.local/state/telemetry, else
// $TMPDIR/telemetry-<uid>/state (TMPDIR unset: /tmp).
func DefaultStateDir(env Getenv, uid int) string {
	env = orEmpty(env)
	if dir := env("XDG_STATE_HOME"); dir != "" {
		return joinPath(dir, "telemetry")
	}
	if home := env("HOME"); home != "" {
		return joinPath(home, ".local/state/telemetry")
	}
	tmp := env("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return joinPath(tmp, fmt.Sprintf("telemetry-%d", uid), "state")
}

// SpoolDir is the portable spool directory for events meant for the daemon
// on socket: STATE_DIR/spool/events-<16 hex>.d, named by the FNV-1a 64
// hash of the socket path's bytes (exactly as given, not cleaned).
func SpoolDir(stateDir, socket string) string {
	return joinPath(stateDir, "spool", fmt.Sprintf("events-%016x.d", fnv1a64(socket)))
}

// SpoolDropsFile is where a writer notes the events it dropped because the
// spool was full, for the daemon to count (its status shows them as
// counters.spool_full_drops): the spool's path with the extension "drops",
// as Rust's Path::with_extension makes it on Unix, so
// STATE_DIR/spool/events-<16 hex>.drops beside the directory SpoolDir
// names. One line per dropped event: its product name.
func SpoolDropsFile(spool string) string {
	dir, name := "", spool
	if i := strings.LastIndexByte(spool, '/'); i >= 0 {
		dir, name = spool[:i+1], spool[i+1:]
	}
	if name == "" || name == "." || name == ".." {
		return spool // no file name to give an extension
	}
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	return dir + name + ".drops"
}

// fnv1a64 hashes s's bytes with 64-bit FNV-1a.
func fnv1a64(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return h
}

// joinPath joins like Rust's PathBuf::join on Unix: a separator is added
// only where the left part does not end with one, and nothing is cleaned,
// so a path keeps the bytes the daemon hashes.
func joinPath(base string, parts ...string) string {
	out := base
	for _, p := range parts {
		if strings.HasPrefix(p, "/") || out == "" {
			out = p
			continue
		}
		if !strings.HasSuffix(out, "/") {
			out += "/"
		}
		out += p
	}
	return out
}

// processPaths resolves the paths from this process's environment.
func processPaths(env Getenv) Paths {
	return ResolvePaths(env, os.Getuid(), goosName())
}

// orEmpty is env, or an empty environment when env is nil.
func orEmpty(env Getenv) Getenv {
	if env == nil {
		return func(string) string { return "" }
	}
	return env
}
