package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// SetConsent records the user's decision for the product ("on", "off" or
// "local", any case) in the user's consent file, as `telemetryctl consent`
// does: under a lock beside the file, the file is read, the product's line
// replaced (keeping its last off time; turning off records now as it),
// rewritten in canonical form to a temporary file (the old file's mode,
// else 0600) that is synced and renamed over it. Then, within what is left
// of the budget, the daemon is told to apply it. A consent file that
// exists but cannot be read (not UTF-8, over 1 MiB, no permission) is
// renamed beside itself to <name>.unreadable-<unix ms>-<pid> first, so
// that no other product's decision in it is lost; the new file keeps the
// lines that can still be read (not UTF-8 or over 1 MiB: those of its
// first MiB that parse with the bad bytes replaced; a line with one in its
// product or mode does not), as the Rust client does.
//
// It returns nil when the file is written and a running daemon applied
// it, or when no daemon answered in time (the daemon reads the file when
// it next starts). It returns an error when the file could not be written,
// or — having written it — when the running daemon answers that it reads
// consent from another file: then the daemon goes on with the old decision
// (an off is not applied: it keeps uploading), and the error is a
// *ConsentNotAppliedError (errors.Is(err, ErrConsentNotApplied)), as
// `telemetryctl consent` fails (exit 3) in the same case.
//
// This is what a CLI's own `mycli telemetry --on/--off` calls.
func (c *Client) SetConsent(mode string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = recovered(r)
		}
	}()
	if c == nil {
		return errNilClient
	}
	_, err = c.setConsent(mode, true)
	return err
}

// ErrConsentNotApplied is what errors.Is finds in SetConsent's (and a
// failed Prompt's) error when the consent file was written but the running
// daemon reads consent from another file, so it did not apply the change.
var ErrConsentNotApplied = errors.New("telemetry: the running telemetryd did not apply the consent change")

// ConsentNotAppliedError is SetConsent's error when it wrote WrittenFile
// but the running daemon reads consent from DaemonFile: the daemon keeps
// the decision it had (an off is not applied), which only agreeing on the
// file fixes: TELEMETRY_CONSENT_FILE (or Options.ConsentFile) set to
// DaemonFile for this program, telemetryctl and telemetry-emit alike.
type ConsentNotAppliedError struct {
	// DaemonFile is the consent file the running daemon reads.
	DaemonFile string
	// WrittenFile is the consent file SetConsent wrote the decision to.
	WrittenFile string
}

// Error says what happened and what to do, naming both files (the words
// of `telemetryctl consent`).
func (e *ConsentNotAppliedError) Error() string {
	return fmt.Sprintf("telemetry: telemetryd reads consent from %s, but this program wrote %s; "+
		"set TELEMETRY_CONSENT_FILE=%s (for this program, telemetryctl and telemetry-emit) so they agree, then try again",
		e.DaemonFile, e.WrittenFile, e.DaemonFile)
}

// Is makes errors.Is(err, ErrConsentNotApplied) true.
func (e *ConsentNotAppliedError) Is(target error) bool { return target == ErrConsentNotApplied }

// samePath says whether two paths name the same file as telemetryctl
// does: equal component by component (Rust's Path equality: repeated and
// trailing separators and "." components after the first do not count),
// else the same file on disk reached another way (a linked directory). A
// file that cannot be looked at is not taken for the same.
func samePath(a, b string) bool {
	if slices.Equal(pathComponents(a), pathComponents(b)) {
		return true
	}
	x, errA := os.Stat(a)
	y, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(x, y)
}

func pathComponents(p string) []string {
	var out []string
	if strings.HasPrefix(p, "/") {
		out = append(out, "/")
	}
	for i, part := range strings.Split(p, "/") {
		// A leading "." of a relative path is a component; any later one is not.
		if part == "" || part == "." && (i > 0 || len(out) > 0) {
			continue
		}
		out = append(out, part)
	}
	return out
}

// setConsent writes the file and, if notify, tells the daemon; it returns
// the daemon's report when it applied the change.
func (c *Client) setConsent(mode string, notify bool) (*ConsentReport, error) {
	m, ok := ParseMode(strings.TrimSpace(mode))
	if !ok {
		return nil, fmt.Errorf("telemetry: consent mode %q is not on, off or local", mode)
	}
	if err := ValidateName("product", c.opts.Product); err != nil {
		return nil, err
	}
	ctx := context.Background()
	deadline := c.deadline(ctx)
	// The decision is for the catalogue as it is now, which only the daemon
	// knows (it reads the manifests); an off needs no version.
	var version uint32
	if m != ModeOff {
		version = c.catalogueVersion(ctx, time.Now().Add(time.Until(deadline)/2))
	}
	if err := writeConsent(c.paths.ConsentFile, c.opts.Product, m, version, time.Now(), deadline); err != nil {
		return nil, fmt.Errorf("telemetry: cannot write the consent file %s: %w", c.paths.ConsentFile, err)
	}
	if !notify || time.Until(deadline) <= 0 {
		return nil, nil
	}
	build := c.opts.Build
	if ValidateBuild(build) != nil {
		build = "unknown"
	}
	line, err := encodeLine("consent_changed", consentChangedBody{Product: c.opts.Product, Build: build})
	if err != nil {
		return nil, nil
	}
	r, err := c.roundTrip(ctx, deadline, line, true)
	if err != nil || r.name != "consent_applied" {
		return nil, nil
	}
	var rep ConsentReport
	if r.into(&rep) != nil {
		return nil, nil
	}
	if rep.File != "" && !samePath(rep.File, c.paths.ConsentFile) {
		return &rep, &ConsentNotAppliedError{DaemonFile: rep.File, WrittenFile: c.paths.ConsentFile}
	}
	return &rep, nil
}

// catalogueVersion asks a running daemon for the product's catalogue
// version, before deadline; 0 when there is no daemon, no usable manifest
// or no answer in time.
func (c *Client) catalogueVersion(ctx context.Context, deadline time.Time) uint32 {
	line, err := encodeLine("status", struct{}{})
	if err != nil {
		return 0
	}
	r, err := c.roundTrip(ctx, deadline, line, true)
	if err != nil || r.name != "status" {
		return 0
	}
	s, err := decodeStatus(r)
	if err != nil {
		return 0
	}
	for _, pc := range s.Consent {
		if pc.Product == c.opts.Product && pc.ManifestError == nil {
			return pc.Version
		}
	}
	return 0
}

// rfc3339Micros formats t as humantime's format_rfc3339_micros does.
func rfc3339Micros(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// nodeLock is the lock a Node writer of the consent file holds (Node has
// no flock): a file made by exclusive creation. It makes that file, then
// waits for the flock on .consent.lock to be free; a flock writer takes the
// flock, then waits for this file to go. In that order two writers can never
// both go ahead (client/src/consent.rs NODE_LOCK).
const nodeLock = ".consent.node-lock"

// nodeLockHeld reports whether a live Node writer holds dir's nodeLock: it
// exists and was made within the last 10 s (one older died).
func nodeLockHeld(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, nodeLock))
	if err != nil {
		return false
	}
	age := time.Since(st.ModTime())
	return age < 10*time.Second && age > -10*time.Second
}

// refuseUnlessAFile is an error, with nothing written, unless what stands
// at the consent file's path is nothing yet or a regular file, and, for
// root, root's. A link is refused, not followed: one another user planted
// (in a directory they may write, or at the end of a chain of links)
// would lead the writer, root above all, to overwrite whatever it points
// to. A directory, FIFO, device or socket is refused: a consent file of
// /dev/null was replaced, /tmp would have been moved aside. As the Rust
// client.
func refuseUnlessAFile(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	what := ""
	switch t := st.Mode().Type(); {
	case t&os.ModeSymlink != 0:
		what = "a link (name the file itself)"
	case t.IsDir():
		what = "a directory"
	case t&os.ModeNamedPipe != 0:
		what = "a FIFO"
	case t&os.ModeDevice != 0:
		what = "a device"
	case t&os.ModeSocket != 0:
		what = "a socket"
	case !t.IsRegular():
		what = "not a regular file"
	default:
		if uid, ok := ownerOf(st); ok && uid != 0 && geteuid() == 0 {
			what = fmt.Sprintf("owned by uid %d, and root writes only root's files", uid)
		}
	}
	if what == "" {
		return nil
	}
	return fmt.Errorf("%s is %s, not a consent file to write: nothing was written; point TELEMETRY_CONSENT_FILE at a regular file", path, what)
}

// writeConsent records mode for product in the consent file at path.
func writeConsent(path, product string, mode Mode, version uint32, now time.Time, deadline time.Time) error {
	dir := filepath.Dir(path)
	// For root: before any of it is made, then as made.
	existing := dir
	for {
		if _, err := os.Lstat(existing); err == nil || existing == filepath.Dir(existing) {
			break
		}
		existing = filepath.Dir(existing)
	}
	if err := onlyRootsDirectories(existing); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := onlyRootsDirectories(dir); err != nil {
		return err
	}
	// Root's directories were checked just above, more strictly.
	if geteuid() != 0 {
		if why := untrustedDir(dir); why != "" {
			return fmt.Errorf("%s, so a decision written there could be changed by them; "+
				"set HOME, XDG_STATE_HOME or TELEMETRY_STATE_DIR to a directory of your own", why)
		}
	}
	// Non-blocking, a regular file only: a FIFO there must not hold the
	// host, nor a link lead it elsewhere.
	lock, err := openRegular(filepath.Join(dir, ".consent.lock"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// Closing the file releases the lock.
	defer lock.Close()
	// A decision must not be lost to a short budget: wait at least a
	// second for another writer to finish.
	if min := time.Now().Add(time.Second); deadline.Before(min) {
		deadline = min
	}
	for {
		if err := lockFile(lock, deadline); err != nil {
			return err
		}
		if !nodeLockHeld(dir) {
			break
		}
		// A live Node writer holds its own lock: let it finish.
		unlockFile(lock)
		if time.Now().After(deadline) {
			return errors.New("a Node writer holds the consent file's lock")
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Under the lock, so what is looked at is what is written.
	if err := refuseUnlessAFile(path); err != nil {
		return err
	}
	perm := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		perm = st.Mode().Perm()
	}
	// Read as everywhere else (a FIFO or /dev/zero in its place must not
	// hold the host). One that exists but cannot be read is kept beside
	// the new one, as the Rust client does, rather than lose the other
	// products' lines.
	var file ConsentFile
	if text, err := readSmallText(path); err == nil {
		file = ParseConsentFile(text)
	} else if !errors.Is(err, os.ErrNotExist) {
		// What can still be read is kept: a stray byte must not turn every
		// other product's decision into "undecided", which the daemon
		// would apply as an off (deleting what it stored and telling each
		// vendor). Not UTF-8 or too long: the lines that parse from the
		// first MiB read with the bad bytes replaced (a line with one in
		// its product or mode does not parse). No permission: nothing.
		var notText *notTextError
		if errors.As(err, &notText) {
			file = salvage(path)
		}
		kept := fmt.Sprintf("%s.unreadable-%d-%d", path, time.Now().UnixMilli(), os.Getpid())
		// Never over one kept before in the same millisecond: a rename
		// would replace it.
		for n, base := 2, kept; ; n++ {
			if _, err := os.Lstat(kept); errors.Is(err, os.ErrNotExist) {
				break
			}
			kept = fmt.Sprintf("%s-%d", base, n)
		}
		if err := os.Rename(path, kept); err != nil {
			return err
		}
		// Its mode (no read permission) is not passed on.
		perm = (perm | 0o600) & 0o666
	}
	file.SetVersion(product, mode, rfc3339Micros(now), version)
	tmp := filepath.Join(dir, fmt.Sprintf(".consent.%d.tmp", os.Getpid()))
	// A new file only: one left by a writer that died is removed first
	// (removing a link removes the link), and whatever another user put in
	// its place, a link to their file say, is never opened and truncated.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, os.ErrExist) {
		if err = os.Remove(tmp); err == nil {
			f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		}
	}
	if err != nil {
		return err
	}
	// The umask may have narrowed it.
	werr := f.Chmod(perm)
	if werr == nil {
		_, werr = f.WriteString(file.Render())
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
		if werr == nil {
			// The decision is recorded only once the rename is durable: an
			// off acknowledged to the user must survive a power cut (as in
			// the Rust client).
			return syncDir(filepath.Dir(path))
		}
	}
	if werr != nil {
		_ = os.Remove(tmp)
	}
	return werr
}

// salvage returns the decisions that can be read from the consent file at
// path that is not text, as the Rust client's salvage does: its first
// maxSmallText bytes, each bad sequence read as U+FFFD, parsed as usual; a
// line that does not parse is left out. Only what parses is kept, never
// the bad lines themselves.
func salvage(path string) ConsentFile {
	// A regular file (checked by the caller, under the lock); opened as
	// readSmallText opens it all the same.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ConsentFile{}
	}
	defer f.Close()
	_ = f.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	b, err := io.ReadAll(io.LimitReader(f, maxSmallText))
	if err != nil {
		return ConsentFile{}
	}
	file := ParseConsentFile(lossyUTF8(b))
	file.BadLines = nil
	return file
}

// lossyUTF8 is b as text with each bad sequence replaced by U+FFFD as
// Rust's String::from_utf8_lossy (and Node's and Python's decoders) do:
// one U+FFFD for each maximal subpart of an ill-formed sequence.
func lossyUTF8(b []byte) string {
	var s strings.Builder
	s.Grow(len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r != utf8.RuneError || n > 1 {
			s.Write(b[:n])
			b = b[n:]
			continue
		}
		// The longest start of a well-formed sequence (Unicode table
		// 3-7) at b[0], at least its first byte.
		lo, hi, need := byte(0x80), byte(0xBF), 0
		switch c := b[0]; {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			lo, need = 0xA0, 2
		case c == 0xED:
			hi, need = 0x9F, 2
		case c >= 0xE1 && c <= 0xEF:
			need = 2
		case c == 0xF0:
			lo, need = 0x90, 3
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			hi, need = 0x8F, 3
		}
		n = 1
		for n <= need && n < len(b) && b[n] >= lo && b[n] <= hi {
			lo, hi = 0x80, 0xBF
			n++
		}
		s.WriteRune(utf8.RuneError)
		b = b[n:]
	}
	return s.String()
}

// syncDir makes the renames in dir durable. Windows cannot flush a
// directory this way, and needs not: its renames are journaled.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	err = d.Sync()
	// A file system that cannot sync a directory (some FUSE, 9p and vboxsf
	// mounts) says EINVAL or ENOTSUP: the rename stands.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
