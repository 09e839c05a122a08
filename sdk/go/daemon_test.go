package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemonBin is the telemetryd binary the tests run: TELEMETRYD_BIN, else
// <repo>/target/debug/telemetryd.
func daemonBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TELEMETRYD_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TELEMETRYD_BIN=%s: %v", p, err)
		}
		return p
	}
	p, _ := filepath.Abs(filepath.Join("..", "..", "target", "debug", "telemetryd"))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no telemetryd at %s: build it (cargo build --workspace --bins) or set TELEMETRYD_BIN", p)
	}
	return p
}

// testDir is a short temporary directory (socket paths are limited to
// about 100 bytes, and t.TempDir's names are long).
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tgo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// daemon is a telemetryd running on its own files in dir.
type daemon struct {
	dir, socket string
	cmd         *exec.Cmd
}

// startDaemon runs telemetryd on dir's files and waits until it answers a
// status (at most 10 s). It is stopped (SIGTERM) when the test ends.
func startDaemon(t *testing.T, dir string) *daemon {
	t.Helper()
	bin := daemonBin(t)
	for _, sub := range []string{"empty", "home", "catalog"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: dir, socket: filepath.Join(dir, "s.sock")}
	d.cmd = exec.Command(bin,
		"--socket", d.socket,
		"--state-dir", filepath.Join(dir, "state"),
		"--consent-file", filepath.Join(dir, "consent"),
		"--system-consent-file", filepath.Join(dir, "system-consent"),
		"--machine-id-file", filepath.Join(dir, "machine-id"),
		"--catalog-dir", filepath.Join(dir, "catalog"),
		"--upload-interval", "1h")
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TELEMETRY_") || k == "DO_NOT_TRACK" || k == "HOME" || k == "XDG_DATA_DIRS" {
			continue
		}
		env = append(env, kv)
	}
	d.cmd.Env = append(env, "TELEMETRY_AUTOSTART=0", "XDG_DATA_DIRS="+filepath.Join(dir, "empty"),
		"HOME="+filepath.Join(dir, "home"))
	log, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
		_ = log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
			t.Logf("daemon log:\n%s", b)
		}
	})
	c := d.client(t, Options{})
	waitFor(t, 10*time.Second, "the daemon to answer a status", func() bool {
		_, err := c.Status()
		return err == nil
	})
	return d
}

// client is an SDK client for product cfdev pointed at d's files, in an
// environment of its own (no DO_NOT_TRACK from the test's).
func (d *daemon) client(t *testing.T, opts Options) *Client {
	t.Helper()
	if opts.Product == "" {
		opts.Product = "cfdev"
	}
	if opts.Build == "" {
		opts.Build = "1.2.0"
	}
	return d.clientWith(t, opts, nil)
}

// clientWith is client without the default build, its environment d's
// paths and extra.
func (d *daemon) clientWith(t *testing.T, opts Options, extra map[string]string) *Client {
	t.Helper()
	if opts.Product == "" {
		opts.Product = "cfdev"
	}
	if opts.Timeout == 0 {
		// Generous: the tests check behaviour, not the machine's speed
		// (TestBudget checks the budget).
		opts.Timeout = 2 * time.Second
	}
	env := map[string]string{
		"TELEMETRY_SOCKET":              d.socket,
		"TELEMETRY_STATE_DIR":           filepath.Join(d.dir, "state"),
		"TELEMETRY_CONSENT_FILE":        filepath.Join(d.dir, "consent"),
		"TELEMETRY_SYSTEM_CONSENT_FILE": filepath.Join(d.dir, "system-consent"),
		"HOME":                          filepath.Join(d.dir, "home"),
	}
	for k, v := range extra {
		env[k] = v
	}
	opts.Getenv = func(k string) string { return env[k] }
	return New(opts)
}

// waitFor polls cond every 10 ms until it holds or the time is up.
func waitFor(t *testing.T, max time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(max)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", max, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func status(t *testing.T, c *Client) *StatusReport {
	t.Helper()
	s, err := c.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return s
}

func noSpoolDir(t *testing.T, c *Client) {
	t.Helper()
	if _, err := os.Stat(c.Paths().SpoolDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool dir %s exists (%v)", c.Paths().SpoolDir, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(c.Paths().SpoolDir)), "spool")); err == nil {
		entries, _ := os.ReadDir(filepath.Dir(c.Paths().SpoolDir))
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".d") {
				t.Errorf("spool dir %s created", e.Name())
			}
		}
	}
}

func TestDaemonConsentOffConnectsNothing(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	for _, env := range []string{"", "1"} {
		c := d.client(t, Options{})
		if env != "" {
			c.env = func(k string) string {
				if k == "DO_NOT_TRACK" {
					return env
				}
				return ""
			}
			if err := c.SetConsent("on"); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		out := c.Emit(context.Background(), "stop", nil)
		if out.Kind != Off || time.Since(start) > 20*time.Millisecond {
			t.Errorf("DO_NOT_TRACK=%q: %v after %v", env, out, time.Since(start))
		}
		if out := c.EmitNoWait(context.Background(), "stop", nil); out.Kind != Off {
			t.Errorf("no-wait: %v", out)
		}
		want := LayerDefault
		if env != "" {
			want = LayerEnvironment
		}
		if out.Layer != want {
			t.Errorf("layer %s, want %s", out.Layer, want)
		}
		noSpoolDir(t, c)
	}
	s := status(t, d.client(t, Options{}))
	if s.PendingEvents != 0 || len(s.Refusals) != 0 {
		t.Errorf("the daemon saw something: pending %d, refusals %+v", s.PendingEvents, s.Refusals)
	}
}

func TestDaemonSetConsentThenEmitIsAcknowledged(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	c := d.client(t, Options{})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	pc, ok := status(t, c).ConsentFor("cfdev")
	if !ok || pc.Mode != ModeOn || pc.Layer != LayerUserFile {
		t.Errorf("the daemon was not told: %+v", pc)
	}
	// The decision is recorded as given for the catalogue the daemon
	// knows, so events added to it later are asked for again.
	if pc.Version == 0 || pc.ConsentedVersion != pc.Version || len(pc.NewEvents) != 0 {
		t.Errorf("the decision was not recorded for the current catalogue: %+v", pc)
	}
	text, err := os.ReadFile(c.Paths().ConsentFile)
	want := regexp.MustCompile(`(?m)^cfdev on \S+ #\+ version=` + strconv.FormatUint(uint64(pc.Version), 10) + `$`)
	if err != nil || !want.Match(text) {
		t.Errorf("consent file %q (%v), want a line matching %s", text, err, want)
	}
	out := c.Emit(context.Background(), "app_created", map[string]any{"buildpack": "go"})
	if out.Kind != Acknowledged || out.Accepted != 1 || out.Duplicates != 0 {
		t.Fatalf("%v", out)
	}
	out = c.Emit(nil, "start_end", map[string]any{"duration_s": 42, "success": true})
	if out.Kind != Acknowledged {
		t.Fatalf("%v", out)
	}
	if s := status(t, c); s.PendingEvents != 2 {
		t.Errorf("pending_events %d, want 2", s.PendingEvents)
	}
	noSpoolDir(t, c)
	// telemetryctl, beside the daemon, shows the stored event.
	ctl := filepath.Join(filepath.Dir(daemonBin(t)), "telemetryctl")
	if _, err := os.Stat(ctl); err == nil {
		cmd := exec.Command(ctl, "--socket", d.socket, "show")
		cmd.Env = append(os.Environ(), "TELEMETRY_CONSENT_FILE="+filepath.Join(d.dir, "consent"))
		b, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(b), `"event":"app_created"`) || !strings.Contains(string(b), `"event":"start_end"`) {
			t.Errorf("telemetryctl show: %v\n%s", err, b)
		}
	}
}

func TestDaemonNoWaitReachesTheDaemon(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	c := d.client(t, Options{})
	if err := c.SetConsent("local"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if out := c.EmitNoWait(context.Background(), "stop", nil); out.Kind != Queued {
			t.Fatalf("%v", out)
		}
	}
	waitFor(t, 5*time.Second, "3 events stored", func() bool {
		s := status(t, c)
		return s.PendingEvents+s.LocalEvents >= 3
	})
	noSpoolDir(t, c)
}

func TestDaemonRefusesWhatIsNotCatalogued(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	c := d.client(t, Options{})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		event string
		data  map[string]any
	}{
		{"no_such_event", nil},
		{"app_created", map[string]any{"buildpack": "cobol"}},
		{"start_end", map[string]any{"duration_s": 100000}},
		{"stop", map[string]any{"extra": 1}},
	} {
		out := c.Emit(nil, tc.event, tc.data)
		if out.Kind != Refused || out.Code != "not_in_catalogue" || out.Message == "" {
			t.Errorf("%s %v: %v", tc.event, tc.data, out)
		}
	}
	out := c.Emit(nil, "Bad-Name", nil)
	if out.Kind != Refused || out.Code != "invalid" || !strings.Contains(out.Message, "Bad-Name") {
		t.Errorf("local check: %v", out)
	}
	noSpoolDir(t, c)
	if s := status(t, c); s.PendingEvents != 0 {
		t.Errorf("pending %d", s.PendingEvents)
	}
}

func TestDaemonDownSpoolsThenTheDaemonTakesItIn(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	d := &daemon{dir: dir, socket: filepath.Join(dir, "s.sock")}
	c := d.client(t, Options{Timeout: 100 * time.Millisecond})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := c.Emit(context.Background(), "app_created", map[string]any{"buildpack": "go"})
	if out.Kind != Spooled || out.Err == nil {
		t.Fatalf("%v", out)
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Errorf("took %v", el)
	}
	out2 := c.EmitNoWait(context.Background(), "stop", nil)
	if out2.Kind != Spooled {
		t.Fatalf("%v", out2)
	}
	spool := filepath.Join(dir, "state", "spool", "events-"+hex16(fnv1a64(d.socket))+".d")
	if c.Paths().SpoolDir != spool {
		t.Fatalf("spool dir %s, want %s", c.Paths().SpoolDir, spool)
	}
	st, err := os.Stat(spool)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir: %v %v", st, err)
	}
	entries, _ := os.ReadDir(spool)
	if len(entries) != 2 {
		t.Fatalf("spool holds %v", entries)
	}
	path := filepath.Join(spool, out.ID+".json")
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("spool file: %v %v", info, err)
	}
	b, _ := os.ReadFile(path)
	line := string(b)
	if !strings.HasPrefix(line, `{"v":2,"emit":{`) || !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 ||
		!strings.Contains(line, `"ack":false`) || !strings.Contains(line, `"id":"`+out.ID+`"`) ||
		!strings.Contains(line, `"data":{"buildpack":"go"}`) {
		t.Errorf("spool line %q", line)
	}
	// The daemon takes the spool in when it starts.
	startDaemon(t, dir)
	waitFor(t, 15*time.Second, "the spool to be taken in", func() bool {
		s := status(t, c)
		entries, _ := os.ReadDir(spool)
		return s.PendingEvents == 2 && len(entries) == 0
	})
	// Full spool: dropped.
	full := New(Options{Product: "cfdev", Build: "1", SocketPath: filepath.Join(dir, "other.sock"),
		StateDir: filepath.Join(dir, "state2"), ConsentFile: filepath.Join(dir, "consent"),
		SystemConsentFile: filepath.Join(dir, "system-consent"), Getenv: func(string) string { return "" }})
	if err := os.MkdirAll(full.Paths().SpoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < MaxSpoolFiles; i++ {
		_ = os.WriteFile(filepath.Join(full.Paths().SpoolDir, hex16(uint64(i))+".json"), nil, 0o600)
	}
	if out := full.Emit(nil, "stop", nil); out.Kind != Dropped {
		t.Errorf("full spool: %v", out)
	}
}

func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

// A server that accepts (or not) and never answers: Emit gives up within
// its budget and spools.
func TestBudget(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	d := &daemon{dir: dir, socket: filepath.Join(dir, "s.sock")}
	ln, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	budget := 100 * time.Millisecond
	c := d.client(t, Options{Timeout: budget})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	// Not accepted: the connection sits in the backlog.
	start := time.Now()
	out := c.Emit(context.Background(), "stop", nil)
	el := time.Since(start)
	if out.Kind != Spooled || el < budget || el > budget+100*time.Millisecond {
		t.Errorf("never accepted: %v after %v", out, el)
	}
	// A context deadline shorter than the budget wins.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	start = time.Now()
	out = c.Emit(ctx, "stop", nil)
	cancel()
	if el := time.Since(start); out.Kind != Spooled || el > 100*time.Millisecond {
		t.Errorf("context deadline: %v after %v", out, el)
	}
	// Accepted, read, never answered; then answers that ask to retry, and
	// one that is not JSON.
	// (A new socket: the one above holds the abandoned connections.)
	ln2, err := net.Listen("unix", filepath.Join(dir, "s2.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	ln = ln2
	d.socket = filepath.Join(dir, "s2.sock")
	c = d.client(t, Options{Timeout: budget})
	replies := make(chan string, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func(conn net.Conn) {
				defer conn.Close()
				buf := make([]byte, 65536)
				_, _ = conn.Read(buf)
				if r := <-replies; r != "" {
					_, _ = conn.Write([]byte(r))
				}
				time.Sleep(time.Second)
			}(conn)
		}
	}()
	for _, r := range []string{
		"",
		`{"v":2,"error":{"code":"busy","message":"try again"}}` + "\n",
		`{"v":2,"error":{"code":"from_the_future","message":"?"}}` + "\n",
		"garbage\n",
		`{"v":2,"error":{"code":"consent_off","message":"off"}}` + "\n",
	} {
		replies <- r
		start = time.Now()
		out = c.Emit(context.Background(), "stop", nil)
		el := time.Since(start)
		want := Spooled
		if strings.Contains(r, "consent_off") {
			want = Refused
		}
		if out.Kind != want || el > budget+100*time.Millisecond {
			t.Errorf("reply %q: %v after %v", r, out, el)
		}
	}
	// Status and a no-wait emit stay within the budget too.
	replies <- ""
	start = time.Now()
	if _, err := c.Status(); err == nil || time.Since(start) > budget+100*time.Millisecond {
		t.Errorf("status: %v after %v", err, time.Since(start))
	}
	replies <- ""
	if out := c.EmitNoWait(nil, "stop", nil); out.Kind != Queued {
		t.Errorf("no-wait: %v", out)
	}
}

func TestDaemonStatus(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	s := status(t, d.client(t, Options{}))
	if s.DaemonVersion == "" || s.ConsentFile != filepath.Join(d.dir, "consent") || s.Raw["daemon_version"] != s.DaemonVersion {
		t.Errorf("%+v", s)
	}
	if pc, ok := s.ConsentFor("cfdev"); !ok || pc.Mode != ModeOff || pc.Layer != LayerDefault {
		t.Errorf("cfdev: %+v", pc)
	}
	// Nobody there: an error, at once.
	down := New(Options{Product: "cfdev", Build: "1", SocketPath: filepath.Join(d.dir, "none.sock")})
	start := time.Now()
	if _, err := down.Status(); err == nil || time.Since(start) > 50*time.Millisecond {
		t.Errorf("down: %v", err)
	}
}

func TestDaemonSetConsentOffIsApplied(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	c := d.client(t, Options{})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	if out := c.Emit(nil, "stop", nil); out.Kind != Acknowledged {
		t.Fatalf("%v", out)
	}
	if err := c.SetConsent("off"); err != nil {
		t.Fatal(err)
	}
	s := status(t, c)
	if pc, ok := s.ConsentFor("cfdev"); !ok || pc.Mode != ModeOff || pc.Layer != LayerUserFile {
		t.Errorf("daemon sees %+v", pc)
	}
	b, _ := os.ReadFile(filepath.Join(d.dir, "consent"))
	if !strings.Contains(string(b), "\ncfdev off ") {
		t.Errorf("file:\n%s", b)
	}
	if st := c.Consent(); st != (ConsentState{ModeOff, LayerUserFile}) {
		t.Errorf("%+v", st)
	}
	if out := c.Emit(nil, "stop", nil); out.Kind != Off {
		t.Errorf("after off: %v", out)
	}
}

// storedBuild is the build the daemon stored for the event id.
func storedBuild(t *testing.T, c *Client, id string) string {
	t.Helper()
	product := "cfdev"
	r, err := c.request(context.Background(), "show", showBody{Product: &product})
	if err != nil {
		t.Fatalf("show: %v", err)
	}
	var body eventsBody
	if err := r.into(&body); err != nil {
		t.Fatalf("show: %v", err)
	}
	for _, e := range body.Events {
		var ev struct{ ID, Build string }
		if err := json.Unmarshal([]byte(e.Line), &ev); err == nil && ev.ID == id {
			return ev.Build
		}
	}
	t.Fatalf("event %s not stored: %+v", id, body.Events)
	return ""
}

// No build given: the one telemetry-emit would send, an explicit build,
// else a non-empty TELEMETRY_BUILD, else "unknown" (it used to be refused
// as `build "" is not valid`).
func TestDaemonBuildFallsBackAsTheShimDoes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	if err := d.client(t, Options{}).SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		build string
		env   map[string]string
		want  string
	}{
		{"", nil, "unknown"},
		{"", map[string]string{"TELEMETRY_BUILD": ""}, "unknown"},
		{"", map[string]string{"TELEMETRY_BUILD": "2.0.1"}, "2.0.1"},
		{"1.2.0", map[string]string{"TELEMETRY_BUILD": "2.0.1"}, "1.2.0"},
	} {
		c := d.clientWith(t, Options{Build: tc.build}, tc.env)
		out := c.Emit(context.Background(), "stop", nil)
		if out.Kind != Acknowledged {
			t.Errorf("build %q, env %v: %v", tc.build, tc.env, out)
			continue
		}
		if got := storedBuild(t, c, out.ID); got != tc.want {
			t.Errorf("build %q, env %v: stored %q, want %q", tc.build, tc.env, got, tc.want)
		}
	}
	// An invalid build is refused as before, and one from the variable
	// says so.
	out := d.clientWith(t, Options{Build: "/home/alice"}, nil).Emit(nil, "stop", nil)
	if out.Kind != Refused || out.Code != "invalid" || !strings.Contains(out.Message, `build "/home/alice" is not valid`) {
		t.Errorf("explicit invalid build: %v", out)
	}
	out = d.clientWith(t, Options{}, map[string]string{"TELEMETRY_BUILD": "1.0 beta"}).Emit(nil, "stop", nil)
	if out.Kind != Refused || out.Code != "invalid" || !strings.Contains(out.Message, `build "1.0 beta" is not valid`) ||
		!strings.Contains(out.Message, "TELEMETRY_BUILD") {
		t.Errorf("invalid TELEMETRY_BUILD: %v", out)
	}
}

// A consent file other than the daemon's: SetConsent writes it (as
// telemetryctl does), but says, as an error the vendor can test for, that
// the daemon did not apply the decision (it used to return nil while the
// daemon went on uploading).
func TestDaemonSetConsentToAnotherFileThanTheDaemonsIsNotApplied(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testDir(t))
	if err := d.client(t, Options{}).SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(d.dir, "elsewhere", "consent")
	c := d.client(t, Options{ConsentFile: other})
	err := c.SetConsent("off")
	if !errors.Is(err, ErrConsentNotApplied) {
		t.Fatalf("SetConsent: %v, want ErrConsentNotApplied", err)
	}
	var na *ConsentNotAppliedError
	if !errors.As(err, &na) || na.DaemonFile != filepath.Join(d.dir, "consent") || na.WrittenFile != other {
		t.Fatalf("%#v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "telemetryd reads consent from "+na.DaemonFile+", but this program wrote "+other) ||
		!strings.Contains(msg, "TELEMETRY_CONSENT_FILE="+na.DaemonFile) {
		t.Errorf("message: %s", msg)
	}
	// Written all the same, as telemetryctl does; the daemon still has on.
	if b, err := os.ReadFile(other); err != nil || !strings.Contains(string(b), "\ncfdev off ") {
		t.Errorf("%s: %q (%v)", other, b, err)
	}
	if pc, _ := status(t, c).ConsentFor("cfdev"); pc.Mode != ModeOn {
		t.Errorf("the daemon has %+v", pc)
	}
	// The same file spelt with a "." and a double slash is the daemon's:
	// applied, as telemetryctl compares paths (component by component).
	same := d.client(t, Options{ConsentFile: d.dir + "/.//consent"})
	if err := same.SetConsent("off"); err != nil {
		t.Errorf("the daemon's own file: %v", err)
	}
	if pc, _ := status(t, c).ConsentFor("cfdev"); pc.Mode != ModeOff {
		t.Errorf("the daemon has %+v", pc)
	}
	// Reached through a linked directory, it is the same file too.
	link := filepath.Join(d.dir, "linked")
	if err := os.Symlink(d.dir, link); err != nil {
		t.Fatal(err)
	}
	linked := d.client(t, Options{ConsentFile: filepath.Join(link, "consent")})
	if err := linked.SetConsent("local"); err != nil {
		t.Errorf("the daemon's own file through a link: %v", err)
	}
	if pc, _ := status(t, c).ConsentFor("cfdev"); pc.Mode != ModeLocal {
		t.Errorf("the daemon has %+v", pc)
	}
}

// 600 emits from as many goroutines, more than the daemon serves
// connections at once: the client opens at most maxInFlight, so every one
// is acknowledged and none refused busy (nor spooled).
func TestDaemonManyConcurrentEmitsAreAllAcknowledged(t *testing.T) {
	d := startDaemon(t, testDir(t))
	c := d.client(t, Options{Timeout: 20 * time.Second})
	if err := c.SetConsent("on"); err != nil {
		t.Fatal(err)
	}
	outs := make([]Outcome, 600)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = c.Emit(context.Background(), "stop", nil)
		}()
	}
	wg.Wait()
	kinds := map[OutcomeKind]int{}
	for _, o := range outs {
		kinds[o.Kind]++
	}
	if kinds[Acknowledged] != 600 {
		t.Errorf("%v", kinds)
	}
	s := status(t, c)
	if s.PendingEvents != 600 || len(s.Refusals) != 0 {
		t.Errorf("pending %d, refusals %+v", s.PendingEvents, s.Refusals)
	}
}
