//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock on f, retrying until deadline. The
// lock is released when f is closed (or by unlockFile).
func lockFile(f *os.File, deadline time.Time) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var ferr error
		if err := raw.Control(func(fd uintptr) {
			ferr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
		}); err != nil {
			return err
		}
		if ferr == nil {
			return nil
		}
		if !errors.Is(ferr, syscall.EWOULDBLOCK) && !errors.Is(ferr, syscall.EINTR) {
			return ferr
		}
		if time.Now().After(deadline) {
			return errors.New("another process holds the consent file's lock")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// unlockFile lets go of the flock lockFile took on f.
func unlockFile(f *os.File) {
	if raw, err := f.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) { _ = syscall.Flock(int(fd), syscall.LOCK_UN) })
	}
}

// ownerOf is the uid owning fi's file, and whether one could be read.
func ownerOf(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// noFollow is O_NOFOLLOW where there is one.
const noFollow = syscall.O_NOFOLLOW

// onlyRootsDirectories is, for root, an error unless every directory on
// the way to dir, as named and as resolved, is root's and writable by
// nobody else (a sticky one aside, as /tmp): another user who made
// /tmp/telemetry-0 first (root's default with no HOME), or whose home
// sudo -E kept, could otherwise lead root's write anywhere through a link
// in a directory of theirs. As the Rust client.
func onlyRootsDirectories(dir string) error {
	if geteuid() != 0 {
		return nil
	}
	named, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	resolved, err := filepath.EvalSymlinks(named)
	if err != nil {
		return err
	}
	for _, start := range []string{named, resolved} {
		for d := start; ; d = filepath.Dir(d) {
			st, err := os.Lstat(d)
			if err != nil {
				return err
			}
			why := ""
			uid, _ := ownerOf(st)
			mode := st.Mode()
			if uid != 0 {
				why = fmt.Sprintf("is owned by uid %d", uid)
			} else if mode&os.ModeSymlink == 0 && mode.Perm()&0o022 != 0 && mode&os.ModeSticky == 0 {
				why = "may be written by other users"
			}
			if why != "" {
				return fmt.Errorf("%s %s: root writes a consent file only where no other user can redirect it; nothing was written; set TELEMETRY_CONSENT_FILE (or HOME) to a place of root's", d, why)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}
