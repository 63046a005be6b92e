package waf

import (
	"encoding/json"
	"sync/atomic"
)

type counters struct {
	passed, blocked, respBlocked, tooLarge, busy, overBudget, slow, clientGone, errors atomic.Uint64
}

// Stats are counters since New, for metrics exporters and tests.
type Stats struct {
	Passed      uint64 // inspected and passed on
	Blocked     uint64 // refused by the rules (403) or unparsable (400)
	RespBlocked uint64 // responses withheld by the rules (502)
	TooLarge    uint64 // bodies over the limit (413), never inspected
	Busy        uint64 // no inspection slot in time (503)
	OverBudget  uint64 // heavy requests of a client past its inspection-time budget (429)
	Slow        uint64 // bodies that did not arrive in time (408)
	ClientGone  uint64 // clients that left before the answer (499)
	Errors      uint64 // inspection failures (503)
}

// Stats returns a snapshot of the counters.
func (f *WAF) Stats() Stats {
	s := &f.stats
	return Stats{Passed: s.passed.Load(), Blocked: s.blocked.Load(), RespBlocked: s.respBlocked.Load(), TooLarge: s.tooLarge.Load(),
		Busy: s.busy.Load(), OverBudget: s.overBudget.Load(), Slow: s.slow.Load(), ClientGone: s.clientGone.Load(), Errors: s.errors.Load()}
}

// Inspected is the number of requests the rules ran on.
func (s Stats) Inspected() uint64 { return s.Passed + s.Blocked + s.Errors }

func jsonValid(b []byte) bool { return json.Valid(b) }
