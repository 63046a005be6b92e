//go:build unix

package pki

import "os"

// readableByOthers reports whether the file's mode lets its group or
// anyone else at it.
func readableByOthers(fi os.FileInfo) bool { return fi.Mode().Perm()&0o077 != 0 }
