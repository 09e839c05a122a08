package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSpoolDropsFileIsBesideTheSpool(t *testing.T) {
	for spool, want := range map[string]string{
		"/st/spool/events-0123456789abcdef.d":     "/st/spool/events-0123456789abcdef.drops",
		"/st/spool/events-0123456789abcdef.spool": "/st/spool/events-0123456789abcdef.drops",
		"/st/spool/events.spool":                  "/st/spool/events.drops",
		"/st/spool/plain":                         "/st/spool/plain.drops",
		"/st/a.b/.hidden":                         "/st/a.b/.hidden.drops",
		"rel.d":                                   "rel.drops",
	} {
		if got := SpoolDropsFile(spool); got != want {
			t.Errorf("SpoolDropsFile(%q) = %q, want %q", spool, got, want)
		}
	}
	if got, want := SpoolDropsFile(SpoolDir("/st", "/s.sock")),
		"/st/spool/events-"+hex16(fnv1a64("/s.sock"))+".drops"; got != want {
		t.Errorf("for SpoolDir: %q, want %q", got, want)
	}
}

// fillSpool puts MaxSpoolFiles entries in dir, so that it is full.
func fillSpool(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < MaxSpoolFiles; i++ {
		if err := os.WriteFile(filepath.Join(dir, hex16(uint64(i))+".json"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNoteDropStopsAtMaxDropsBytes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool", "events-0123456789abcdef.d")
	fillSpool(t, dir)
	ev := Event{ID: "0190f5c2-7b1e-7000-8000-000000000001", Event: "stop", Product: "cfdev", Build: "1"}
	drops := SpoolDropsFile(dir)

	// Just under the limit: one more line, even if it crosses it.
	under := append(bytes.Repeat([]byte{'x'}, MaxDropsBytes-2), '\n')
	if err := os.WriteFile(drops, under, 0o600); err != nil {
		t.Fatal(err)
	}
	if kind, err := writeSpool(dir, ev); kind != Dropped || err != nil {
		t.Fatalf("full spool: %s %v", kind, err)
	}
	b, _ := os.ReadFile(drops)
	if want := append(append([]byte{}, under...), "cfdev\n"...); !bytes.Equal(b, want) {
		t.Fatalf("under the limit: %d bytes, ends %q", len(b), b[len(b)-8:])
	}

	// At or past it: nothing more, and still a drop, not a failure.
	for _, size := range []int{MaxDropsBytes, MaxDropsBytes + 5} {
		at := bytes.Repeat([]byte{'y'}, size)
		if err := os.WriteFile(drops, at, 0o600); err != nil {
			t.Fatal(err)
		}
		if kind, err := writeSpool(dir, ev); kind != Dropped || err != nil {
			t.Fatalf("%d bytes: %s %v", size, kind, err)
		}
		if b, _ := os.ReadFile(drops); !bytes.Equal(b, at) {
			t.Errorf("%d bytes: appended to: now %d bytes", size, len(b))
		}
	}

	// The drop file cannot be written (a directory in its place): the
	// event is still dropped, quietly.
	if err := os.Remove(drops); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(drops, 0o700); err != nil {
		t.Fatal(err)
	}
	if kind, err := writeSpool(dir, ev); kind != Dropped || err != nil {
		t.Errorf("unwritable drop file: %s %v", kind, err)
	}
}

// A full spool: each dropped event is noted in the drop file, which the
// daemon counts (status: counters.spool_full_drops) when it takes in the
// spool, and removes.
func TestDaemonCountsFullSpoolDrops(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	d := &daemon{dir: dir, socket: filepath.Join(dir, "s.sock")}
	c := d.client(t, Options{Timeout: 100 * time.Millisecond})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	spool := c.Paths().SpoolDir
	fillSpool(t, spool)
	drops := filepath.Join(dir, "state", "spool", "events-"+hex16(fnv1a64(d.socket))+".drops")
	if got := SpoolDropsFile(spool); got != drops {
		t.Fatalf("drop file %s, want %s", got, drops)
	}
	start := time.Now()
	if out := c.Emit(nil, "stop", nil); out.Kind != Dropped || out.Err == nil {
		t.Fatalf("emit: %v", out)
	}
	if out := c.EmitNoWait(nil, "stop", nil); out.Kind != Dropped {
		t.Fatalf("no-wait: %v", out)
	}
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Errorf("two drops took %v", el)
	}
	info, err := os.Stat(drops)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("drop file: %v %v", info, err)
	}
	if b, _ := os.ReadFile(drops); string(b) != "cfdev\ncfdev\n" {
		t.Fatalf("drop file holds %q", b)
	}
	entries, _ := os.ReadDir(spool)
	if len(entries) != MaxSpoolFiles {
		t.Fatalf("spool holds %d entries", len(entries))
	}

	// The daemon takes the spool in when it starts, and the drops with it.
	startDaemon(t, dir)
	var got string
	waitFor(t, 15*time.Second, "the drops to be counted", func() bool {
		s := status(t, c)
		counters, _ := s.Raw["counters"].(map[string]any)
		b, _ := json.Marshal(counters["spool_full_drops"])
		got = string(b)
		return got == `[["cfdev",2]]`
	})
	waitFor(t, 5*time.Second, "the drop file to be removed", func() bool {
		_, err := os.Stat(drops)
		return errors.Is(err, os.ErrNotExist)
	})
}
