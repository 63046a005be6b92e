package headersbench

import "github.com/malai-sec/malai/internal/cputime"

// cpuTime is the process's user and system CPU time (see cputime).
func cpuTime() int64 { return int64(cputime.Process()) }
