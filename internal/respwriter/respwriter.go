// Package respwriter wraps an http.ResponseWriter to record the status and
// the bytes written, and to run a hook just before the header is sent.
//
// The wrapper keeps the optional interfaces a handler relies on:
// [http.Flusher], [http.Hijacker] and [io.ReaderFrom] are implemented by
// delegating through [http.ResponseController], and Unwrap exposes the
// underlying writer so ResponseController reaches deadlines and full-duplex
// support too. When the underlying writer lacks a capability, Flush is a
// no-op and Hijack returns [http.ErrNotSupported], as ResponseController does.
package respwriter

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// Writer is a recording http.ResponseWriter. It is not safe for concurrent
// use, like the writer it wraps.
type Writer struct {
	w           http.ResponseWriter
	before      func(h http.Header, status int)
	hook        Hook
	status      int
	bytes       int64
	wroteHeader bool
	hijacked    bool
}

// New wraps w. before, if not nil, runs exactly once with the response
// header and the final status just before they are sent: on WriteHeader, on
// the first Write, ReadFrom or Flush (as 200), or never if nothing is
// written. Informational (1xx) statuses pass through without running it.
func New(w http.ResponseWriter, before func(h http.Header, status int)) *Writer {
	return &Writer{w: w, before: before}
}

// Reset makes rw wrap w afresh, so a pool can reuse Writers.
func (rw *Writer) Reset(w http.ResponseWriter, before func(h http.Header, status int)) {
	*rw = Writer{w: w, before: before}
}

// Hook is the before function of [New] as an interface. A per-request
// value that already lives on the heap (the middleware's request state)
// implements it, so installing it costs no allocation, where the method
// value s.before would allocate a closure on every request.
type Hook interface {
	BeforeHeader(h http.Header, status int)
}

// ResetHook makes rw wrap w afresh with hook in the place of New's before
// function: it runs exactly when before would.
func (rw *Writer) ResetHook(w http.ResponseWriter, hook Hook) {
	*rw = Writer{w: w, hook: hook}
}

// Header returns the underlying writer's header map.
func (rw *Writer) Header() http.Header { return rw.w.Header() }

// WriteHeader sends the status line once; later calls are ignored, as
// net/http does (without its log line).
func (rw *Writer) WriteHeader(code int) {
	if rw.wroteHeader || rw.hijacked {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code)
		return
	}
	rw.wroteHeader = true
	rw.status = code
	if rw.before != nil {
		rw.before(rw.w.Header(), code)
	} else if rw.hook != nil {
		rw.hook.BeforeHeader(rw.w.Header(), code)
	}
	rw.w.WriteHeader(code)
}

func (rw *Writer) Write(p []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	n, err := rw.w.Write(p)
	rw.bytes += int64(n)
	return n, err
}

// ReadFrom lets io.Copy use the underlying writer's sendfile path.
func (rw *Writer) ReadFrom(r io.Reader) (int64, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := rw.w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{rw.w}, r)
	}
	rw.bytes += n
	return n, err
}

// Flush sends the header (as 200 if none was set) and flushes buffered data.
func (rw *Writer) Flush() { _ = rw.FlushError() }

// FlushError is Flush returning the underlying error; ResponseController
// prefers it.
func (rw *Writer) FlushError() error {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(rw.w).Flush()
}

// Hijack hands over the connection. The hook does not run: the caller owns
// the bytes on the wire from here on.
func (rw *Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, b, err := http.NewResponseController(rw.w).Hijack()
	if err == nil {
		rw.hijacked = true
	}
	return c, b, err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rw *Writer) Unwrap() http.ResponseWriter { return rw.w }

// Status is the status sent, or 0 if the header has not been written.
func (rw *Writer) Status() int { return rw.status }

// BytesWritten is the number of body bytes written.
func (rw *Writer) BytesWritten() int64 { return rw.bytes }

// WroteHeader reports whether the header has been sent.
func (rw *Writer) WroteHeader() bool { return rw.wroteHeader }

// Hijacked reports whether the connection was hijacked.
func (rw *Writer) Hijacked() bool { return rw.hijacked }

// writerOnly hides any ReadFrom method so io.Copy does not recurse.
type writerOnly struct{ io.Writer }

var (
	_ http.Flusher  = (*Writer)(nil)
	_ http.Hijacker = (*Writer)(nil)
	_ io.ReaderFrom = (*Writer)(nil)
)
