//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package telemetry

// untrusted: no owners or mode bits to check here (Windows keeps what it
// did before).
func untrusted(path string) string { return "" }

// untrustedDir: as untrusted.
func untrustedDir(dir string) string { return "" }
