//go:build linux

package telemetry

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// checkServer refuses a socket served by neither this user nor root (a
// socket a service manager made, as the machine-wide daemon's is, is
// root's). Where XDG_RUNTIME_DIR is unset the socket is under
// /tmp/telemetry-<uid>, and another user who made that directory first (or
// a link there) must not receive our events. As the Rust client does; one
// getsockopt.
func checkServer(conn net.Conn, socket string) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return credErr
	}
	peer, me := cred.Uid, uint32(os.Geteuid())
	if peer == me || peer == 0 {
		return nil
	}
	return fmt.Errorf("telemetry: the socket %s is served by uid %d, neither this user (uid %d) nor root: not telemetryd's", socket, peer, me)
}
