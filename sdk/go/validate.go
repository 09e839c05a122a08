package telemetry

import (
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"
)

// The protocol's limits on events (proto/src/validate.rs, Limits).
const (
	// MaxNameLen is the longest event name, product name or data key, in bytes.
	MaxNameLen = 64
	// MaxBuildLen is the longest build string, in bytes.
	MaxBuildLen = 64
	// MaxDataEntries is the most entries in an event's data.
	MaxDataEntries = 32
	// MaxStringLen is the longest string value in data, in bytes.
	MaxStringLen = 256
)

const (
	minTimestampUs = 946_684_800_000_000     // 2000-01-01T00:00:00Z
	maxTimestampUs = 253_402_300_799_000_000 // 9999-12-31T23:59:59Z
)

// ValidationError says which field of an event is not valid and why.
type ValidationError struct {
	// Field is "event", "product", "build", "data key", "data value",
	// "data" or "timestamp".
	Field string
	// Message says what is wrong, for people.
	Message string
}

// Error implements error.
func (e *ValidationError) Error() string { return e.Message }

func truncated(s string) string {
	if len(s) <= 80 {
		return s
	}
	end := 80
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end]
}

// validName: 1-64 bytes of a-z, 0-9 and _, starting with a letter.
func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// ValidateName checks a name (event, product or data key) against the
// protocol's rules: 1-64 characters from a-z, 0-9 and _, starting with a
// letter. field names it in the error.
func ValidateName(field, value string) error {
	if validName(value) {
		return nil
	}
	return &ValidationError{Field: field, Message: fmt.Sprintf(
		"%s %q is not a valid name: use 1-%d characters from a-z, 0-9 and _, starting with a letter",
		field, truncated(value), MaxNameLen)}
}

// ValidateBuild checks a build string: 1-64 characters from A-Z, a-z, 0-9
// and . _ + -.
func ValidateBuild(build string) error {
	ok := build != "" && len(build) <= MaxBuildLen
	for i := 0; ok && i < len(build); i++ {
		b := build[i]
		ok = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '.' || b == '_' || b == '+' || b == '-'
	}
	if ok {
		return nil
	}
	return &ValidationError{Field: "build", Message: fmt.Sprintf(
		"build %q is not valid: use 1-%d characters from A-Z, a-z, 0-9 and . _ + -",
		truncated(build), MaxBuildLen)}
}

// normalizeData checks data and converts its values to the wire's types:
// string, int64 or bool. Other Go integer types are accepted when they fit
// 64-bit signed; anything else (floats, nil, structs) is an error.
func normalizeData(data map[string]any) (map[string]any, error) {
	if len(data) > MaxDataEntries {
		return nil, &ValidationError{Field: "data", Message: fmt.Sprintf(
			"data has %d entries, more than the maximum of %d", len(data), MaxDataEntries)}
	}
	out := make(map[string]any, len(data))
	for k, v := range data {
		if err := ValidateName("data key", k); err != nil {
			return nil, err
		}
		var nv any
		switch x := v.(type) {
		case string:
			if err := checkString(k, x); err != nil {
				return nil, err
			}
			nv = x
		case bool:
			nv = x
		case int:
			nv = int64(x)
		case int8:
			nv = int64(x)
		case int16:
			nv = int64(x)
		case int32:
			nv = int64(x)
		case int64:
			nv = x
		case uint:
			if uint64(x) > math.MaxInt64 {
				return nil, outOfRange(k, x)
			}
			nv = int64(x)
		case uint8:
			nv = int64(x)
		case uint16:
			nv = int64(x)
		case uint32:
			nv = int64(x)
		case uint64:
			if x > math.MaxInt64 {
				return nil, outOfRange(k, x)
			}
			nv = int64(x)
		default:
			return nil, &ValidationError{Field: "data value", Message: fmt.Sprintf(
				"data value for %q is a %T: use a string, a whole number (64-bit) or a bool", k, v)}
		}
		out[k] = nv
	}
	return out, nil
}

func outOfRange(key string, v any) error {
	return &ValidationError{Field: "data value", Message: fmt.Sprintf(
		"data value for %q (%v) is out of range: whole numbers are 64-bit signed", key, v)}
}

func checkString(key, s string) error {
	bad := func(why string) error {
		return &ValidationError{Field: "data value", Message: fmt.Sprintf("data value for %q %s", key, why)}
	}
	if len(s) > MaxStringLen {
		return bad(fmt.Sprintf("is %d bytes, more than the maximum of %d", len(s), MaxStringLen))
	}
	if !utf8.ValidString(s) {
		return bad("is not valid UTF-8 text")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return bad("has control characters (printable text only)")
		}
	}
	return nil
}
