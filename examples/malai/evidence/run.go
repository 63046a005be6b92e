package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"
)

// Status is a check's outcome.
type Status string

const (
	// Pass: the claim held.
	Pass Status = "pass"
	// Fail: the claim did not hold, or the check could not observe it.
	Fail Status = "fail"
	// NotRun: the check does not apply to this system (a local-only check
	// against a deployment, a PostgreSQL check on a file-backed run).
	NotRun Status = "not-run"
)

// Result is one check's outcome as the report records it.
type Result struct {
	Row      string `json:"row"`
	Check    string `json:"check"`
	Status   Status `json:"status"`
	Observed string `json:"observed"`
	Effect   string `json:"effect"`
	Local    bool   `json:"local"`
	Millis   int64  `json:"duration_ms"`
}

// ID is "row / check", as [Check.ID].
func (r Result) ID() string { return r.Row + " / " + r.Check }

// RunCheck runs one check against f and never panics: a panicking check
// fails with the panic's value.
func RunCheck(ctx context.Context, f *Fixture, c Check) (res Result) {
	res = Result{Row: c.Row, Check: c.Name, Effect: c.Effect.String(), Local: c.Local}
	start := time.Now()
	defer func() { res.Millis = time.Since(start).Milliseconds() }()
	if c.Local && f.Local == nil {
		res.Status, res.Observed = NotRun, "needs a system the pass started itself (internal listeners, data directory or restarts)"
		return res
	}
	defer func() {
		if p := recover(); p != nil {
			res.Status = Fail
			res.Observed = fmt.Sprintf("FAILED: check panicked: %v\n%s", p, debug.Stack())
		}
	}()
	f.nextClient()
	obs, err := c.Run(ctx, f)
	res.Observed = obs
	switch {
	case err == nil:
		res.Status = Pass
	case errors.Is(err, ErrNotApplicable):
		res.Status = NotRun
		res.Observed = join(obs, err.Error())
	default:
		res.Status = Fail
		res.Observed = join(obs, "FAILED: "+err.Error())
	}
	return res
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + " — " + b
}

// RunAll runs checks in run order (see [InRunOrder]) against f, writing
// one line per check to progress when it is not nil.
func RunAll(ctx context.Context, f *Fixture, checks []Check, progress io.Writer) []Result {
	var out []Result
	for _, c := range InRunOrder(checks) {
		r := RunCheck(ctx, f, c)
		if progress != nil {
			mark := map[Status]string{Pass: "ok  ", Fail: "FAIL", NotRun: "--  "}[r.Status]
			fmt.Fprintf(progress, "%s %-36s %s (%d ms)\n", mark, r.Row, r.Check, r.Millis)
		}
		out = append(out, r)
	}
	return out
}

// Failed counts the failed results.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Fail {
			n++
		}
	}
	return n
}
