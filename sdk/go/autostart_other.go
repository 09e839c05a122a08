//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package telemetry

import "os"

// nothingServes is false where the daemon cannot be started: no autostart.
func nothingServes(err error) bool { return false }

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// autostart does nothing here.
func (c *Client) autostart() bool { return false }
