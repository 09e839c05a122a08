//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package telemetry

import (
	"os"
	"time"
)

// lockFile does nothing where flock is not available: concurrent writers
// of the consent file are not serialized there.
func lockFile(f *os.File, deadline time.Time) error { return nil }

// unlockFile does nothing where lockFile does nothing.
func unlockFile(f *os.File) {}

// ownerOf knows no owner where there are no uids.
func ownerOf(fi os.FileInfo) (uint32, bool) { return 0, false }

// noFollow: no O_NOFOLLOW here.
const noFollow = 0

// onlyRootsDirectories: there is no root to protect here.
func onlyRootsDirectories(dir string) error { return nil }
