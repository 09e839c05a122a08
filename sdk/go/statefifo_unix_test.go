//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// within runs f in a goroutine and fails the test if it has not returned
// after 5 s (a blocking open would otherwise hold the whole test run).
func within[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still blocked after 5 s", what)
		var zero T
		return zero
	}
}

// mkfifo makes a FIFO at path (and its dir).
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openReader opens the FIFO at path for reading without waiting for a
// writer; nothingIn tells whether nothing was written into it since.
func openReader(t *testing.T, path string) (fd int, nothingIn func() bool) {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	return fd, func() bool {
		n, err := syscall.Read(fd, make([]byte, 64))
		return n == 0 && err == nil || errors.Is(err, syscall.EAGAIN)
	}
}

// A FIFO as the daemon's log, or as an old stamp, makes autostart fail at
// once: with no reader (the write-only open fails) or with one (not a
// regular file).
func TestAFIFOInTheStateDirFailsAutostartAtOnce(t *testing.T) {
	for _, name := range []string{"telemetryd.log", "autostart.stamp"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := isolatedClient(t, dir, Options{Product: "cfdev"}, map[string]string{"TELEMETRY_DAEMON": "/bin/true"})
			fifo := filepath.Join(dir, "state", name)
			mkfifo(t, fifo)
			stamp := filepath.Join(dir, "state", "autostart.stamp")
			old := time.Now().Add(-time.Hour)
			_ = os.Chtimes(fifo, old, old)
			if within(t, "autostart", c.autostart) {
				t.Error("started, with no reader")
			}
			_, nothingIn := openReader(t, fifo)
			// The stamp written beside a FIFO log holds nobody off.
			_ = os.Chtimes(stamp, old, old)
			if within(t, "autostart", c.autostart) {
				t.Error("started, with a reader")
			}
			if !nothingIn() {
				t.Error("something was written into the FIFO")
			}
		})
	}
}

// A FIFO as a full spool's drop file: the event is dropped at once.
func TestAFIFOAsAFullSpoolsDropFileDropsAtOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool", "events-0123456789abcdef.d")
	// Full of entries: directories, five times quicker to make than files.
	for i := 0; i < MaxSpoolFiles; i++ {
		if err := os.MkdirAll(filepath.Join(dir, hex16(uint64(i))), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mkfifo(t, SpoolDropsFile(dir))
	ev := Event{ID: "0190f5c2-7b1e-7000-8000-000000000001", Event: "stop", Product: "cfdev", Build: "1"}
	write := func() OutcomeKind { kind, _ := writeSpool(dir, ev); return kind }
	if kind := within(t, "writeSpool", write); kind != Dropped {
		t.Errorf("no reader: %s", kind)
	}
	_, nothingIn := openReader(t, SpoolDropsFile(dir))
	if kind := within(t, "writeSpool", write); kind != Dropped {
		t.Errorf("a reader: %s", kind)
	}
	if !nothingIn() {
		t.Error("something was written into the FIFO")
	}
}

// A FIFO as the consent dir's lock file: recording fails at once.
func TestAFIFOAsTheConsentLockFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "consent")
	lock := filepath.Join(dir, ".consent.lock")
	mkfifo(t, lock)
	record := func() error {
		return writeConsent(file, "cfdev", ModeOn, 0, time.Now(), time.Now().Add(100*time.Millisecond))
	}
	if err := within(t, "writeConsent", record); err == nil {
		t.Error("recorded, with no reader")
	}
	_, nothingIn := openReader(t, lock)
	if err := within(t, "writeConsent", record); err == nil {
		t.Error("recorded, with a reader")
	}
	if !nothingIn() {
		t.Error("something was written into the FIFO")
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the consent file was written: %v", err)
	}
}
