//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"context"
	"os"
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
		!scrubbed("GITHUB_TOKEN") || scrubbed("PATH") {
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
