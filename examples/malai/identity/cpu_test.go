package identity

import (
	"time"

	"github.com/malai-sec/malai/internal/cputime"
)

// cpuNow is the process's user and system CPU time (see cputime).
func cpuNow() time.Duration { return cputime.Process() }
