package telemetry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// PromptKind says what Prompt did.
type PromptKind string

// The results of Prompt (the names telemetryctl's `--prompt --json` uses).
const (
	// PromptAsked: the user was asked; the answer (Mode) is recorded.
	PromptAsked PromptKind = "asked"
	// PromptAlreadyDecided: the user's file has a decision for the
	// product; nothing asked or changed.
	PromptAlreadyDecided PromptKind = "already_decided"
	// PromptForcedOff: the system file or the environment forces the
	// product off; nothing asked or recorded.
	PromptForcedOff PromptKind = "forced_off"
	// PromptNotATerminal: stdin or stderr is not a terminal, so nobody
	// could answer; nothing asked or recorded (ask again next start).
	PromptNotATerminal PromptKind = "not_a_terminal"
	// PromptNoAnswer: asked, but the answer could not be read; nothing
	// recorded.
	PromptNoAnswer PromptKind = "no_answer"
	// PromptFailed: the product name is invalid, the answer could not be
	// recorded, or it was recorded in a consent file the running daemon
	// does not read (Err matches ErrConsentNotApplied: the file holds the
	// answer, so the next Prompt is AlreadyDecided; fix the files instead
	// of asking again). Err says which.
	PromptFailed PromptKind = "failed"
)

// PromptResult is what Prompt did.
type PromptResult struct {
	// Kind is what happened.
	Kind PromptKind
	// Mode is the recorded answer (PromptAsked, or PromptFailed after
	// asking): ModeOn for y/yes, else ModeOff.
	Mode Mode
	// Err says why it failed.
	Err error
}

// genericPrompt is telemetryctl's generic wording of the question.
func genericPrompt(product string) string {
	return product + " would like to collect anonymous usage telemetry to learn which features are used.\n" +
		"Each event holds: the event name, a little catalogued data, a UTC timestamp, an anonymous\n" +
		"machine ID (a SHA-256 hash, never your machine's real ID), your OS and the version.\n" +
		"No names, paths, IP addresses or host names are collected."
}

// howToChange is always shown after the prompt text.
func howToChange(product string) string {
	return "Change your mind at any time: `telemetryctl consent " + product + " off` (or `local`: keep it on\n" +
		"this machine only); see exactly what is kept: `telemetryctl show`."
}

// Prompt asks the user once, on the terminal, whether to enable telemetry
// for the product, and records the answer as SetConsent does. It asks
// only when the user has not decided yet, neither the system file nor the
// environment forces the product off, and both stdin and stderr are
// terminals; otherwise it returns at once, having written nothing. text
// replaces the generic wording of the question ("" keeps it); the "how to
// change" lines and `Enable anonymous telemetry for P? [y/N] ` always
// follow. y or yes (any case) means on; anything else, Enter or end of
// input means off.
func (c *Client) Prompt(text string) (res PromptResult) {
	defer func() {
		if r := recover(); r != nil {
			res = PromptResult{Kind: PromptFailed, Err: recovered(r)}
		}
	}()
	if c == nil {
		return PromptResult{Kind: PromptFailed, Err: errNilClient}
	}
	product := c.opts.Product
	if err := ValidateName("product", product); err != nil {
		return PromptResult{Kind: PromptFailed, Err: err}
	}
	in := c.consentInputs()
	if in.User != nil {
		user := ParseConsentFile(*in.User)
		if _, ok := user.Get(product); ok {
			return PromptResult{Kind: PromptAlreadyDecided}
		}
	}
	if st := ResolveConsent(product, in); st.Layer == LayerSystem || st.Layer == LayerEnvironment {
		return PromptResult{Kind: PromptForcedOff}
	}
	stdin, stderr := c.opts.Stdin, c.opts.Stderr
	if stdin == nil {
		stdin = os.Stdin
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	if !isTerminal(stdin) || !isTerminal(stderr) {
		return PromptResult{Kind: PromptNotATerminal}
	}
	text = cleanText(text)
	if strings.TrimSpace(text) == "" {
		text = genericPrompt(product)
	}
	_, _ = fmt.Fprintf(stderr, "%s\n%s\n\nEnable anonymous telemetry for %s? [y/N] ",
		strings.TrimRight(text, " \t\r\n"), howToChange(product), product)
	answer, err := readLine(stdin)
	if err != nil {
		return PromptResult{Kind: PromptNoAnswer, Err: err}
	}
	mode := ModeOff
	if a := strings.ToLower(strings.TrimSpace(answer)); a == "y" || a == "yes" {
		mode = ModeOn
	}
	if _, err := c.setConsent(string(mode), true); err != nil {
		return PromptResult{Kind: PromptFailed, Mode: mode, Err: err}
	}
	return PromptResult{Kind: PromptAsked, Mode: mode}
}

// cleanText drops control characters other than newlines and tabs: the
// text goes to the user's terminal.
func cleanText(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return -1
		}
		return r
	}, s)
}

// readLine reads one line a byte at a time, so that nothing after it is
// taken from the host's stdin. End of input ends the line.
func readLine(f *os.File) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for b.Len() < 4096 {
		n, err := f.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			b.WriteByte(one[0])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return b.String(), nil
}
