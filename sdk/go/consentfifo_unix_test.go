//go:build unix

package telemetry

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
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

// Writing a decision over a directory, FIFO, device, socket or link is
// refused at once and leaves it as it was (a FIFO does not hold the host
// either; a link is not followed, whoever planted it).
func TestSetConsentWritesOnlyARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	folder := filepath.Join(dir, "projects")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real")
	if err := os.WriteFile(real, []byte("other on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for path, what := range map[string]string{fifo: "a FIFO", "/dev/null": "a device", sock: "a socket",
		folder: "a directory", link: "a link (name the file itself)"} {
		before, _ := os.Lstat(path)
		done := make(chan error, 1)
		go func() { done <- writeConsent(path, "cfdev", ModeOn, 0, time.Now(), time.Now().Add(time.Second)) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), what) || !strings.Contains(err.Error(), "nothing was written") {
				t.Errorf("%s: %v", path, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("writeConsent still blocked on %s after 5 s", path)
		}
		if after, _ := os.Lstat(path); !os.SameFile(before, after) || before.Mode() != after.Mode() {
			t.Errorf("%s was replaced", path)
		}
	}
	if b, _ := os.ReadFile(real); string(b) != "other on\n" {
		t.Errorf("the linked file: %q", b)
	}
}

// Root writes only its own file, in directories only root may change, and
// never opens a lock or temp file another user put in place.
func TestRootWritesNoOtherUsersFileNorInTheirDirectories(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own files as another user (CI runs as root)")
	}
	dir := t.TempDir()
	write := func(p string) error {
		return writeConsent(p, "cfdev", ModeOff, 0, time.Now(), time.Now().Add(time.Second))
	}
	theirs := filepath.Join(dir, "theirs")
	if err := os.WriteFile(theirs, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := write(theirs); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("their file: %v", err)
	}
	theirDir := filepath.Join(dir, "their-dir")
	if err := os.Mkdir(theirDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(theirDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "roots")
	if err := os.Mkdir(roots, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(roots, filepath.Join(theirDir, "state")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(theirDir, "consent"), filepath.Join(theirDir, "state", "consent"),
		filepath.Join(theirDir, "new", "consent")} {
		if err := write(p); err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
			t.Errorf("%s: %v", p, err)
		}
	}
	if entries, _ := os.ReadDir(roots); len(entries) != 0 {
		t.Errorf("written through their link: %v", entries)
	}
	if _, err := os.Lstat(filepath.Join(theirDir, "new")); err == nil {
		t.Error("made a directory in theirs")
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := write(filepath.Join(open, "consent")); err == nil || !strings.Contains(err.Error(), "may be written by other users") {
		t.Errorf("a world-writable directory: %v", err)
	}
	// A lock or temp file another user planted as a link is not followed.
	mine := filepath.Join(dir, "mine")
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	nologin := filepath.Join(dir, "nologin")
	if err := os.Symlink(nologin, filepath.Join(mine, ".consent.lock")); err != nil {
		t.Fatal(err)
	}
	if err := write(filepath.Join(mine, "consent")); err == nil {
		t.Error("went ahead through a planted lock link")
	}
	if _, err := os.Lstat(nologin); err == nil {
		t.Error("the planted lock link created its target")
	}
	if err := os.Remove(filepath.Join(mine, ".consent.lock")); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(mine, fmt.Sprintf(".consent.%d.tmp", os.Getpid()))
	if err := os.Symlink(theirs, tmp); err != nil {
		t.Fatal(err)
	}
	if err := write(filepath.Join(mine, "consent")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(theirs); string(b) != "secret\n" {
		t.Errorf("their file: %q", b)
	}
	if _, err := os.Lstat(tmp); err == nil {
		t.Error("the planted temp link is still there")
	}
}
