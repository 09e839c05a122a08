//go:build linux

package telemetry

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenAsNobody serves a Unix socket in dir as uid 65534 (a Python
// listener that never answers) and returns its path.
func listenAsNobody(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "telemetryd.sock")
	// A Python other users can run (a pyenv shim under /root is not).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = "python3"
	}
	// Bound under another name and renamed once listening: the path
	// appears only when a connect can succeed.
	cmd := exec.Command(python, "-c",
		"import os,socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1]+'.new')\ns.listen(16)\nos.rename(sys.argv[1]+'.new',sys.argv[1])\ntime.sleep(30)", sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
	}
	t.Fatal("the other user's listener did not start")
	return ""
}

// Where XDG_RUNTIME_DIR is unset the socket is under /tmp/telemetry-<uid>:
// another user who made that directory first, or linked it to a directory
// of theirs, must not receive events.
func TestAnotherUsersSocketIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("listening as another uid needs root (CI runs as root)")
	}
	mkdir := func(path string, mode os.FileMode, uid int) {
		if err := os.Mkdir(path, mode); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	base := t.TempDir()
	mkdir(filepath.Dir(base), 0o755, 0)
	mkdir(base, 0o755, 0)
	tmp := filepath.Join(base, "tmp")
	mkdir(tmp, os.ModeSticky|0o777, 0)
	squat := filepath.Join(tmp, "telemetry-0")
	mkdir(squat, 0o755, 65534)
	theirs := filepath.Join(base, "them")
	mkdir(theirs, 0o755, 65534)
	linked := filepath.Join(tmp, "telemetry-1")
	if err := os.Symlink(theirs, linked); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, via string }{{squat, squat}, {theirs, linked}} {
		listenAsNobody(t, c.dir)
		sock := filepath.Join(c.via, "telemetryd.sock")
		_, err := New(Options{Product: "cfdev", Build: "1", SocketPath: sock,
			StateDir: filepath.Join(base, "state"), Timeout: 300 * time.Millisecond}).Status()
		if err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
			t.Fatalf("another user's socket at %s: %v", sock, err)
		}
	}
}
