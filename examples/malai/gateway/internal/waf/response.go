package waf

import (
	"bytes"
	"net/http"

	"github.com/corazawaf/coraza/v3/types"

	"github.com/malai-sec/malai/problem"
)

// respLimit is how much of an inspected response body is held before it
// is inspected and sent (the rest streams uninspected), as Coraza's
// recommended SecResponseBodyLimit with ProcessPartial.
const respLimit = 512 << 10

// responseInspector runs phases 3 and 4 over the response. Only bodies of
// the media types the configuration inspects (text/plain, text/html,
// text/xml) are buffered; the services' JSON streams through untouched
// after its headers were inspected.
type responseInspector struct {
	w         http.ResponseWriter
	r         *http.Request
	f         *WAF
	tx        types.Transaction
	status    int
	sent      bool // headers written to w
	buffering bool
	blocked   bool
	// skipUninspected: the rule set's phases 3 and 4 cannot act on a
	// response whose body is not inspected; skipped marks one that went
	// without them.
	skipUninspected, skipped bool
	buf                      bytes.Buffer
}

func (ri *responseInspector) Header() http.Header { return ri.w.Header() }

// Unwrap lets http.ResponseController reach the connection.
func (ri *responseInspector) Unwrap() http.ResponseWriter { return ri.w }

func (ri *responseInspector) WriteHeader(code int) {
	if ri.status != 0 {
		return
	}
	if code >= 100 && code < 200 {
		ri.w.WriteHeader(code)
		return
	}
	ri.status = code
	for k, vs := range ri.w.Header() {
		for _, v := range vs {
			ri.tx.AddResponseHeader(k, v)
		}
	}
	if ri.skipUninspected && !(ri.tx.IsResponseBodyAccessible() && ri.tx.IsResponseBodyProcessable()) {
		ri.skipped, ri.sent = true, true
		ri.w.WriteHeader(code)
		return
	}
	if it := ri.tx.ProcessResponseHeaders(code, ri.r.Proto); it != nil {
		ri.blocked = true
		return
	}
	// Asked again: a phase-3 rule may have changed the body's access.
	if ri.tx.IsResponseBodyAccessible() && ri.tx.IsResponseBodyProcessable() {
		ri.buffering = true
		return
	}
	ri.sent = true
	ri.w.WriteHeader(code)
}

func (ri *responseInspector) Write(p []byte) (int, error) {
	if ri.status == 0 {
		ri.WriteHeader(http.StatusOK)
	}
	switch {
	case ri.blocked:
		return len(p), nil
	case ri.buffering:
		ri.buf.Write(p)
		if ri.buf.Len() >= respLimit {
			ri.flushInspected()
		}
		return len(p), nil
	}
	return ri.w.Write(p)
}

// Flush sends what is not held for inspection.
func (ri *responseInspector) Flush() {
	if ri.buffering || ri.blocked {
		return
	}
	if fl, ok := ri.w.(http.Flusher); ok {
		fl.Flush()
	}
}

// flushInspected inspects the held body and, when it passes, sends it;
// from then on the body streams.
func (ri *responseInspector) flushInspected() {
	ri.buffering = false
	if _, _, err := ri.tx.WriteResponseBody(ri.buf.Bytes()); err != nil {
		ri.blocked = true
		return
	}
	if it, err := ri.tx.ProcessResponseBody(); it != nil || err != nil {
		ri.blocked = true
		return
	}
	ri.sent = true
	ri.w.WriteHeader(ri.status)
	_, _ = ri.w.Write(ri.buf.Bytes())
	ri.buf.Reset()
}

// finish completes the response after the handler returned.
func (ri *responseInspector) finish() {
	if ri.status == 0 {
		ri.WriteHeader(http.StatusOK)
	}
	if ri.buffering {
		ri.flushInspected()
	} else if !ri.blocked && !ri.skipped {
		if it, err := ri.tx.ProcessResponseBody(); (it != nil || err != nil) && !ri.sent {
			ri.blocked = true
		}
	}
	if ri.blocked && !ri.sent {
		ri.f.stats.respBlocked.Add(1)
		ri.f.log.WarnContext(ri.r.Context(), "waf: response blocked", "matched", matchedList(ri.tx))
		h := ri.w.Header()
		for k := range h {
			if k != "X-Request-Id" {
				delete(h, k)
			}
		}
		write(ri.w, ri.r, problem.Problem{Status: http.StatusBadGateway, Type: "response-blocked",
			Title: "Response blocked", Detail: "The service's answer was withheld by the web application firewall."})
	}
}
