//go:build linux

package telemetry

import (
	"os"
	"syscall"
	"unsafe"
)

// isTerminal tells whether f is a terminal (the TCGETS ioctl succeeds).
func isTerminal(f *os.File) bool {
	return termiosIoctl(f, syscall.TCGETS)
}

func termiosIoctl(f *os.File, req uintptr) bool {
	raw, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = raw.Control(func(fd uintptr) {
		var t syscall.Termios
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&t)))
		ok = e == 0
	})
	return ok
}
