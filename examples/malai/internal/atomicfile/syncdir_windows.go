//go:build windows

package atomicfile

// syncDir does nothing on Windows, which has no directory fsync: a
// directory handle cannot be opened for writing, so FlushFileBuffers on
// it fails with access denied. NTFS journals metadata changes, so a crash
// leaves the directory before or after a change, never torn, but a change
// may be lost if the journal was not yet flushed; Windows offers no way to
// force it short of flushing the whole volume, which needs an
// administrator.
func syncDir(string) error { return nil }
