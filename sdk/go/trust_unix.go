//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"fmt"
	"os"
)

// notTheUsers is why another user could change p (its target, if a link),
// as the end of a sentence naming it; "" if no one else could: it belongs
// to neither root nor this process's user, or every user may write it (a
// sticky directory aside, as /tmp). As platform/src/fs.rs not_the_users.
func notTheUsers(p string) (string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	me := geteuid()
	uid, ok := ownerOf(st)
	if !ok {
		return "", fmt.Errorf("no owner to be read")
	}
	stickyDir := st.IsDir() && st.Mode()&os.ModeSticky != 0
	switch {
	case uid != 0 && int64(uid) != int64(me):
		return fmt.Sprintf("belongs to uid %d, neither root nor this process's user (uid %d), so another user could change it", uid, me), nil
	case st.Mode().Perm()&0o002 != 0 && !stickyDir:
		return "is writable by every user", nil
	}
	return "", nil
}

// checked is notTheUsers(p) as a clause naming p as what ("file",
// "directory"); what cannot be checked is not trusted.
func checked(what, p string) string {
	why, err := notTheUsers(p)
	if err != nil {
		why = "cannot be checked: " + err.Error()
	}
	if why == "" {
		return ""
	}
	return fmt.Sprintf("the %s %s %s", what, p, why)
}

// untrusted is why another user could have written the file at path (or
// could change it): it, or the directory holding it, belongs to another
// user or is writable by every user (notTheUsers); "" when neither. As
// platform/src/fs.rs untrusted.
func untrusted(path string) string {
	if why := checked("file", path); why != "" {
		return why
	}
	if dir, ok := parentOf(path); ok {
		return checked("directory", dir)
	}
	return ""
}

// untrustedDir is untrusted for a directory ("" when it does not exist
// yet: it is then made by this user): it belongs to another user or is
// writable by every user, sticky or not (another user could still create
// the files this user has not made yet), or the directory holding it fails
// notTheUsers. As platform/src/fs.rs untrusted_dir.
func untrustedDir(dir string) string {
	st, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	why, err := notTheUsers(dir)
	if err != nil {
		why = "cannot be checked: " + err.Error()
	} else if why == "" && st.Mode().Perm()&0o002 != 0 {
		why = "is writable by every user"
	}
	if why != "" {
		return fmt.Sprintf("the directory %s %s", dir, why)
	}
	if parent, ok := parentOf(dir); ok {
		return checked("directory", parent)
	}
	return ""
}
