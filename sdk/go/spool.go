package telemetry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// spoolGrace is how long past its budget a call may wait for its turn to
// write the spool: a burst of calls that all gave up on a hung daemon at
// once would otherwise write their files one after another, each call
// waiting for all those before it (0.1 s of budget became 0.8 s for 2,000
// goroutines). A call that finds the spool free writes at once, whatever
// the time (one file, local disk); one still waiting at its budget plus
// spoolGrace drops its event, noted in the drop file like a full spool's.
const spoolGrace = 5 * time.Millisecond

// spoolRecount is how long a count of a spool directory's entries is
// trusted by the calls that waited while another wrote: in a burst, reading
// 1,000 names before every write would cost more than the write. A call that
// finds the spool free counts again.
const spoolRecount = 100 * time.Millisecond

// errSpoolBusy: the spool was still being written by this process's other
// calls when the budget (plus spoolGrace) ran out.
var errSpoolBusy = errors.New("the spool was busy with this program's other events until past the budget")

// spoolGate is one process's turn at one spool directory. Writes take turns
// so that the count is checked and the file written as one step: without
// it, concurrent emits each saw 999 files and each wrote one (1,222 files
// after 2,000 emits, past MaxSpoolFiles).
type spoolGate struct {
	// turn holds a token while a write is under way: a mutex whose wait
	// can end at a deadline.
	turn chan struct{}
	// n is the directory's entries as counted at counted, plus those this
	// process wrote since (see spoolRecount). Guarded by turn.
	n       int
	counted time.Time

	// drops are the events (by product) dropped but not yet noted, written
	// by one caller at a time (noting) in one append: 1,800 goroutines
	// dropping at once each opening and appending to the drop file took
	// 20 ms past their budget.
	dropsMu sync.Mutex
	drops   map[string]int
	noting  bool
}

var spoolGates = struct {
	sync.Mutex
	m map[string]*spoolGate
}{m: map[string]*spoolGate{}}

func gateFor(dir string) *spoolGate {
	spoolGates.Lock()
	defer spoolGates.Unlock()
	g := spoolGates.m[dir]
	if g == nil {
		g = &spoolGate{turn: make(chan struct{}, 1)}
		spoolGates.m[dir] = g
	}
	return g
}

// spool leaves ev in the portable spool directory for the daemon to take
// in (proto/src/paths.rs, spool_dir_for): one file per event holding the
// emit line with "ack":false, written to .<id>.tmp (0600, exclusively)
// and renamed to <id>.json. why is the reason the daemon was not used;
// deadline is the end of the call's budget (see spoolGrace).
func (c *Client) spool(ev Event, why error, deadline time.Time) Outcome {
	kind, err := writeSpoolBy(c.paths.SpoolDir, c.paths.StateDir, ev, deadline.Add(spoolGrace))
	switch {
	case kind == Spooled:
		return Outcome{Kind: Spooled, ID: ev.ID, Err: why}
	case kind == Dropped && err != nil:
		return Outcome{Kind: Dropped, ID: ev.ID, Err: fmt.Errorf("%w; %v, event dropped", why, err)}
	case kind == Dropped:
		return Outcome{Kind: Dropped, ID: ev.ID, Err: fmt.Errorf("%w; the spool %s is full (%d files), event dropped", why, c.paths.SpoolDir, MaxSpoolFiles)}
	default:
		return Outcome{Kind: Failed, ID: ev.ID, Err: fmt.Errorf("%w; and it could not be spooled: %v", why, err)}
	}
}

// writeSpool writes one spool file for ev in dir, waiting as long as it
// takes for its turn. When dir is full, ev is dropped and the drop noted
// (noteDrop).
func writeSpool(dir string, ev Event) (OutcomeKind, error) {
	return writeSpoolBy(dir, "", ev, time.Time{})
}

// writeSpoolBy is writeSpool waiting for its turn until until (zero: no
// limit); past it ev is dropped, noted, with errSpoolBusy. state is the
// state directory holding the spool ("": not checked; see untrustedSpool).
func writeSpoolBy(dir, state string, ev Event, until time.Time) (OutcomeKind, error) {
	g := gateFor(dir)
	waited := false
	select {
	case g.turn <- struct{}{}:
	default:
		waited = true
		var expired <-chan time.Time
		if !until.IsZero() {
			t := time.NewTimer(time.Until(until))
			defer t.Stop()
			expired = t.C
		}
		select {
		case g.turn <- struct{}{}:
		case <-expired:
			g.noteDrop(dir, ev.Product)
			return Dropped, errSpoolBusy
		}
	}
	kind, err := func() (OutcomeKind, error) {
		defer func() { <-g.turn }()
		return g.write(dir, state, ev, waited)
	}()
	if kind == Dropped {
		g.noteDrop(dir, ev.Product)
	}
	return kind, err
}

// write writes ev's file in dir unless dir is full (Dropped, not noted)
// or it, the directory holding it or state ("": not checked) could be
// another user's (Failed); the caller holds g.turn, after waiting for it
// if waited.
func (g *spoolGate) write(dir, state string, ev Event, waited bool) (OutcomeKind, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Failed, err
	}
	// Not into a directory another user made or can write (the default
	// /tmp/telemetry-UID/state without HOME, made first by someone else):
	// they could read the events. Failed, not Dropped: nothing is noted
	// there either.
	if why := untrustedSpool(dir, state); why != "" {
		return Failed, errors.New(why)
	}
	if !waited || time.Since(g.counted) > spoolRecount {
		n, err := countEntries(dir, MaxSpoolFiles)
		if err != nil {
			return Failed, err
		}
		g.n, g.counted = n, time.Now()
	}
	if g.n >= MaxSpoolFiles {
		return Dropped, nil
	}
	line, err := emitLine([]Event{ev}, false)
	if err != nil {
		return Failed, err
	}
	tmp := filepath.Join(dir, "."+ev.ID+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Failed, err
	}
	// No fsync: it can take longer than the host's whole budget on a busy
	// or failing disk, and the spool is the fallback for an event nobody
	// acknowledged (the shim and the other SDKs do not sync theirs either).
	// A file a power cut leaves empty or torn is refused by the daemon's
	// intake as damaged, counted and removed: it costs that one event.
	_, werr := f.Write(line)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, ev.ID+".json"))
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return Failed, werr
	}
	g.n++
	return Spooled, nil
}

// noteDrop notes one event of product dropped from dir (noteDrops): at
// once, or by the caller already noting others, which takes this one too
// before it returns.
func (g *spoolGate) noteDrop(dir, product string) {
	g.dropsMu.Lock()
	if g.drops == nil {
		g.drops = map[string]int{}
	}
	g.drops[product]++
	if g.noting {
		g.dropsMu.Unlock()
		return
	}
	g.noting = true
	for len(g.drops) > 0 {
		batch := g.drops
		g.drops = map[string]int{}
		g.dropsMu.Unlock()
		noteDrops(dir, batch)
		g.dropsMu.Lock()
	}
	g.noting = false
	g.dropsMu.Unlock()
}

// noteDrop notes one event of product dropped because the spool at spool
// is full, for the daemon to count (SpoolDropsFile): the product's name and
// a newline, in one append (no lock), to a file created 0600, while the file
// is under MaxDropsBytes. Best effort: a drop that cannot be noted is still
// a drop, so every error is ignored.
func noteDrop(spool, product string) {
	noteDrops(spool, map[string]int{product: 1})
}

// noteDrops is noteDrop for n[p] events of each product p, in one append.
func noteDrops(spool string, n map[string]int) {
	if untrustedSpool(spool, "") != "" {
		return
	}
	f, err := openRegular(SpoolDropsFile(spool), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() >= MaxDropsBytes {
		return
	}
	var b []byte
	for product, k := range n {
		for ; k > 0; k-- {
			b = append(b, product+"\n"...)
		}
	}
	_, _ = f.Write(b)
}

// openRegular opens path with flag plus O_NONBLOCK and O_NOFOLLOW and
// refuses (closing it) anything but a regular file. A FIFO in its place
// never holds the host: opened for writing with no reader it fails at once
// (ENXIO), and one that opens is refused before anything reads or writes
// it. A link is not followed: one another user planted (a lock file's, in a
// directory they may write) would have it create or open any file, as root
// /etc/nologin.
func openRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|noFollow, perm)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a regular file", path)
		}
		return nil, err
	}
	return f, nil
}

// countEntries counts dir's entries, stopping at max.
func countEntries(dir string, max int) (int, error) {
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for n < max {
		names, err := d.Readdirnames(max - n)
		n += len(names)
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
