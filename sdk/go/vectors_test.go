package telemetry

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// readVector decodes ../../vectors/NAME (numbers as json.Number).
func readVector(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "vectors", name))
	if err != nil {
		t.Fatalf("read vector %s: %v", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode vector %s: %v", name, err)
	}
}

// parseObject decodes JSON into a generic value with json.Number numbers.
func parseObject(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

func mapEnv(m map[string]any) Getenv {
	return func(k string) string {
		if v, ok := m[k].(string); ok {
			return v
		}
		return ""
	}
}

func TestConsentVectors(t *testing.T) {
	var v struct {
		Cases []struct {
			Name    string
			Product string
			System  any
			Env     map[string]any
			User    *string
			Mode    string
			Layer   string
		}
	}
	readVector(t, "consent.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range v.Cases {
		in := ConsentInputs{Env: mapEnv(c.Env), User: c.User}
		switch s := c.System.(type) {
		case nil:
		case string:
			in.System = &s
		case map[string]any:
			in.SystemUnreadable = s["unreadable"] == true
		default:
			t.Fatalf("%s: system %T", c.Name, s)
		}
		got := ResolveConsent(c.Product, in)
		if string(got.Mode) != c.Mode || string(got.Layer) != c.Layer {
			t.Errorf("%s: got %s/%s, want %s/%s", c.Name, got.Mode, got.Layer, c.Mode, c.Layer)
		}
	}
}

func TestKVVectors(t *testing.T) {
	var v struct {
		Cases []struct {
			Arg   string
			Key   string
			Value any
			Error bool
		}
	}
	readVector(t, "kv.json", &v)
	for _, c := range v.Cases {
		k, val, err := ParseKV(c.Arg)
		if c.Error {
			if err == nil {
				t.Errorf("%q: no error", c.Arg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.Arg, err)
			continue
		}
		want := c.Value
		if n, ok := want.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				t.Fatalf("%q: %v", c.Arg, err)
			}
			want = i
		}
		if k != c.Key || !reflect.DeepEqual(val, want) {
			t.Errorf("%q: got %q=%#v, want %q=%#v", c.Arg, k, val, c.Key, want)
		}
	}
}

func TestPathVectors(t *testing.T) {
	var v struct {
		Cases []struct {
			Name        string
			OS          string
			UID         int
			Env         map[string]any
			Socket      string
			StateDir    string `json:"state_dir"`
			ConsentFile string `json:"consent_file"`
			SpoolDir    string `json:"spool_dir"`
		}
		Spool struct {
			MaxFiles    int    `json:"max_files"`
			ExampleFile string `json:"example_file"`
			ExampleLine string `json:"example_line"`
		}
	}
	readVector(t, "paths.json", &v)
	for _, c := range v.Cases {
		p := ResolvePaths(mapEnv(c.Env), c.UID, c.OS)
		want := Paths{c.Socket, c.StateDir, c.ConsentFile, SystemConsentFileDefault, c.SpoolDir}
		if p != want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.Name, p, want)
		}
	}
	// Overrides come first.
	env := map[string]any{
		"TELEMETRY_SOCKET": "/s/x.sock", "TELEMETRY_STATE_DIR": "/st",
		"TELEMETRY_CONSENT_FILE": "/c", "TELEMETRY_SYSTEM_CONSENT_FILE": "/sys", "HOME": "/h",
	}
	p := ResolvePaths(mapEnv(env), 1, "linux")
	if p.Socket != "/s/x.sock" || p.StateDir != "/st" || p.ConsentFile != "/c" || p.SystemConsentFile != "/sys" ||
		p.SpoolDir != SpoolDir("/st", "/s/x.sock") {
		t.Errorf("overrides: %+v", p)
	}

	// The spool file format: the example event, spooled, is the example line.
	if v.Spool.MaxFiles != MaxSpoolFiles {
		t.Errorf("max_files %d, have %d", v.Spool.MaxFiles, MaxSpoolFiles)
	}
	ev := Event{ID: "0190f5c2-7b1e-7000-8000-000000000001", Event: "app_created", Product: "cfdev",
		Build: "1.2.0", TimestampUs: 1700000000000001, Data: map[string]any{"buildpack": "go"}}
	dir := t.TempDir()
	if kind, err := writeSpool(dir, ev); kind != Spooled {
		t.Fatalf("spool: %s %v", kind, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, v.Spool.ExampleFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(got, []byte("\n")) || bytes.Count(got, []byte("\n")) != 1 {
		t.Errorf("spool file is not one line: %q", got)
	}
	if !reflect.DeepEqual(parseObject(t, got), parseObject(t, []byte(v.Spool.ExampleLine))) {
		t.Errorf("spool line\n got %s\nwant %s", got, v.Spool.ExampleLine)
	}
}

func TestProtocolVectors(t *testing.T) {
	var v struct {
		ProtocolVersion int `json:"protocol_version"`
		MaxLineLen      int `json:"max_line_len"`
		Messages        []struct {
			Name string
			Kind string
			JSON string
		}
	}
	readVector(t, "protocol.json", &v)
	if v.ProtocolVersion != ProtocolVersion || v.MaxLineLen != MaxLineLen {
		t.Fatalf("version %d / max line %d", v.ProtocolVersion, v.MaxLineLen)
	}
	cfdev := "cfdev"
	seen := 0
	for _, m := range v.Messages {
		if m.Kind == "request" {
			var line []byte
			var err error
			switch m.Name {
			case "emit_ack_with_data", "emit_no_wait_two_events":
				// The events as a Go caller would build them.
				var parsed struct {
					Emit struct {
						Events []Event
						Ack    bool
					}
				}
				dec := json.NewDecoder(bytes.NewReader([]byte(m.JSON)))
				dec.UseNumber()
				if err := dec.Decode(&parsed); err != nil {
					t.Fatal(err)
				}
				for i := range parsed.Emit.Events {
					d, err := normalizeData(goValues(parsed.Emit.Events[i].Data))
					if err != nil {
						t.Fatalf("%s: %v", m.Name, err)
					}
					parsed.Emit.Events[i].Data = d
				}
				line, err = emitLine(parsed.Emit.Events, parsed.Emit.Ack)
			case "status":
				line, err = encodeLine("status", struct{}{})
			case "flush":
				line, err = encodeLine("flush", nil)
			case "consent_changed":
				line, err = encodeLine("consent_changed", consentChangedBody{Product: "cfdev", Build: "1.2.0"})
			case "show_product":
				line, err = encodeLine("show", showBody{Product: &cfdev, AfterSeq: 10})
			case "show_all":
				line, err = encodeLine("show", showBody{})
			case "purge_all":
				line, err = encodeLine("purge", purgeBody{})
			// The operator's requests (telemetryctl's doctor, forget and
			// receipts): the SDK sends none of them, but its encoder must
			// write them as the daemon reads them.
			case "probe":
				line, err = encodeLine("probe", struct{}{})
			case "forget":
				line, err = encodeLine("forget", map[string]any{"product": "cfdev", "build": "1.2.0"})
			case "receipts":
				line, err = encodeLine("receipts", map[string]any{"key": nil, "after": 0})
			case "receipt_events":
				line, err = encodeLine("receipts", map[string]any{"key": "v1/product=cfdev/k.ndjson.zst", "after": 0})
			case "stop":
				line, err = encodeLine("stop", struct{}{})
			default:
				t.Errorf("request %s is new: teach this test (and the SDK) to build it", m.Name)
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Errorf("%s: not one line: %q", m.Name, line)
			}
			if !reflect.DeepEqual(parseObject(t, line), parseObject(t, []byte(m.JSON))) {
				t.Errorf("%s:\n got %s\nwant %s", m.Name, line, m.JSON)
			}
			seen++
			continue
		}
		r, err := decodeReply([]byte(m.JSON))
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		var body any
		switch r.name {
		case "ack":
			body = &ackBody{}
		case "queued":
			body = &queuedBody{}
		case "flushed":
			body = &flushedBody{}
		case "error":
			body = &errorBody{}
		case "consent_applied":
			body = &ConsentReport{}
		case "events":
			body = &eventsBody{}
		case "purged":
			body = &purgedBody{}
		case "probed", "forgotten", "receipts", "stopping":
			// Replies to the operator's requests: read as plain JSON.
			body = &map[string]any{}
		case "status":
			s, err := decodeStatus(r)
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			if s.PendingEvents != 3 || s.UptimeSecs != 12 || len(s.Consent) != 1 || s.Consent[0].Mode != ModeOn ||
				len(s.Dropped) != 1 || s.Dropped[0] != (ProductCount{"cfdev", 2}) || len(s.Refusals) != 1 ||
				s.Refusals[0].Code != "not_in_catalogue" || s.Refusals[0].LastEvent != "app_creatd" || len(s.Destinations) != 1 ||
				s.Destinations[0].UploadedBytes != 900 || s.LastUploadKey == nil || s.Raw["daemon_version"] != "0.1.0" {
				t.Errorf("%s: %+v", m.Name, s)
			}
			seen++
			continue
		default:
			t.Errorf("response %s (%s) is new: teach this test (and the SDK) to read it", m.Name, r.name)
			continue
		}
		if err := r.into(body); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		// What was read, written back, is what was sent.
		back, _ := json.Marshal(body)
		var orig map[string]any
		_ = json.Unmarshal([]byte(m.JSON), &orig)
		want, _ := json.Marshal(orig[r.name])
		if !reflect.DeepEqual(parseObject(t, back), parseObject(t, want)) {
			t.Errorf("%s: read %s, sent %s", m.Name, back, want)
		}
		seen++
	}
	if seen != len(v.Messages) || seen < 17 {
		t.Errorf("checked %d of %d messages", seen, len(v.Messages))
	}
	// Unknown keys in a reply are ignored; another version is refused.
	if _, err := decodeReply([]byte(`{"v":3,"ack":{}}`)); err == nil {
		t.Error("v3 accepted")
	}
	r, err := decodeReply([]byte(`{"v":2,"ack":{"accepted":1,"duplicates":0,"later":true}}`))
	var a ackBody
	if err != nil || r.into(&a) != nil || a.Accepted != 1 {
		t.Errorf("unknown key: %v %+v", err, a)
	}
}

// goValues turns decoded JSON scalars into what a Go caller passes.
func goValues(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				panic(err)
			}
			out[k] = i
			continue
		}
		out[k] = v
	}
	return out
}

func TestConsentFileVectors(t *testing.T) {
	type file struct {
		Hex string
		Pad int
	}
	var v struct {
		Cases []struct {
			Name         string
			System, User *file
			Mode, Layer  string
		}
	}
	readVector(t, "consent-files.json", &v)
	if len(v.Cases) < 9 {
		t.Fatalf("only %d cases", len(v.Cases))
	}
	for _, c := range v.Cases {
		dir := t.TempDir()
		user, system := filepath.Join(dir, "consent"), filepath.Join(dir, "system-consent")
		for _, f := range []struct {
			path string
			file *file
		}{{user, c.User}, {system, c.System}} {
			if f.file == nil {
				continue
			}
			b, err := hex.DecodeString(f.file.Hex)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, bytes.Repeat([]byte("#"), f.file.Pad)...)
			if err := os.WriteFile(f.path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cl := New(Options{Product: "cfdev", ConsentFile: user, SystemConsentFile: system,
			Getenv: func(string) string { return "" }})
		got := cl.Consent()
		if string(got.Mode) != c.Mode || string(got.Layer) != c.Layer {
			t.Errorf("%s: got %s/%s, want %s/%s", c.Name, got.Mode, got.Layer, c.Mode, c.Layer)
		}
	}
}
