package telemetry

import (
	"strconv"
	"strings"
)

// Mode is what a product may do: off, local or on.
type Mode string

// The consent modes.
const (
	// ModeOff collects nothing and sends nothing.
	ModeOff Mode = "off"
	// ModeLocal collects and keeps events on this machine; never uploads.
	ModeLocal Mode = "local"
	// ModeOn collects and uploads.
	ModeOn Mode = "on"
)

// ParseMode reads "on", "off" or "local", in any case.
func ParseMode(s string) (Mode, bool) {
	switch strings.ToLower(s) {
	case "off":
		return ModeOff, true
	case "local":
		return ModeLocal, true
	case "on":
		return ModeOn, true
	}
	return "", false
}

// Layer is the consent layer that decided a product's mode.
type Layer string

// The consent layers, most authoritative first.
const (
	// LayerSystem is the administrator's system file.
	LayerSystem Layer = "system"
	// LayerEnvironment is DO_NOT_TRACK or TELEMETRY_OPTOUT.
	LayerEnvironment Layer = "environment"
	// LayerUserFile is the user's consent file.
	LayerUserFile Layer = "user_file"
	// LayerDefault means nobody decided: off.
	LayerDefault Layer = "default"
)

// ConsentState is a product's effective mode and the layer that decided it.
type ConsentState struct {
	// Mode is the effective mode.
	Mode Mode
	// Layer is the layer that decided it.
	Layer Layer
}

// ConsentEntry is one parsed line of a consent file.
type ConsentEntry struct {
	// Product is the product name, or "*" for every product.
	Product string
	// Mode is the decision.
	Mode Mode
	// Since is when it was decided (RFC 3339, as written), or "".
	Since string
	// HasSince tells whether Since was written.
	HasSince bool
	// LastOff is when the product was last turned off (RFC 3339), or "".
	LastOff string
	// HasLastOff tells whether an off= field was written.
	HasLastOff bool
	// Version is the manifest version the decision was given for; 0 when
	// not recorded.
	Version uint32
}

// ConsentFile is a parsed consent file (the format of proto/src/consent.rs).
type ConsentFile struct {
	// Entries are the valid lines, in file order.
	Entries []ConsentEntry
	// BadLines are the 1-based numbers of lines that did not parse; a
	// system file that exists but cannot be read has the single bad line 0.
	BadLines []int
}

// ParseConsentFile parses a consent file's text: one
// `PRODUCT MODE [TIME] [off=TIME] [KEY=VALUE ...] [#+ KEY=VALUE ...]` per
// line, `#` comments, blank lines ignored, damaged lines recorded in
// BadLines.
func ParseConsentFile(text string) (out ConsentFile) {
	defer func() {
		if r := recover(); r != nil {
			out = ConsentFile{BadLines: []int{0}}
		}
	}()
	// One byte-order mark at the very start is skipped (Windows PowerShell
	// 5.1 and older Notepad write one); anywhere else it is not whitespace.
	text = strings.TrimPrefix(text, "\ufeff")
	for i, raw := range strings.Split(text, "\n") {
		raw = strings.TrimSuffix(raw, "\r")
		line, extension := splitExtension(raw)
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		words := strings.Fields(line)
		if len(words) < 2 {
			out.BadLines = append(out.BadLines, i+1)
			continue
		}
		product, modeWord := words[0], words[1]
		var e ConsentEntry
		keyed, extra := false, false
		for _, w := range words[2:] {
			key, value, hasEq := strings.Cut(w, "=")
			switch {
			case hasEq && key == "off" && !e.HasLastOff:
				e.LastOff, e.HasLastOff = value, true
			case hasEq && key == "off":
				extra = true
			case hasEq && isFieldKey(key):
				if key == "version" {
					e.Version = parseVersion(value)
				}
			case hasEq:
				extra = true
			case !e.HasSince && !e.HasLastOff && !keyed:
				e.Since, e.HasSince = w, true
			default:
				extra = true
			}
			keyed = keyed || hasEq
		}
		// After `#+` only KEY=VALUE tokens mean anything.
		for _, w := range strings.Fields(extension) {
			if key, value, ok := strings.Cut(w, "="); ok && key == "version" {
				e.Version = parseVersion(value)
			}
		}
		validProduct := product == "*" || validName(product)
		mode, okMode := ParseMode(modeWord)
		if validProduct && okMode && !extra {
			e.Product, e.Mode = product, mode
			out.Entries = append(out.Entries, e)
		} else {
			out.BadLines = append(out.BadLines, i+1)
		}
	}
	return out
}

// splitExtension returns a line's text before any comment, and what follows
// a `#+` that starts its comment (up to a further `#`).
func splitExtension(line string) (string, string) {
	before, after, ok := strings.Cut(line, "#")
	if !ok {
		return line, ""
	}
	if fields, isExt := strings.CutPrefix(after, "+"); isExt {
		f, _, _ := strings.Cut(fields, "#")
		return before, f
	}
	return before, ""
}

// isFieldKey: lowercase ASCII letters, digits and _, starting with a letter.
func isFieldKey(key string) bool {
	if key == "" || key[0] < 'a' || key[0] > 'z' {
		return false
	}
	for i := 0; i < len(key); i++ {
		b := key[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// parseVersion reads a version= value: a whole number from 1 that fits 32
// bits; anything else reads as absent (0).
func parseVersion(v string) uint32 {
	v = strings.TrimPrefix(v, "+")
	if v == "" || v[0] == '+' || v[0] == '-' {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 {
		return 0
	}
	return uint32(n)
}

// Get returns the last entry for product (exact name, not "*").
func (f *ConsentFile) Get(product string) (ConsentEntry, bool) {
	if f == nil {
		return ConsentEntry{}, false
	}
	for i := len(f.Entries) - 1; i >= 0; i-- {
		if f.Entries[i].Product == product {
			return f.Entries[i], true
		}
	}
	return ConsentEntry{}, false
}

// forcesOff tells whether this file, read as the administrator's, forces
// product off: any off line for it or for "*", or any damage at all.
func (f *ConsentFile) forcesOff(product string) bool {
	if len(f.BadLines) > 0 {
		return true
	}
	for _, e := range f.Entries {
		if (e.Product == product || e.Product == "*") && e.Mode == ModeOff {
			return true
		}
	}
	return false
}

// consentHeader is the first line of a rendered consent file.
const consentHeader = "# telemetry consent, one \"PRODUCT MODE TIME\" per line; change it with `telemetryctl consent PRODUCT on|off|local`\n"

// Render writes the file in its canonical form: the header comment, then
// one line per product (its latest entry), `P MODE TIME [off=TIME]
// [#+ version=N]`.
func (f *ConsentFile) Render() string {
	var b strings.Builder
	b.WriteString(consentHeader)
	if f == nil {
		return b.String()
	}
	seen := map[string]bool{}
	var latest []ConsentEntry
	for i := len(f.Entries) - 1; i >= 0; i-- {
		if !seen[f.Entries[i].Product] {
			seen[f.Entries[i].Product] = true
			latest = append(latest, f.Entries[i])
		}
	}
	for i := len(latest) - 1; i >= 0; i-- {
		e := latest[i]
		b.WriteString(e.Product)
		b.WriteString(" ")
		b.WriteString(string(e.Mode))
		if e.HasSince {
			b.WriteString(" " + e.Since)
		}
		if e.HasLastOff {
			b.WriteString(" off=" + e.LastOff)
		}
		if e.Version > 0 {
			b.WriteString(" #+ version=" + strconv.FormatUint(uint64(e.Version), 10))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Set records mode for product at time since (RFC 3339), replacing its
// earlier lines. Turning it off records since as its last off; other modes
// keep the earlier off time. No version is recorded (see SetVersion).
func (f *ConsentFile) Set(product string, mode Mode, since string) {
	f.SetVersion(product, mode, since, 0)
}

// SetVersion is Set, noting that the decision was given for the product's
// catalogue version (0: none recorded). A decision recorded with a version
// covers only the events that version lists; one without covers whatever
// the catalogue lists now, so events added later would be sent unasked.
func (f *ConsentFile) SetVersion(product string, mode Mode, since string, version uint32) {
	if f == nil {
		return
	}
	prev, _ := f.Get(product)
	e := ConsentEntry{Product: product, Mode: mode, Since: since, HasSince: true, Version: version}
	if mode == ModeOff {
		e.LastOff, e.HasLastOff = since, true
	} else {
		e.LastOff, e.HasLastOff = prev.LastOff, prev.HasLastOff
	}
	kept := f.Entries[:0:0]
	for _, old := range f.Entries {
		if old.Product != product {
			kept = append(kept, old)
		}
	}
	f.Entries = append(kept, e)
}

// EnvOptsOut tells whether an opt-out variable's value means "opt out":
// anything but empty or "0" after trimming spaces.
func EnvOptsOut(value string) bool {
	v := strings.TrimSpace(value)
	return v != "" && v != "0"
}

// OptOutVars are the environment variables that force every product off.
var OptOutVars = []string{"DO_NOT_TRACK", "TELEMETRY_OPTOUT"}

// ConsentInputs are what consent is resolved from.
type ConsentInputs struct {
	// System is the system file's text; nil when there is no such file.
	System *string
	// SystemUnreadable is set when the system file exists but cannot be
	// read: every product is then off.
	SystemUnreadable bool
	// Env looks up the opt-out variables; nil means none is set.
	Env Getenv
	// User is the user file's text; nil when it is missing or unreadable.
	User *string
}

// ResolveConsent combines the layers for product: system file (only an off
// for the product or "*" counts; damage or an unreadable file forces off),
// environment, user file, default off. It is pure.
func ResolveConsent(product string, in ConsentInputs) (st ConsentState) {
	defer func() {
		if r := recover(); r != nil {
			st = ConsentState{ModeOff, LayerSystem}
		}
	}()
	if in.SystemUnreadable {
		return ConsentState{ModeOff, LayerSystem}
	}
	if in.System != nil {
		sys := ParseConsentFile(*in.System)
		if sys.forcesOff(product) {
			return ConsentState{ModeOff, LayerSystem}
		}
	}
	if in.Env != nil {
		for _, v := range OptOutVars {
			if EnvOptsOut(in.Env(v)) {
				return ConsentState{ModeOff, LayerEnvironment}
			}
		}
	}
	if in.User != nil {
		user := ParseConsentFile(*in.User)
		if e, ok := user.Get(product); ok {
			return ConsentState{e.Mode, LayerUserFile}
		}
	}
	return ConsentState{ModeOff, LayerDefault}
}
