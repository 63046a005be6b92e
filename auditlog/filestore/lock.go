package filestore

import "errors"

// ErrLocked is returned by Open when another process holds the directory,
// and by OpenReadOnly when a process has it open with Open.
var ErrLocked = errors.New("filestore: directory is in use by another process")
