//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// squatted makes base/telemetry-X/state holding a consent file with
// `cfdev on`, and opens the directory named open (telemetry-X or state,
// "" for none) to every user, as another user who made it first would.
func squatted(t *testing.T, open string) (base, state, consent string) {
	t.Helper()
	base = testDir(t)
	theirs := filepath.Join(base, "telemetry-X")
	state = filepath.Join(theirs, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	consent = filepath.Join(state, "consent")
	if err := os.WriteFile(consent, []byte("cfdev on 2026-12-01T00:00:00Z\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if open != "" {
		if err := os.Chmod(filepath.Join(base, open), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return base, state, consent
}

// squattedClient is a client on state, reading consent, with no daemon
// and no autostart.
func squattedClient(base, state, consent string) *Client {
	return New(Options{Product: "cfdev", Build: "1", SocketPath: filepath.Join(base, "s.sock"),
		StateDir: state, ConsentFile: consent, SystemConsentFile: filepath.Join(base, "system-consent"),
		Getenv: func(k string) string {
			if k == "TELEMETRY_AUTOSTART" {
				return "0"
			}
			return ""
		}})
}

// notRoot makes the checks that root skips (it has stricter ones) run, as
// for any other user, until the test ends. Not parallel: it changes what
// every client sees.
func notRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	geteuid = func() int { return 12345 }
	t.Cleanup(func() { geteuid = os.Geteuid })
}

// spooledFiles are the files under state but the consent file.
func spooledFiles(t *testing.T, state string) []string {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) != "consent" {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// The state directory another user made first (the default without HOME,
// /tmp/telemetry-UID/state, left open to all): its consent file is not
// believed, no event is spooled there and no decision recorded.
func TestAStateDirAnotherUserCouldWriteIsNotTrusted(t *testing.T) {
	notRoot(t)
	for _, open := range []string{"telemetry-X", "telemetry-X/state"} {
		base, state, consent := squatted(t, open)
		c := squattedClient(base, state, consent)
		if st := c.Consent(); st != (ConsentState{ModeOff, LayerDefault}) {
			t.Errorf("%s open: consent %+v", open, st)
		}
		out := c.Emit(nil, "stop", nil)
		if out.Kind != Off || out.Err == nil || !strings.Contains(out.Err.Error(), "not believed") ||
			!strings.Contains(out.Err.Error(), "the directory "+filepath.Join(base, open)+" is writable by every user") {
			t.Errorf("%s open: emit %v", open, out)
		}

		// With consent from a file of the user's own, the event is not
		// spooled where the other user could read it.
		own := filepath.Join(base, "own-consent")
		if err := os.WriteFile(own, []byte("cfdev on 2026-12-01T00:00:00Z\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out = squattedClient(base, state, own).Emit(nil, "stop", nil)
		if out.Kind != Failed || out.Err == nil || !strings.Contains(out.Err.Error(), "writable by every user") {
			t.Errorf("%s open: spooled: %v", open, out)
		}
		if files := spooledFiles(t, state); len(files) != 0 {
			t.Errorf("%s open: written: %v", open, files)
		}

		err := c.SetConsent("off")
		if err == nil || !strings.Contains(err.Error(), "writable by every user") ||
			!strings.Contains(err.Error(), "TELEMETRY_STATE_DIR") {
			t.Errorf("%s open: set consent: %v", open, err)
		}
		if b, _ := os.ReadFile(consent); string(b) != "cfdev on 2026-12-01T00:00:00Z\n" {
			t.Errorf("%s open: the consent file was changed: %q", open, b)
		}
	}
}

// The same tree made by the user (0700): believed, spooled, recorded.
func TestAStateDirOfTheUsersOwnIsTrusted(t *testing.T) {
	notRoot(t)
	base, state, consent := squatted(t, "")
	c := squattedClient(base, state, consent)
	if st := c.Consent(); st != (ConsentState{ModeOn, LayerUserFile}) {
		t.Errorf("consent %+v", st)
	}
	if out := c.Emit(nil, "stop", nil); out.Kind != Spooled {
		t.Errorf("emit %v", out)
	}
	if files := spooledFiles(t, state); len(files) != 1 || !strings.HasSuffix(files[0], ".json") {
		t.Errorf("spooled: %v", files)
	}
	if err := c.SetConsent("off"); err != nil {
		t.Fatal(err)
	}
	if st := c.Consent(); st != (ConsentState{ModeOff, LayerUserFile}) {
		t.Errorf("after off: %+v", st)
	}
	// Sticky above (as /tmp) is fine; the user's own directories are.
	if err := os.Chmod(base, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	if why := untrustedDir(filepath.Join(base, "telemetry-X")); why != "" {
		t.Errorf("under a sticky directory: %s", why)
	}
	if why := untrustedDir(base); !strings.Contains(why, "writable by every user") {
		t.Errorf("a sticky directory itself: %q", why)
	}
}
