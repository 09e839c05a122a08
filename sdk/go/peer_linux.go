//go:build linux

package telemetry

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// checkServer refuses a socket served by neither this user nor root,
// unless root gave the server's user the socket's directory (its parent is
// root's and writable by no one else: systemd's /run/telemetryd). Where
// XDG_RUNTIME_DIR is unset the socket is under /tmp/telemetry-<uid>, and
// another user who made that directory first must not receive our events.
// As the Rust client does; one getsockopt when the server is ours.
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
	if peer == me || peer == 0 || givenByRoot(socket, peer) {
		return nil
	}
	return fmt.Errorf("telemetry: the socket %s is served by uid %d, neither this user (uid %d) nor root, from a directory root did not give it: not telemetryd's", socket, peer, me)
}

// givenByRoot: the socket's directory belongs to uid and is writable by no
// one else, and root owns its parent, which no one else may write.
func givenByRoot(socket string, uid uint32) bool {
	dir, err := filepath.EvalSymlinks(filepath.Dir(socket))
	if err != nil {
		return false
	}
	d, errD := os.Stat(dir)
	p, errP := os.Stat(filepath.Dir(dir))
	if errD != nil || errP != nil || dir == filepath.Dir(dir) {
		return false
	}
	ds, okD := d.Sys().(*syscall.Stat_t)
	ps, okP := p.Sys().(*syscall.Stat_t)
	return okD && okP &&
		ds.Uid == uid && ds.Mode&0o022 == 0 &&
		ps.Uid == 0 && ps.Mode&0o022 == 0
}
