//go:build windows

package pki

import "os"

// readableByOthers is false: on Windows a file's mode bits say only
// whether it is read-only (every file reads as 0666 or 0444), not who may
// read it, which the access control list of the file decides. The CA key
// is then as private as the data directory's ACL makes it; under a user's
// profile that is the user alone by default.
func readableByOthers(os.FileInfo) bool { return false }
