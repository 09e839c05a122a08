package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestConsentFileParsesLikeRust(t *testing.T) {
	f := ParseConsentFile("# c\n\ncfdev on 2026-01-01T00:00:00Z\ncfdev maybe\nBad on\nx on y z\nq On\n")
	if len(f.Entries) != 2 || !reflect.DeepEqual(f.BadLines, []int{4, 5, 6}) {
		t.Fatalf("%+v", f)
	}
	f = ParseConsentFile("a on t off=t0 colour=blue #+ version=4 future=x\n" +
		"b on #+ version=0\n" +
		"c on t #+ version=seven # a note version=9\n" +
		"d on t #+version=2\n" +
		"e on # version=5\n" +
		"f on t Version=2\n" +
		"g on t off=1 off=2\n")
	if !reflect.DeepEqual(f.BadLines, []int{6, 7}) {
		t.Fatalf("bad lines %v", f.BadLines)
	}
	v := func(p string) uint32 { e, _ := f.Get(p); return e.Version }
	if v("a") != 4 || v("b") != 0 || v("c") != 0 || v("d") != 2 || v("e") != 0 {
		t.Errorf("versions %+v", f.Entries)
	}
	if e, _ := f.Get("a"); e.LastOff != "t0" {
		t.Errorf("last off %+v", e)
	}
}

func TestConsentFileSetAndRender(t *testing.T) {
	var f ConsentFile
	f.Set("cfdev", ModeOn, "t1")
	f.Set("other", ModeLocal, "t0")
	f.Set("cfdev", ModeOff, "t2")
	f.Set("cfdev", ModeOn, "t3")
	f.Entries = append(f.Entries, ConsentEntry{Product: "v", Mode: ModeOn, Since: "t4", HasSince: true, Version: 3})
	text := f.Render()
	want := consentHeader + "other local t0\ncfdev on t3 off=t2\nv on t4 #+ version=3\n"
	if text != want {
		t.Fatalf("render:\n%s\nwant:\n%s", text, want)
	}
	again := ParseConsentFile(text)
	if len(again.BadLines) != 0 || !reflect.DeepEqual(again.Entries, f.Entries) {
		t.Errorf("round trip: %+v", again)
	}
}

func TestEventIDsAreUUIDv7(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	now := time.UnixMilli(0x0190f5c27b1e)
	id := uuidV7(now)
	if !re.MatchString(id) || !strings.HasPrefix(id, "0190f5c2-7b1e-7") {
		t.Fatalf("%s", id)
	}
	if NewEventID() == NewEventID() {
		t.Error("ids repeat")
	}
}

func TestLocalValidation(t *testing.T) {
	for _, bad := range []string{"", "App", "1st", "a-b", "a b", "é", strings.Repeat("a", 65)} {
		if ValidateName("event", bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if ValidateName("event", strings.Repeat("a", 64)) != nil {
		t.Error("64 refused")
	}
	if ValidateBuild("/home/alice/bin") == nil || ValidateBuild("0.0.1+g1234-rc.1") != nil {
		t.Error("build")
	}
	cases := []map[string]any{
		{"k": "a\nb"}, {"k": strings.Repeat("x", 257)}, {"k": 1.5}, {"k": nil},
		{"k": uint64(1 << 63)}, {"K": 1}, {"k": "\xff"},
	}
	for _, d := range cases {
		if _, err := normalizeData(d); err == nil {
			t.Errorf("%#v accepted", d)
		}
	}
	big := map[string]any{}
	for i := 0; i < 33; i++ {
		big["k"+strings.Repeat("x", i)] = i
	}
	if _, err := normalizeData(big); err == nil {
		t.Error("33 entries accepted")
	}
	d, err := normalizeData(map[string]any{"a": 1, "b": uint8(2), "c": true, "d": "é"})
	if err != nil || d["a"] != int64(1) || d["b"] != int64(2) {
		t.Errorf("%v %v", d, err)
	}
}

// A client whose environment is empty but for env, with every path in dir.
func isolatedClient(t *testing.T, dir string, opts Options, env map[string]string) *Client {
	t.Helper()
	opts.Getenv = func(k string) string { return env[k] }
	if opts.SocketPath == "" {
		opts.SocketPath = filepath.Join(dir, "s.sock")
	}
	opts.StateDir = filepath.Join(dir, "state")
	opts.ConsentFile = filepath.Join(dir, "consent")
	opts.SystemConsentFile = filepath.Join(dir, "system-consent")
	return New(opts)
}

func TestConsentOffDoesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, env := range []map[string]string{{}, {"DO_NOT_TRACK": "1"}} {
		c := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1.0"}, env)
		start := time.Now()
		out := c.Emit(context.Background(), "stop", nil)
		if out.Kind != Off || time.Since(start) > 20*time.Millisecond {
			t.Errorf("%v: %v in %v", env, out, time.Since(start))
		}
		if out := c.EmitNoWait(nil, "stop", nil); out.Kind != Off {
			t.Errorf("%v", out)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
}

func TestSetConsentWritesTheFile(t *testing.T) {
	dir := t.TempDir()
	c := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1.0", Timeout: 50 * time.Millisecond}, nil)
	path := filepath.Join(dir, "consent")
	if err := os.WriteFile(path, []byte("# mine\nother local 2026-01-01T00:00:00Z\ncfdev off 2026-01-01T00:00:00Z off=2026-01-01T00:00:00Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.SetConsent("ON"); err != nil {
		t.Fatal(err)
	}
	if st := c.Consent(); st != (ConsentState{ModeOn, LayerUserFile}) {
		t.Errorf("%+v", st)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) != 4 || lines[0]+"\n" != consentHeader || lines[1] != "other local 2026-01-01T00:00:00Z" ||
		!regexp.MustCompile(`^cfdev on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z off=2026-01-01T00:00:00Z$`).MatchString(lines[2]) {
		t.Errorf("file:\n%s", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v not kept", st.Mode())
	}
	if err := c.SetConsent("off"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if !regexp.MustCompile(`\ncfdev off (\S+) off=(\S+)\n`).Match(b) {
		t.Errorf("file:\n%s", b)
	}
	if err := c.SetConsent("maybe"); err == nil {
		t.Error("bad mode accepted")
	}
	// A new file is 0600 in a 0700 directory.
	c2 := New(Options{Product: "cfdev", Build: "1", ConsentFile: filepath.Join(dir, "new", "sub", "consent"),
		SocketPath: filepath.Join(dir, "none.sock"), Getenv: func(string) string { return "" }})
	if err := c2.SetConsent("local"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "new", "sub", "consent")); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(dir, "new", "sub")); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode())
	}
}

func TestPromptNotATerminal(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	c := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1", Stdin: r, Stderr: w}, nil)
	start := time.Now()
	res := c.Prompt("")
	if res.Kind != PromptNotATerminal || time.Since(start) > 50*time.Millisecond {
		t.Errorf("%+v after %v", res, time.Since(start))
	}
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	c = isolatedClient(t, dir, Options{Product: "cfdev", Build: "1", Stdin: devnull, Stderr: devnull}, nil)
	if res := c.Prompt("Allow?"); res.Kind != PromptNotATerminal {
		t.Errorf("/dev/null: %+v", res)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	// Forced off and already decided come first, as in telemetryctl.
	c = isolatedClient(t, dir, Options{Product: "cfdev", Build: "1", Stdin: r, Stderr: w}, map[string]string{"DO_NOT_TRACK": "1"})
	if res := c.Prompt(""); res.Kind != PromptForcedOff {
		t.Errorf("%+v", res)
	}
	_ = os.WriteFile(filepath.Join(dir, "consent"), []byte("cfdev off\n"), 0o600)
	if res := c.Prompt(""); res.Kind != PromptAlreadyDecided {
		t.Errorf("%+v", res)
	}
}

func TestNothingPanics(t *testing.T) {
	dir := t.TempDir()
	huge := map[string]any{}
	for i := 0; i < 5000; i++ {
		huge[strings.Repeat("k", i%100+1)+string(rune('a'+i%26))] = strings.Repeat("v", 10000)
	}
	weird := map[string]any{"a": []int{1}, "b": map[string]any{}, "c": struct{}{}, "d": nil, "e": complex(1, 2)}
	// Never the test's own stdin: nothing may wait for an answer.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var nilClient *Client
	clients := []*Client{
		nilClient,
		New(Options{Stdin: r, Stderr: w}),
		New(Options{Product: "", Build: "", Timeout: -1, Stdin: r, Stderr: w}),
		New(Options{Product: "cfdev", Build: "1", SocketPath: "\x00bad", StateDir: "\x00", ConsentFile: "\x00",
			SystemConsentFile: "\x00", Stdin: r, Stderr: w}),
		New(Options{Product: "cfdev", Build: "1", SocketPath: strings.Repeat("x/", 5000), StateDir: filepath.Join(dir, "st"),
			ConsentFile: filepath.Join(dir, "c"), SystemConsentFile: filepath.Join(dir, "sc"),
			Getenv: func(string) string { return "" }, Stdin: r, Stderr: w}),
		isolatedClient(t, dir, Options{Product: "Bad Product!", Build: "/path", Stdin: r, Stderr: w}, nil),
	}
	on := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1", SocketPath: filepath.Join(dir, "nothing.sock"),
		Stdin: r, Stderr: w}, nil)
	if err := on.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	clients = append(clients, on)
	for i, c := range clients {
		for _, ev := range []string{"", "stop", "BAD", strings.Repeat("e", 1000)} {
			for _, d := range []map[string]any{nil, huge, weird} {
				_ = c.Emit(nil, ev, d)
				_ = c.EmitNoWait(context.Background(), ev, d)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = c.Emit(ctx, "stop", nil)
		_ = c.Consent()
		_ = c.SetConsent("")
		_ = c.SetConsent("garbage")
		_ = c.Prompt(strings.Repeat("\x1b[2J", 100))
		_, _ = c.Status()
		_ = c.Paths()
		t.Logf("client %d survived", i)
	}
	out := on.Emit(nil, "stop", huge)
	var ve *ValidationError
	if out.Kind != Refused || out.Code != "invalid" || !errors.As(out.Err, &ve) {
		t.Errorf("huge data: %v", out)
	}
	out = on.Emit(nil, "stop", weird)
	if out.Kind != Refused || out.Code != "invalid" {
		t.Errorf("weird data: %v", out)
	}
	for _, arg := range []string{"", "=", ":=", "\x00=\xff", strings.Repeat("=", 100000)} {
		_, _, _ = ParseKV(arg)
	}
	_ = ResolvePaths(nil, -1, "")
	_ = DefaultSocketPath(nil, 0, "macos")
	_ = DefaultStateDir(nil, 0)
	var nilFile *ConsentFile
	nilFile.Set("a", ModeOn, "t")
	_, _ = nilFile.Get("a")
	_ = nilFile.Render()
	var nilStatus *StatusReport
	_, _ = nilStatus.ConsentFor("cfdev")
	_ = ResolveConsent("", ConsentInputs{})
	_ = ParseConsentFile(strings.Repeat("#+\x00 =off= ", 1000))
}

// A consent file that cannot be read is kept, byte for byte, beside the new
// one, which holds the decision: no other product's line is lost.
func TestSetConsentKeepsAnUnreadableFileAside(t *testing.T) {
	dir := t.TempDir()
	c := isolatedClient(t, dir, Options{Product: "cfdev", Build: "1.0", Timeout: 50 * time.Millisecond}, nil)
	path := filepath.Join(dir, "consent")
	// Each: the old bytes, and what other reads as after (as the Rust
	// writer's test): what can still be read is kept, a line with a bad
	// byte is not, nor anything past the first MiB.
	for i, tc := range []struct {
		old   []byte
		other Mode
	}{
		{[]byte("other on 2026-12-01T00:00:00Z\n\xff\nbr\xffken on\n"), ModeOn},
		{[]byte(strings.Repeat("#", maxSmallText+1)), ""},
	} {
		if err := os.WriteFile(path, tc.old, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.SetConsent("off"); err != nil {
			t.Fatal(err)
		}
		kept, _ := filepath.Glob(path + ".unreadable-*")
		if len(kept) != 1 {
			t.Fatalf("%d: kept: %v", i, kept)
		}
		if b, _ := os.ReadFile(kept[0]); string(b) != string(tc.old) {
			t.Errorf("%d: kept %.100q", i, b)
		}
		b, _ := os.ReadFile(path)
		if !regexp.MustCompile(`\ncfdev off `).Match(b) {
			t.Errorf("%d: file:\n%s", i, b)
		}
		f := ParseConsentFile(string(b))
		if e, _ := f.Get("cfdev"); e.Mode != ModeOff {
			t.Errorf("%d: cfdev: %+v", i, e)
		}
		if e, _ := f.Get("other"); e.Mode != tc.other {
			t.Errorf("%d: other: %+v", i, e)
		}
		if strings.ContainsRune(string(b), utf8.RuneError) || strings.Contains(string(b), "ken") {
			t.Errorf("%d: file:\n%s", i, b)
		}
		if err := os.Remove(kept[0]); err != nil {
			t.Fatal(err)
		}
	}
	// A directory in its place is refused and left where it is (moving it
	// aside moved /tmp, as root, for TELEMETRY_CONSENT_FILE=/tmp).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.SetConsent("on"); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory: %v", err)
	}
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		t.Errorf("the directory: %v %v", st, err)
	}
	if kept, _ := filepath.Glob(path + ".unreadable-*"); len(kept) != 0 {
		t.Errorf("kept: %v", kept)
	}
}

// A product name that is not one is the host's mistake, refused with the
// rule, not "off (default)", which reads as the user's no.
func TestAnInvalidProductIsRefusedNotOff(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "consent"), []byte("cfdev on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, product := range []string{"ACME", "", "my-cli"} {
		c := isolatedClient(t, dir, Options{Product: product, Build: "1.0"}, nil)
		want := fmt.Sprintf("product %q is not a valid name: use 1-64 characters from a-z, 0-9 and _, starting with a letter", product)
		for _, out := range []Outcome{c.Emit(nil, "stop", nil), c.EmitNoWait(nil, "stop", nil)} {
			if out.Kind != Refused || out.Code != "invalid" || out.Message != want {
				t.Errorf("%q: %v", product, out)
			}
		}
		if err := c.SetConsent("on"); err == nil || err.Error() != want {
			t.Errorf("SetConsent: %v", err)
		}
	}
	if err := isolatedClient(t, dir, Options{Product: "cfdev"}, nil).SetConsent("bogus"); err == nil {
		t.Error("SetConsent(bogus) accepted")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files written: %v", entries)
	}
}

// A string value that is too long and one with control characters are
// told apart, as the daemon does.
func TestABadStringValueSaysWhichFaultItHas(t *testing.T) {
	cases := map[string]string{
		strings.Repeat("x", 257): `data value for "k" is 257 bytes, more than the maximum of 256`,
		"a\nb":                   `data value for "k" has control characters (printable text only)`,
	}
	for value, want := range cases {
		var ve *ValidationError
		if err := checkString("k", value); !errors.As(err, &ve) || ve.Message != want {
			t.Errorf("%q: got %v, want %s", value, err, want)
		}
	}
}
