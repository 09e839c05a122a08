package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unicode/utf8"
)

// DefaultTimeout is the time budget of one call when Options.Timeout is 0.
const DefaultTimeout = 100 * time.Millisecond

// Options configure a Client. Only Product is needed; every path comes
// from the environment (TELEMETRY_SOCKET, TELEMETRY_STATE_DIR,
// TELEMETRY_CONSENT_FILE, TELEMETRY_SYSTEM_CONSENT_FILE) or the daemon's
// defaults unless set here.
type Options struct {
	// Product is the product name in the catalogue, e.g. "cfdev".
	Product string
	// Build is the host program's version, e.g. "1.2.0". When empty, New
	// takes TELEMETRY_BUILD from the client's environment if that is not
	// empty, else "unknown", as telemetry-emit does.
	Build string
	// Timeout bounds each call's talk with the daemon (connect, write,
	// read); 0 means DefaultTimeout.
	Timeout time.Duration
	// SocketPath overrides the daemon's socket.
	SocketPath string
	// StateDir overrides the daemon's state directory (spool, consent).
	StateDir string
	// ConsentFile overrides the user's consent file.
	ConsentFile string
	// SystemConsentFile overrides the administrator's consent file.
	SystemConsentFile string
	// Getenv replaces os.Getenv for every variable the client reads
	// (paths, DO_NOT_TRACK, TELEMETRY_OPTOUT); for tests.
	Getenv func(key string) string
	// Stdin and Stderr replace os.Stdin and os.Stderr for Prompt.
	Stdin, Stderr *os.File
}

// Client records events for one product. Its methods are safe for
// concurrent use, never panic and never print (but Prompt).
type Client struct {
	opts  Options
	paths Paths
	env   Getenv
	// buildFromEnv: opts.Build came from TELEMETRY_BUILD, which an error
	// about it names.
	buildFromEnv bool
	// slots bounds the connections this client has open at once (see
	// maxInFlight); nil in a Client not made by New: unbounded.
	slots chan struct{}
}

// maxInFlight is how many connections one Client opens to the daemon at
// once. Each emit opens one; a CLI emitting from thousands of goroutines
// would otherwise pass the daemon's connection limit (512 by default), be
// refused busy, and spool (past 1,000 files, drop) what it sent. The rest
// wait their turn for half their budget at most, then spool.
const maxInFlight = 16

// buildVar is the variable that gives the build when Options.Build is
// empty (telemetry-emit's --build falls back to it too).
const buildVar = "TELEMETRY_BUILD"

// New makes a Client. It does no I/O and cannot fail: a bad product name
// or build is reported by each call that needs them.
func New(opts Options) (c *Client) {
	defer func() {
		if r := recover(); r != nil {
			c = &Client{opts: opts, env: func(string) string { return "" }}
		}
	}()
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	env := Getenv(os.Getenv)
	if opts.Getenv != nil {
		env = opts.Getenv
	}
	p := processPaths(env)
	if opts.SocketPath != "" {
		p.Socket = opts.SocketPath
	}
	if opts.StateDir != "" {
		p.StateDir = opts.StateDir
		if env("TELEMETRY_CONSENT_FILE") == "" {
			p.ConsentFile = joinPath(p.StateDir, "consent")
		}
	}
	if opts.ConsentFile != "" {
		p.ConsentFile = opts.ConsentFile
	}
	if opts.SystemConsentFile != "" {
		p.SystemConsentFile = opts.SystemConsentFile
	}
	p.SpoolDir = SpoolDir(p.StateDir, p.Socket)
	// As telemetry-emit: --build, else a non-empty TELEMETRY_BUILD, else
	// "unknown". (An explicit build is checked as given.)
	fromEnv := false
	if opts.Build == "" {
		if b := env(buildVar); b != "" {
			opts.Build, fromEnv = b, true
		} else {
			opts.Build = "unknown"
		}
	}
	return &Client{opts: opts, paths: p, env: env, buildFromEnv: fromEnv, slots: make(chan struct{}, maxInFlight)}
}

// Paths returns the locations this client uses.
func (c *Client) Paths() Paths {
	if c == nil {
		return Paths{}
	}
	return c.paths
}

// OutcomeKind says what happened to an event.
type OutcomeKind string

// The outcomes of Emit and EmitNoWait.
const (
	// Acknowledged: the daemon committed the event to disk.
	Acknowledged OutcomeKind = "acknowledged"
	// Queued: the event was written to the daemon without waiting (no-wait).
	Queued OutcomeKind = "queued"
	// Spooled: the daemon was not reachable in time (or asked to retry);
	// the event is in the spool directory for the daemon to take in.
	Spooled OutcomeKind = "spooled"
	// Dropped: the daemon was not reachable and the spool is full.
	Dropped OutcomeKind = "dropped"
	// Refused: the daemon (or the local checks, code "invalid") refused
	// the event for good; it was not spooled.
	Refused OutcomeKind = "refused"
	// Off: consent is off; nothing was connected, written or started.
	Off OutcomeKind = "off"
	// Failed: something went wrong that left the event nowhere (Err says
	// what), e.g. the spool could not be written.
	Failed OutcomeKind = "failed"
)

// Outcome is the result of one Emit or EmitNoWait.
type Outcome struct {
	// Kind is what happened.
	Kind OutcomeKind
	// ID is the event's id (empty when no event was made).
	ID string
	// Accepted and Duplicates are the daemon's counts (Acknowledged).
	Accepted, Duplicates uint32
	// Code and Message are the refusal (Refused).
	Code, Message string
	// Layer is the consent layer that said off (Off).
	Layer Layer
	// Err says why the event was spooled, dropped or failed; with Off, it
	// says why the user's consent file was not believed (another user could
	// have written it), when that is so.
	Err error
	// Autostarted tells whether a spooled event's Emit started telemetryd
	// because nothing served the socket.
	Autostarted bool
}

// Delivered tells whether the event reached the daemon or its spool.
func (o Outcome) Delivered() bool {
	return o.Kind == Acknowledged || o.Kind == Queued || o.Kind == Spooled
}

// String describes the outcome for people.
func (o Outcome) String() string {
	switch o.Kind {
	case Acknowledged:
		return fmt.Sprintf("acknowledged (accepted %d, duplicates %d)", o.Accepted, o.Duplicates)
	case Refused:
		return fmt.Sprintf("refused (%s): %s", o.Code, o.Message)
	case Off:
		if o.Err != nil {
			return fmt.Sprintf("off (decided by %s): %v", o.Layer, o.Err)
		}
		return fmt.Sprintf("off (decided by %s)", o.Layer)
	case Spooled, Dropped, Failed:
		if o.Err != nil {
			return fmt.Sprintf("%s: %v", o.Kind, o.Err)
		}
	}
	return string(o.Kind)
}

// DaemonError is an error reply from the daemon.
type DaemonError struct {
	// Code is the machine-readable kind, e.g. "not_in_catalogue".
	Code string
	// Message says what failed, for people.
	Message string
}

// Error implements error.
func (e *DaemonError) Error() string {
	return fmt.Sprintf("telemetryd refused the request (%s): %s", e.Code, e.Message)
}

// finalCodes are error codes after which an event is not spooled.
var finalCodes = map[string]bool{
	"consent_off": true, "invalid": true, "not_in_catalogue": true,
	"permission_denied": true, "malformed": true, "frame_too_large": true,
}

// errNilClient is returned by the methods of a nil *Client.
var errNilClient = errors.New("telemetry: nil client (use telemetry.New)")

// recovered turns a panic value into an error.
func recovered(r any) error {
	return fmt.Errorf("telemetry: internal error (recovered): %v", r)
}

// deadline is the end of a call's budget: now + Timeout, or ctx's
// deadline if sooner.
func (c *Client) deadline(ctx context.Context) time.Time {
	d := time.Now().Add(c.opts.Timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	return d
}

// Consent returns the product's effective consent from the files and the
// environment, without contacting the daemon.
func (c *Client) Consent() (st ConsentState) {
	defer func() {
		if r := recover(); r != nil {
			st = ConsentState{ModeOff, LayerDefault}
		}
	}()
	if c == nil {
		return ConsentState{ModeOff, LayerDefault}
	}
	st, _ = c.consent()
	return st
}

// consent is Consent and why the user's consent file was not believed
// ("" when it was, or is missing).
func (c *Client) consent() (ConsentState, string) {
	in, why := c.readConsent()
	return ResolveConsent(c.opts.Product, in), why
}

// consentInputs reads the two consent files and takes the environment.
func (c *Client) consentInputs() ConsentInputs {
	in, _ := c.readConsent()
	return in
}

// readConsent is consentInputs, and why the user's file was not believed
// (consentNotBelieved): then it counts as unreadable (undecided, so off).
func (c *Client) readConsent() (ConsentInputs, string) {
	in := ConsentInputs{Env: c.env}
	if s, err := readSmallText(c.paths.SystemConsentFile); err == nil {
		in.System = &s
	} else if !errors.Is(err, os.ErrNotExist) {
		in.SystemUnreadable = true
	}
	if why := consentNotBelieved(c.paths.ConsentFile); why != "" {
		return in, why
	}
	if s, err := readSmallText(c.paths.ConsentFile); err == nil {
		in.User = &s
	}
	return in, ""
}

// maxSmallText is the most a consent file may hold (platform/src/fs.rs
// MAX_SMALL_TEXT): a link to /dev/zero in its place must not fill memory.
const maxSmallText = 1 << 20

// readSmallText reads a consent file as the daemon and the shim do
// (platform/src/fs.rs read_small_text): strict UTF-8 with nothing removed
// (a byte-order mark stays: ParseConsentFile skips one at the start), at most maxSmallText
// bytes, opened non-blocking so that a FIFO in its place cannot hold the
// host: with no writer it reads as empty, and one whose writer has sent
// nothing is an error after a moment. A file read that is not text (too
// long, or not UTF-8) is a *notTextError.
func readSmallText(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Only a FIFO or a device is polled; a regular file ignores this.
	_ = f.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	b, err := io.ReadAll(io.LimitReader(f, maxSmallText+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSmallText {
		return "", &notTextError{fmt.Sprintf("%s is larger than %d bytes", path, maxSmallText)}
	}
	if !utf8.Valid(b) {
		return "", &notTextError{fmt.Sprintf("%s is not UTF-8", path)}
	}
	return string(b), nil
}

// notTextError is readSmallText's error for a file it read that is not
// text: over maxSmallText bytes, or not UTF-8 (the Rust client's
// InvalidData).
type notTextError struct{ msg string }

func (e *notTextError) Error() string { return e.msg }

// Emit records one event and waits, within the budget, until the daemon
// has committed it to disk. Consent is checked first (after the product
// name: one that is not valid is Refused, code "invalid"): when it is off,
// Emit returns Off at once having done nothing. When the daemon cannot be
// reached in time (or asks to retry), the event is spooled for it to take
// in later. data values are strings, bools and whole numbers (any Go
// integer type that fits int64). ctx may be nil; its deadline shortens the
// budget.
func (c *Client) Emit(ctx context.Context, event string, data map[string]any) Outcome {
	return c.emit(ctx, event, data, true)
}

// EmitNoWait is Emit without waiting for the commit: it returns Queued as
// soon as the event is written to the daemon's socket (or Spooled, Off,
// Refused, ... as Emit).
func (c *Client) EmitNoWait(ctx context.Context, event string, data map[string]any) Outcome {
	return c.emit(ctx, event, data, false)
}

func (c *Client) emit(ctx context.Context, name string, data map[string]any, ack bool) (out Outcome) {
	defer func() {
		if r := recover(); r != nil {
			out = Outcome{Kind: Failed, Err: recovered(r)}
		}
	}()
	if c == nil {
		return Outcome{Kind: Failed, Err: errNilClient}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	// From the call's start: reading the consent files (a FIFO, a slow
	// mount) is spent from the same budget, as in the Rust client.
	deadline := c.deadline(ctx)
	// Before consent: nobody can have consented for a name that is not a
	// product's, and "off" would hide the host's typo as the user's no.
	if err := ValidateName("product", c.opts.Product); err != nil {
		return Outcome{Kind: Refused, Code: "invalid", Message: err.Error(), Err: err}
	}
	if st, why := c.consent(); st.Mode == ModeOff {
		out := Outcome{Kind: Off, Layer: st.Layer}
		if why != "" {
			out.Err = errors.New(why)
		}
		return out
	}
	if err := ctx.Err(); err != nil {
		return Outcome{Kind: Failed, Err: err}
	}
	ev, err := c.newEvent(name, data)
	if err != nil {
		return Outcome{Kind: Refused, Code: "invalid", Message: err.Error(), Err: err}
	}
	line, err := emitLine([]Event{ev}, ack)
	if err != nil {
		return Outcome{Kind: Refused, Code: "invalid", Message: err.Error(), Err: err, ID: ev.ID}
	}
	r, err := c.roundTrip(ctx, deadline, line, ack)
	if err != nil {
		out := c.spool(ev, err, deadline)
		// Whatever became of the event: with the spool full (or not
		// writable), the daemon is what would empty it.
		// Not once the budget is spent: the host comes first (the next
		// call starts it).
		if nothingServes(err) && time.Now().Before(deadline) {
			out.Autostarted = c.autostart()
		}
		return out
	}
	if !ack {
		return Outcome{Kind: Queued, ID: ev.ID}
	}
	switch r.name {
	case "ack":
		var a ackBody
		if err := r.into(&a); err != nil {
			return c.spool(ev, err, deadline)
		}
		return Outcome{Kind: Acknowledged, ID: ev.ID, Accepted: a.Accepted, Duplicates: a.Duplicates}
	case "error":
		var e errorBody
		if err := r.into(&e); err != nil {
			return c.spool(ev, err, deadline)
		}
		if finalCodes[e.Code] {
			return Outcome{Kind: Refused, ID: ev.ID, Code: e.Code, Message: e.Message,
				Err: &DaemonError{e.Code, e.Message}}
		}
		return c.spool(ev, &DaemonError{e.Code, e.Message}, deadline)
	default:
		return c.spool(ev, fmt.Errorf("telemetry: unexpected %q reply to an emit", r.name), deadline)
	}
}

// newEvent checks and builds an event with a fresh id and the time now.
func (c *Client) newEvent(name string, data map[string]any) (Event, error) {
	if err := ValidateName("product", c.opts.Product); err != nil {
		return Event{}, err
	}
	if err := ValidateName("event", name); err != nil {
		return Event{}, err
	}
	if err := ValidateBuild(c.opts.Build); err != nil {
		var v *ValidationError
		if c.buildFromEnv && errors.As(err, &v) {
			v.Message += " (from " + buildVar + ")"
		}
		return Event{}, err
	}
	d, err := normalizeData(data)
	if err != nil {
		return Event{}, err
	}
	now := time.Now()
	return Event{
		ID:          uuidV7(now),
		Event:       name,
		Product:     c.opts.Product,
		Build:       c.opts.Build,
		TimestampUs: now.UnixMicro(),
		Data:        d,
	}, nil
}

// roundTrip connects, writes line and (if wantReply) reads one reply line,
// all before deadline.
func (c *Client) roundTrip(ctx context.Context, deadline time.Time, line []byte, wantReply bool) (reply, error) {
	if c.slots != nil {
		// Built only when it happens: not on every emit's path.
		busy := func() error {
			return fmt.Errorf("telemetry: this client's %d connections to telemetryd at %s were busy for half the budget", maxInFlight, c.paths.Socket)
		}
		// Half the time left at most, keeping the rest to spool in: in a
		// burst against a hung daemon every waiter gives up at once, and
		// their files are written one after another (see spoolGrace).
		waitUntil := time.Now().Add(time.Until(deadline) / 2)
		wait := time.NewTimer(time.Until(waitUntil))
		select {
		case c.slots <- struct{}{}:
			wait.Stop()
			// Taken at the very end of the wait (both were ready): it
			// would only connect to be cut off.
			if !time.Now().Before(waitUntil) {
				<-c.slots
				return reply{}, busy()
			}
		case <-wait.C:
			return reply{}, busy()
		case <-ctx.Done():
			wait.Stop()
			return reply{}, ctx.Err()
		}
		defer func() { <-c.slots }()
	}
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "unix", c.paths.Socket)
	if err != nil {
		return reply{}, fmt.Errorf("telemetry: cannot connect to telemetryd at %s: %w", c.paths.Socket, err)
	}
	defer conn.Close()
	if err := checkServer(conn, c.paths.Socket); err != nil {
		return reply{}, err
	}
	// The deadline first, then the cancel: a cancel that lands between
	// them would otherwise be overwritten by the later deadline.
	if err := conn.SetDeadline(deadline); err != nil {
		return reply{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(line); err != nil {
		return reply{}, fmt.Errorf("telemetry: cannot write to telemetryd at %s: %w", c.paths.Socket, err)
	}
	if !wantReply {
		return reply{}, nil
	}
	buf := make([]byte, 0, 512)
	chunk := make([]byte, 4096)
	for {
		n, err := conn.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := indexNewline(buf); i >= 0 {
			return decodeReply(buf[:i])
		}
		if len(buf) > MaxLineLen {
			return reply{}, fmt.Errorf("telemetry: the daemon's reply is longer than %d bytes", MaxLineLen)
		}
		if err != nil {
			return reply{}, fmt.Errorf("telemetry: no reply from telemetryd at %s: %w", c.paths.Socket, err)
		}
	}
}

func indexNewline(b []byte) int {
	for i, x := range b {
		if x == '\n' {
			return i
		}
	}
	return -1
}

// request sends one request and returns its reply; an error reply becomes
// a *DaemonError.
func (c *Client) request(ctx context.Context, name string, body any) (reply, error) {
	line, err := encodeLine(name, body)
	if err != nil {
		return reply{}, err
	}
	r, err := c.roundTrip(ctx, c.deadline(ctx), line, true)
	if err != nil {
		return reply{}, err
	}
	if r.name == "error" {
		var e errorBody
		if err := r.into(&e); err != nil {
			return reply{}, err
		}
		return reply{}, &DaemonError{e.Code, e.Message}
	}
	return r, nil
}

// Status asks the daemon for its status report, within the budget.
func (c *Client) Status() (s *StatusReport, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, recovered(r)
		}
	}()
	if c == nil {
		return nil, errNilClient
	}
	r, err := c.request(context.Background(), "status", struct{}{})
	if err != nil {
		return nil, err
	}
	if r.name != "status" {
		return nil, fmt.Errorf("telemetry: unexpected %q reply to status", r.name)
	}
	return decodeStatus(r)
}
