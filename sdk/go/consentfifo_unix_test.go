//go:build unix

package telemetry

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO in a consent file's place must not hold the host: with no writer
// it reads as empty at once; with a writer that sends nothing, a system
// file counts as unreadable (off) after a moment.
func TestAFIFOInAConsentFilesPlaceDoesNotHoldTheHost(t *testing.T) {
	dir := t.TempDir()
	user, system := filepath.Join(dir, "consent"), filepath.Join(dir, "system-consent")
	for _, p := range []string{user, system} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cl := New(Options{Product: "cfdev", ConsentFile: user, SystemConsentFile: system,
		Getenv: func(string) string { return "" }})
	consent := func() ConsentState {
		done := make(chan ConsentState, 1)
		go func() { done <- cl.Consent() }()
		select {
		case st := <-done:
			return st
		case <-time.After(5 * time.Second):
			t.Fatal("Consent() still blocked on a FIFO after 5 s")
			return ConsentState{}
		}
	}
	if st := consent(); st.Mode != ModeOff || st.Layer != LayerDefault {
		t.Errorf("no writer: got %s/%s, want off/default", st.Mode, st.Layer)
	}
	// A writer that never writes (held open here, read-write so the open
	// does not wait for a reader).
	w, err := os.OpenFile(system, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st := consent(); st.Mode != ModeOff || st.Layer != LayerSystem {
		t.Errorf("a silent writer: got %s/%s, want off/system (fail closed)", st.Mode, st.Layer)
	}
}

// A flock writer waits while a live Node writer holds its lock, gives up at
// its deadline, and ignores a lock left by a Node writer that died.
func TestANodeWritersLockIsWaitedForUnlessStale(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "consent")
	node := filepath.Join(dir, nodeLock)
	if err := os.WriteFile(node, []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeConsent(file, "cfdev", ModeOff, 0, time.Now(), time.Now().Add(200*time.Millisecond)); err == nil {
		t.Fatal("went ahead while a Node writer held its lock")
	}
	done := make(chan error, 1)
	go func() { done <- writeConsent(file, "cfdev", ModeOff, 0, time.Now(), time.Now().Add(10*time.Second)) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("went ahead while a Node writer held its lock: %v", err)
	default:
	}
	if err := os.Remove(node); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Left by a writer that died 11 s ago: not waited for.
	if err := os.WriteFile(node, []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-11 * time.Second)
	if err := os.Chtimes(node, old, old); err != nil {
		t.Fatal(err)
	}
	if err := writeConsent(file, "cfdev", ModeOn, 0, time.Now(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
}

// Writing a decision reads the old file the same way: a FIFO in its place
// does not hold the host either.
func TestSetConsentOverAFIFODoesNotHoldTheHost(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "consent")
	if err := syscall.Mkfifo(file, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- writeConsent(file, "cfdev", ModeOn, 0, time.Now(), time.Now().Add(time.Second)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writeConsent still blocked on a FIFO after 5 s")
	}
	b, err := os.ReadFile(file)
	if err != nil || string(b) == "" {
		t.Fatalf("the decision replaced the FIFO: %q %v", b, err)
	}
}
