package telemetry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// spool leaves ev in the portable spool directory for the daemon to take
// in (proto/src/paths.rs, spool_dir_for): one file per event holding the
// emit line with "ack":false, written to .<id>.tmp (0600, exclusively)
// and renamed to <id>.json. why is the reason the daemon was not used.
func (c *Client) spool(ev Event, why error) Outcome {
	kind, err := writeSpool(c.paths.SpoolDir, ev)
	switch kind {
	case Spooled:
		return Outcome{Kind: Spooled, ID: ev.ID, Err: why}
	case Dropped:
		return Outcome{Kind: Dropped, ID: ev.ID, Err: fmt.Errorf("%w; the spool %s is full (%d files), event dropped", why, c.paths.SpoolDir, MaxSpoolFiles)}
	default:
		return Outcome{Kind: Failed, ID: ev.ID, Err: fmt.Errorf("%w; and it could not be spooled: %v", why, err)}
	}
}

// writeSpool writes one spool file for ev in dir. When dir is full, ev is
// dropped and the drop noted (noteDrop).
func writeSpool(dir string, ev Event) (OutcomeKind, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Failed, err
	}
	if n, err := countEntries(dir, MaxSpoolFiles); err != nil {
		return Failed, err
	} else if n >= MaxSpoolFiles {
		noteDrop(dir, ev.Product)
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
	return Spooled, nil
}

// noteDrop notes one event of product dropped because the spool at spool
// is full, for the daemon to count (SpoolDropsFile): the product's name and
// a newline, in one append (no lock), to a file created 0600, while the file
// is under MaxDropsBytes. Best effort: a drop that cannot be noted is still
// a drop, so every error is ignored.
func noteDrop(spool, product string) {
	f, err := openRegular(SpoolDropsFile(spool), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() >= MaxDropsBytes {
		return
	}
	_, _ = f.Write([]byte(product + "\n"))
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
