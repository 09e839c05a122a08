//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"errors"
	"os"
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
