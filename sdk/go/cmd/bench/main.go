// Command bench measures the Go SDK's per-event cost against a real
// telemetryd (started here on temporary files, sync=full as by default)
// and prints one JSON line:
//
//	{"client":"go","events":2000,"acked_p50_us":..,"acked_p99_us":..,"nowait_p50_us":..,"nowait_p99_us":..,"nowait_stored":..}
//
// Each mode sends its events one after another, one connection each, as
// separate CLI runs would. BENCH_KEEP=1 keeps the daemon's files.
//
// Run from sdk/go: go run ./cmd/bench [-n 2000]. The daemon binary is
// TELEMETRYD_BIN, else ../../target/debug/telemetryd.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	telemetry "github.com/telemetryd/telemetryd/sdk/go"
)

func main() {
	n := flag.Int("n", 2000, "events per mode")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	bin := os.Getenv("TELEMETRYD_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "target", "debug", "telemetryd")
	}
	dir, err := os.MkdirTemp("", "tgobench")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "bench: files in", dir)
	}
	for _, sub := range []string{"empty", "home", "catalog"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		return err
	}
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(bin, "--socket", sock, "--state-dir", filepath.Join(dir, "state"),
		"--consent-file", filepath.Join(dir, "consent"), "--system-consent-file", filepath.Join(dir, "system-consent"),
		"--machine-id-file", filepath.Join(dir, "machine-id"), "--catalog-dir", filepath.Join(dir, "catalog"),
		"--upload-interval", "1h")
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TELEMETRY_") || k == "DO_NOT_TRACK" || k == "HOME" || k == "XDG_DATA_DIRS" {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "TELEMETRY_AUTOSTART=0", "XDG_DATA_DIRS="+filepath.Join(dir, "empty"), "HOME="+filepath.Join(dir, "home"))
	log, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	vars := map[string]string{
		"TELEMETRY_SOCKET": sock, "TELEMETRY_STATE_DIR": filepath.Join(dir, "state"),
		"TELEMETRY_CONSENT_FILE":        filepath.Join(dir, "consent"),
		"TELEMETRY_SYSTEM_CONSENT_FILE": filepath.Join(dir, "system-consent"),
	}
	c := telemetry.New(telemetry.Options{Product: "cfdev", Build: "1.2.0", Timeout: 2 * time.Second,
		Getenv: func(k string) string { return vars[k] }})
	end := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Status(); err == nil {
			break
		}
		if time.Now().After(end) {
			return fmt.Errorf("the daemon did not answer within 10 s (see its log)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.SetConsent("on"); err != nil {
		return err
	}
	ctx := context.Background()
	data := map[string]any{"buildpack": "go"}
	measure := func(emit func() telemetry.Outcome, want telemetry.OutcomeKind) ([]time.Duration, error) {
		out := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			t := time.Now()
			o := emit()
			out = append(out, time.Since(t))
			if o.Kind != want {
				return nil, fmt.Errorf("event %d: %v", i, o)
			}
		}
		return out, nil
	}
	acked, err := measure(func() telemetry.Outcome { return c.Emit(ctx, "app_created", data) }, telemetry.Acknowledged)
	if err != nil {
		return err
	}
	nowait, err := measure(func() telemetry.Outcome { return c.EmitNoWait(ctx, "app_created", data) }, telemetry.Queued)
	if err != nil {
		return err
	}
	// Wait for the no-wait events to land before stopping the daemon.
	t0 := time.Now()
	end = t0.Add(3 * time.Second)
	var pending uint64
	for time.Now().Before(end) {
		if s, err := c.Status(); err == nil {
			pending = s.PendingEvents
			if pending >= uint64(2*n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pending < uint64(2*n) {
		fmt.Fprintf(os.Stderr, "bench: only %d of %d events stored after %v\n", pending, 2*n, time.Since(t0).Round(time.Millisecond))
		if s, err := c.Status(); err == nil {
			fmt.Fprintf(os.Stderr, "bench: refusals %+v, dropped %+v, incidents %v\n", s.Refusals, s.Dropped, s.Incidents)
		}
	}
	line, _ := json.Marshal(struct {
		Client      string `json:"client"`
		Events      int    `json:"events"`
		AckedP50us  int64  `json:"acked_p50_us"`
		AckedP99us  int64  `json:"acked_p99_us"`
		NowaitP50us int64  `json:"nowait_p50_us"`
		NowaitP99us int64  `json:"nowait_p99_us"`
		// No-wait events the daemon stored (it refuses some with busy
		// when they come faster than it commits; a no-wait client never
		// reads that reply).
		NowaitStored uint64 `json:"nowait_stored"`
	}{"go", n, pct(acked, 50), pct(acked, 99), pct(nowait, 50), pct(nowait, 99), pending - min(pending, uint64(n))})
	fmt.Println(string(line))
	return nil
}

// pct is the p-th percentile of ds in whole microseconds.
func pct(ds []time.Duration, p int) int64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Microseconds()
}
