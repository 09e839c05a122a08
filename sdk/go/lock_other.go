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
