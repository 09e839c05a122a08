//go:build linux

package telemetry

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// openPty returns a pseudo-terminal's controller and terminal ends.
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("ptsname: %v", e)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pts: %v", err)
	}
	t.Cleanup(func() { tty.Close(); ptmx.Close() })
	return ptmx, tty
}

func TestPromptOnATerminal(t *testing.T) {
	for _, tc := range []struct {
		typed string
		want  Mode
	}{
		{" YES \n", ModeOn},
		{"y\n", ModeOn},
		{"\n", ModeOff},
		{"nope\n", ModeOff},
		{"\x04", ModeOff}, // end of input
	} {
		dir := testDir(t)
		ptmx, tty := openPty(t)
		if !isTerminal(tty) {
			t.Fatal("a pty is not a terminal")
		}
		c := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1", Stdin: tty, Stderr: tty}, nil)
		shown := make(chan string, 1)
		go func() {
			// Read the question, then answer.
			var got strings.Builder
			buf := make([]byte, 4096)
			for !strings.Contains(got.String(), "[y/N] ") {
				n, err := ptmx.Read(buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
			}
			_, _ = io.WriteString(ptmx, tc.typed)
			shown <- got.String()
		}()
		res := c.Prompt("")
		q := <-shown
		if res.Kind != PromptAsked || res.Mode != tc.want || res.Err != nil {
			t.Errorf("%q: %+v", tc.typed, res)
		}
		for _, part := range []string{
			"cfdev would like to collect anonymous usage telemetry",
			"telemetryctl consent cfdev off",
			"Enable anonymous telemetry for cfdev? [y/N] ",
		} {
			if !strings.Contains(strings.ReplaceAll(q, "\r\n", "\n"), part) {
				t.Errorf("question lacks %q:\n%s", part, q)
			}
		}
		if st := c.Consent(); st != (ConsentState{tc.want, LayerUserFile}) {
			t.Errorf("%q: recorded %+v", tc.typed, st)
		}
		// Decided now: not asked again.
		if res := c.Prompt(""); res.Kind != PromptAlreadyDecided {
			t.Errorf("again: %+v", res)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "consent"))
		if !strings.HasPrefix(string(b), consentHeader) {
			t.Errorf("file:\n%s", b)
		}
	}
}
