// Package atomicfile writes a file so that a reader, or a process started
// after a crash, sees either the old content or the new one in full,
// never a part: the bytes go to a temporary file in the same directory,
// are synced, and the file is renamed over the old one.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes b to path with the given permission bits. The temporary
// file is created with those bits before anything is written to it, so a
// secret is never readable with wider permissions, even for a moment.
func Write(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable once the directory is synced.
	return syncDir(dir)
}
