//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// nothingServes tells whether a connect error means no daemon owns the
// socket: no such file, or nobody listening (a busy or slow daemon is not
// missing).
func nothingServes(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// autostart starts the daemon detached unless disabled, not found or
// started less than autostartInterval ago; it reports whether it did.
func (c *Client) autostart() bool {
	if autostartDisabled(c.env("TELEMETRY_AUTOSTART")) {
		return false
	}
	daemon := c.findDaemon()
	if daemon == "" {
		return false
	}
	state := c.paths.StateDir
	if err := os.MkdirAll(state, 0o700); err != nil {
		return false
	}
	stampPath := filepath.Join(state, "autostart.stamp")
	// The stamp and the log are opened non-blocking and must be regular
	// files: a FIFO in their place fails at once instead of holding the host.
	stamp, err := openRegular(stampPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	// Held until the stamp closes: another client finding it held is
	// starting one right now.
	defer stamp.Close()
	if lockFile(stamp, time.Now()) != nil {
		return false
	}
	now := time.Now()
	if st, err := stamp.Stat(); err == nil && st.Size() > 0 {
		last := st.ModTime()
		// A stamp in the future (clock set back) holds nobody off.
		if !last.After(now) && now.Sub(last) < autostartInterval {
			return false
		}
	}
	// The time in ms, as the Rust clients write it (they read it back).
	if stamp.Truncate(0) != nil {
		return false
	}
	if _, err := stamp.WriteAt([]byte(strconv.FormatInt(now.UnixMilli(), 10)), 0); err != nil {
		return false
	}
	logFile, err := openRegular(filepath.Join(state, "telemetryd.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	defer logFile.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return false
	}
	defer devnull.Close()
	// sh starts the daemon in the background and exits at once: the daemon
	// is adopted by init, in the session sh leads, so this process keeps
	// no child (no zombie, and no goroutine and thread blocked in Wait for
	// the daemon's whole life), as the Rust clients' double fork and the
	// Python SDK do. Not where this process is init (a container's
	// entrypoint: the daemon would be adopted by it, and never reaped) or
	// there is no /bin/sh: there it is started directly and reaped by the
	// goroutine below.
	cmd := exec.Command("/bin/sh", "-c", `exec "$@" &`, "sh", daemon, "--autostarted", "--socket", c.paths.Socket)
	if os.Getpid() == 1 || !isExecutable("/bin/sh") {
		cmd = exec.Command(daemon, "--autostarted", "--socket", c.paths.Socket)
	}
	cmd.Env = c.daemonEnv(os.Environ())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return false
	}
	// Reaps sh, which exits as soon as it has started the daemon (or the
	// daemon itself, when started directly, whenever it exits).
	go func() { _ = cmd.Wait() }()
	return true
}
