package telemetry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// geteuid is os.Geteuid; a test may stand in for another user with it.
var geteuid = os.Geteuid

// parentOf is the directory holding p, as Rust's Path::parent has it: none
// for "/" and for a relative path of one component.
func parentOf(p string) (string, bool) {
	c := filepath.Clean(p)
	d := filepath.Dir(c)
	if d == c || !strings.ContainsRune(c, filepath.Separator) {
		return "", false
	}
	return d, true
}

// notBelieved is why the user's consent file at path (which exists) must
// not be believed: it, or the directory holding it, belongs to another user
// or is writable by every user (untrusted, untrustedDir); "" when it may be
// believed or is missing. Another user who made the default state directory
// first (/tmp/telemetry-UID/state, without HOME) could otherwise opt this
// user in. As the Rust client's consent::foreign.
func notBelieved(path string) string {
	if _, err := os.Lstat(path); err != nil {
		return ""
	}
	if why := untrusted(path); why != "" {
		return why
	}
	if dir, ok := parentOf(path); ok {
		return untrustedDir(dir)
	}
	return ""
}

// consentNotBelieved is notBelieved as a sentence naming the file; "" when
// the file may be believed.
func consentNotBelieved(path string) string {
	why := notBelieved(path)
	if why == "" {
		return ""
	}
	return fmt.Sprintf("the consent file %s cannot be read (%s: it is not believed, as someone else could have written it)", path, why)
}

// untrustedSpool is why events must not be spooled into the spool
// directory dir (made): it, the directory holding it (STATE_DIR/spool) or
// the state directory state ("": not checked) belongs to another user or
// is writable by every user (untrustedDir), so that user could read the
// events or swap the directories; "" when none is.
func untrustedSpool(dir, state string) string {
	dirs := []string{dir}
	if parent, ok := parentOf(dir); ok {
		dirs = append(dirs, parent)
	}
	if state != "" {
		dirs = append(dirs, state)
	}
	for _, d := range dirs {
		if why := untrustedDir(d); why != "" {
			return why + ", so another user could read the events spooled there"
		}
	}
	return ""
}
