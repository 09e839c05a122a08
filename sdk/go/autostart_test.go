//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAutostartWhenNothingServes(t *testing.T) {
	t.Parallel()
	bin := daemonBin(t)
	dir := testDir(t)
	for _, sub := range []string{"empty", "home", "catalog"} {
		_ = os.MkdirAll(filepath.Join(dir, sub), 0o700)
	}
	_ = os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	// What the SDK starts: telemetryd on this test's files, noting its pid.
	script := "#!/bin/sh\necho $$ > " + filepath.Join(dir, "daemon.pid") + "\n" +
		"export HOME=" + filepath.Join(dir, "home") + " XDG_DATA_DIRS=" + filepath.Join(dir, "empty") +
		" TELEMETRY_IDLE_EXIT=20s\nunset DO_NOT_TRACK TELEMETRY_OPTOUT\n" +
		"exec " + bin + " \"$@\" --machine-id-file " + filepath.Join(dir, "machine-id") +
		" --catalog-dir " + filepath.Join(dir, "catalog") + " --upload-interval 1h\n"
	wrapper := filepath.Join(dir, "telemetryd-wrapper")
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "daemon.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	c := startingClient(t, dir, wrapper)
	out := c.Emit(context.Background(), "stop", nil)
	if out.Kind != Spooled || !out.Autostarted {
		t.Fatalf("%v (autostarted %v)", out, out.Autostarted)
	}
	// Once per 10 s: the next one does not start another.
	if out := c.Emit(context.Background(), "stop", nil); out.Kind != Spooled && out.Kind != Acknowledged || out.Autostarted {
		t.Errorf("second: %v (autostarted %v)", out, out.Autostarted)
	}
	waitFor(t, 10*time.Second, "the autostarted daemon to take in the spool", func() bool {
		s, err := c.Status()
		return err == nil && s.PendingEvents >= 1
	})
	if st, err := os.Stat(filepath.Join(dir, "state", "telemetryd.log")); err != nil || st.Size() == 0 {
		t.Errorf("no daemon log: %v", err)
	}
	// Not this process's child: sh started it in the background and left,
	// so the host keeps no child to reap (and no goroutine waiting on it).
	if b, err := os.ReadFile(filepath.Join(dir, "daemon.pid")); err == nil {
		if stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat"); err == nil {
			// The fields after the command's closing parenthesis: state, ppid.
			rest := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(rest) > 1 && rest[1] == strconv.Itoa(os.Getpid()) {
				t.Errorf("the daemon is a child of the host (ppid %s)", rest[1])
			}
		}
	}
	// Off: nothing is started.
	c2 := New(Options{Product: "cfdev", Build: "1", SocketPath: filepath.Join(dir, "x.sock"),
		StateDir: filepath.Join(dir, "state3"), ConsentFile: filepath.Join(dir, "none"),
		Getenv: func(k string) string {
			if k == "TELEMETRY_DAEMON" {
				return wrapper
			}
			return ""
		}})
	if out := c2.Emit(nil, "stop", nil); out.Kind != Off {
		t.Errorf("%v", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "state3")); err == nil {
		t.Error("state dir made while off")
	}
	if !autostartDisabled(" Off ") || autostartDisabled("1") || !scrubbed("AWS_PROFILE") || scrubbed("TELEMETRY_S3_TOKEN") ||
		!scrubbed("GITHUB_TOKEN") || scrubbed("PATH") || !scrubbed("GH_PAT") || !scrubbed("npm_config__authToken") ||
		!scrubbed("DATABASE_URL") || scrubbed("PAT") {
		t.Error("switch or scrub list")
	}
}

// A full spool does not stop the autostart: the daemon is what empties it.
func TestAFullSpoolStillStartsTheDaemon(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	marker := filepath.Join(dir, "started")
	wrapper := filepath.Join(dir, "telemetryd-wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho started > "+marker+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := startingClient(t, dir, wrapper)
	if err := os.MkdirAll(c.paths.SpoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < MaxSpoolFiles; i++ {
		if err := os.WriteFile(filepath.Join(c.paths.SpoolDir, "f"+strconv.Itoa(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := c.Emit(context.Background(), "stop", nil)
	if out.Kind != Dropped || !out.Autostarted {
		t.Fatalf("%v (autostarted %v)", out, out.Autostarted)
	}
	waitFor(t, 10*time.Second, "the daemon to be started", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
}

// startingClient is a client of a daemon in dir that is not running,
// consent on, whose autostart runs wrapper.
func startingClient(t *testing.T, dir, wrapper string) *Client {
	t.Helper()
	d := &daemon{dir: dir, socket: filepath.Join(dir, "s.sock")}
	c := d.client(t, Options{Timeout: 100 * time.Millisecond})
	env := c.env
	c.env = func(k string) string {
		if k == "TELEMETRY_DAEMON" {
			return wrapper
		}
		return env(k)
	}
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A vendor ships telemetryd next to their CLI (the top-level README's
// "Shipping it in your CLI"): found there, after TELEMETRY_DAEMON and
// before PATH, as client/src/autostart.rs does; only a regular executable
// file counts. Run in a copy of this test binary, whose os.Executable is
// the "CLI" beside which the test puts telemetryd.
func TestAutostartFindsTelemetrydBesideTheExecutable(t *testing.T) {
	switch os.Getenv("TELEMETRY_GO_TEST_HELPER") {
	case "find":
		fmt.Printf("daemon=%s\n", New(Options{Product: "cfdev"}).findDaemon())
		os.Exit(0)
	case "emit":
		out := New(Options{Product: "cfdev"}).Emit(context.Background(), "stop", nil)
		fmt.Printf("kind=%s autostarted=%v\n", out.Kind, out.Autostarted)
		os.Exit(0)
	}
	t.Parallel()
	dir := testDir(t)
	bin, path := filepath.Join(dir, "bin"), filepath.Join(dir, "path")
	for _, d := range []string{bin, path} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(bin, "mycli")
	if err := os.WriteFile(cli, exe, 0o700); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "started")
	script := []byte("#!/bin/sh\necho \"$@\" > " + marker + "\n")
	onPath, beside, named := filepath.Join(path, "telemetryd"), filepath.Join(bin, "telemetryd"), filepath.Join(dir, "named")
	for _, p := range []string{onPath, named} {
		if err := os.WriteFile(p, script, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	run := func(helper string, env ...string) string {
		t.Helper()
		cmd := exec.Command(cli, "-test.run=^TestAutostartFindsTelemetrydBesideTheExecutable$")
		cmd.Env = append([]string{"TELEMETRY_GO_TEST_HELPER=" + helper, "PATH=" + path, "HOME=" + dir}, env...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", helper, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	// Nothing beside it: PATH.
	if got := run("find"); got != "daemon="+onPath {
		t.Errorf("nothing beside: %s", got)
	}
	// Beside it, but not an executable file: PATH still.
	if err := os.WriteFile(beside, script, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := run("find"); got != "daemon="+onPath {
		t.Errorf("not executable beside: %s", got)
	}
	if err := os.Remove(beside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(beside, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := run("find"); got != "daemon="+onPath {
		t.Errorf("a directory beside: %s", got)
	}
	if err := os.Remove(beside); err != nil {
		t.Fatal(err)
	}
	// An executable beside it: that one, before PATH; TELEMETRY_DAEMON first.
	if err := os.WriteFile(beside, script, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := run("find"); got != "daemon="+beside {
		t.Errorf("beside: %s", got)
	}
	if got := run("find", "TELEMETRY_DAEMON="+named); got != "daemon="+named {
		t.Errorf("TELEMETRY_DAEMON: %s", got)
	}
	// And an emit with no daemon starts the one beside it.
	consent := filepath.Join(dir, "consent")
	if err := os.WriteFile(consent, []byte("cfdev on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "s.sock")
	got := run("emit", "TELEMETRY_SOCKET="+socket, "TELEMETRY_STATE_DIR="+filepath.Join(dir, "state"),
		"TELEMETRY_CONSENT_FILE="+consent, "TELEMETRY_SYSTEM_CONSENT_FILE="+filepath.Join(dir, "system-consent"))
	if got != "kind=spooled autostarted=true" {
		t.Fatalf("emit: %s", got)
	}
	waitFor(t, 10*time.Second, "the telemetryd beside the CLI to be started", func() bool {
		b, err := os.ReadFile(marker)
		return err == nil && strings.TrimSpace(string(b)) == "--autostarted --socket "+socket
	})
}
