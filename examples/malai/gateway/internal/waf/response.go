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
	// typing: the response names no media type, so the server will
	// name one from the body's first bytes; they are held (sniff) until
	// the type is known, then the headers are inspected with it.
	typing bool
	sniff  []byte
}

// sniffLen is how much of a body http.DetectContentType reads.
const sniffLen = 512

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
	if untyped(ri.w.Header(), code) {
		ri.typing = true
		return
	}
	ri.begin()
}

// untyped reports a response whose Content-Type net/http (HTTP/1.1 and
// HTTP/2 alike) would set from the body's first bytes: none is set, the
// body is neither encoded nor framed by the handler, and the status
// allows a body. Unnamed, Coraza would not inspect it while the client
// reads it as text/plain or text/html: a leaked error page that names no
// type would pass. The inspector names the type first, with the same
// function and the same bytes, so the rules see what the client will.
func untyped(h http.Header, code int) bool {
	if _, typed := h["Content-Type"]; typed {
		return false
	}
	return h.Get("Content-Encoding") == "" && h.Get("Transfer-Encoding") == "" &&
		code != http.StatusNoContent && code != http.StatusNotModified
}

// typeFromBody sets the media type from the held bytes (none when the
// body is empty, as net/http does), inspects the headers and passes the
// held bytes on.
func (ri *responseInspector) typeFromBody() error {
	ri.typing = false
	held := ri.sniff
	ri.sniff = nil
	if len(held) > 0 {
		ri.w.Header().Set("Content-Type", http.DetectContentType(held))
	}
	ri.begin()
	if len(held) > 0 {
		_, err := ri.write(held)
		return err
	}
	return nil
}

// begin inspects the response's headers (phase 3) and decides whether
// its body is held for phase 4.
func (ri *responseInspector) begin() {
	code := ri.status
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
	if ri.typing {
		if len(ri.sniff)+len(p) < sniffLen {
			ri.sniff = append(ri.sniff, p...)
			return len(p), nil
		}
		n := sniffLen - len(ri.sniff)
		ri.sniff = append(ri.sniff, p[:n]...)
		if err := ri.typeFromBody(); err != nil {
			return 0, err
		}
		if _, err := ri.write(p[n:]); err != nil {
			return n, err
		}
		return len(p), nil
	}
	return ri.write(p)
}

func (ri *responseInspector) write(p []byte) (int, error) {
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
	if ri.typing {
		// net/http names the type from what is buffered when flushed.
		if ri.typeFromBody() != nil {
			return
		}
	}
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
	if ri.typing {
		_ = ri.typeFromBody() // a failed write leaves nothing to inspect or refuse
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
