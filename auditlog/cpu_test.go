package auditlog_test

import (
	"time"

	"github.com/malai-sec/malai/internal/cputime"
)

// cpuTime is the process's user and system CPU time (see cputime).
func cpuTime() time.Duration { return cputime.Process() }
