//go:build !(linux || darwin || freebsd || netbsd || dragonfly)

package telemetry

import "os"

// isTerminal reports false where terminals cannot be detected with the
// standard library: Prompt then never asks.
func isTerminal(f *os.File) bool { return false }
