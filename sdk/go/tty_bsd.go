//go:build darwin || freebsd || netbsd || dragonfly

package telemetry

import (
	"os"
	"syscall"
	"unsafe"
)

// isTerminal tells whether f is a terminal (the TIOCGETA ioctl succeeds).
func isTerminal(f *os.File) bool {
	raw, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = raw.Control(func(fd uintptr) {
		var t syscall.Termios
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(syscall.TIOCGETA), uintptr(unsafe.Pointer(&t)))
		ok = e == 0
	})
	return ok
}
