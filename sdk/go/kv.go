package telemetry

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseKV parses a `KEY=VALUE` string into typed event data, as
// telemetry-emit reads its arguments: split at the first `=`; `true` and
// `false` become bools; a whole number that fits 64-bit signed (optional
// sign, decimal digits) an int64; anything else a string. `KEY:=VALUE`
// (the first `:=` before any `=`) forces a string. No `=` is an error.
// Keys are not checked here.
func ParseKV(arg string) (key string, value any, err error) {
	defer func() {
		if r := recover(); r != nil {
			key, value, err = "", nil, fmt.Errorf("telemetry: cannot parse %q: %v", arg, r)
		}
	}()
	if k, v, ok := strings.Cut(arg, ":="); ok && !strings.Contains(k, "=") {
		return k, v, nil
	}
	k, v, ok := strings.Cut(arg, "=")
	if !ok {
		return "", nil, fmt.Errorf("telemetry: expected KEY=VALUE, got %q", arg)
	}
	switch v {
	case "true":
		return k, true, nil
	case "false":
		return k, false, nil
	}
	if isDecimal(v) {
		if i, err := strconv.ParseInt(v, 10, 64); err == nil {
			return k, i, nil
		}
	}
	return k, v, nil
}

// isDecimal: an optional `+` or `-`, then one or more ASCII digits (what
// Rust's i64::from_str accepts; Go's ParseInt also takes `_` and prefixes
// with base 0, but not with base 10: checked anyway).
func isDecimal(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
