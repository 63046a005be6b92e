package waf

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Refusals that cost the gateway nearly nothing (a 503 for no slot, a
// 429 over the inspection budget) are what a flood produces by the tens
// of thousands a second. A log line each (formatted, sealed, written to
// disk) would cost more than the refusal and fill the disk at the
// attacker's pace. Each kind is logged at most refusalLogBurst times a
// second; the next line after a suppressed stretch says how many were
// left out. The counters in [Stats] count every one.
const refusalLogBurst = 10

// logLimiter lets through at most burst lines of one kind per second.
type logLimiter struct {
	log   *slog.Logger
	now   func() time.Time
	burst int

	mu         sync.Mutex
	window     time.Time // start of the current second
	n          int       // lines logged in it
	suppressed int       // lines left out since the last one logged
}

func newLogLimiter(log *slog.Logger, burst int, now func() time.Time) *logLimiter {
	return &logLimiter{log: log, now: now, burst: burst}
}

// Warn logs msg with args unless this second's lines are spent; a line
// after left-out ones carries their count as "suppressed".
func (l *logLimiter) Warn(ctx context.Context, msg string, args ...any) {
	l.mu.Lock()
	t := l.now()
	if t.Sub(l.window) >= time.Second || t.Before(l.window) {
		l.window, l.n = t, 0
	}
	if l.n >= l.burst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.n++
	left := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if left > 0 {
		args = append(args, "suppressed", left)
	}
	l.log.WarnContext(ctx, msg, args...)
}
