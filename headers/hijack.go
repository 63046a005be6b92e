package headers

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
)

// maxRawHead bounds how much of a hijacked connection's first bytes are
// held back while looking for the end of a raw response head.
const maxRawHead = 64 << 10

var errRawHeadTooLarge = errors.New("headers: raw response head on a hijacked connection exceeds 64 KiB")

// Hijack hands the connection to the handler. If the header was already
// sent (WriteHeader(101) then Hijack, the net/http way to upgrade), it
// carried the set and the connection is returned as is. Otherwise the
// handler is about to write its own response bytes (as WebSocket
// libraries do): the returned connection holds back a leading
// "HTTP/1.x …" head until its blank line, removes the managed headers from
// it and adds the mandatory set. Bytes that do not start with "HTTP/1."
// (another protocol) pass through untouched.
func (s *stamper) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	stamped := s.WroteHeader()
	conn, brw, err := s.Writer.Hijack()
	if err != nil || stamped {
		return conn, brw, err
	}
	sc := &stampConn{Conn: conn, s: s}
	return sc, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(sc)), nil
}

// stampConn rewrites the first response head written to a hijacked
// connection.
type stampConn struct {
	net.Conn
	s       *stamper
	mu      sync.Mutex
	settled bool // head rewritten, or not an HTTP/1 response
	buf     []byte
}

var http1Prefix = []byte("HTTP/1.")

func (c *stampConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settled {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	n := min(len(c.buf), len(http1Prefix))
	if !bytes.Equal(c.buf[:n], http1Prefix[:n]) {
		c.settled = true
		return c.flushRaw(len(p))
	}
	end := bytes.Index(c.buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.buf) > maxRawHead {
			c.settled = true
			c.buf = nil
			return 0, errRawHeadTooLarge
		}
		return len(p), nil
	}
	c.settled = true
	head, rest := c.buf[:end+2], c.buf[end+4:]
	out := c.rewrite(head)
	out = append(out, "\r\n"...)
	out = append(out, rest...)
	c.buf = nil
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *stampConn) flushRaw(n int) (int, error) {
	b := c.buf
	c.buf = nil
	if _, err := c.Conn.Write(b); err != nil {
		return 0, err
	}
	return n, nil
}

// rewrite returns the status line and the header lines of head (which
// ends with CRLF) without the managed headers, followed by the set.
func (c *stampConn) rewrite(head []byte) []byte {
	out := make([]byte, 0, len(head)+1024)
	lines := bytes.Split(bytes.TrimSuffix(head, []byte("\r\n")), []byte("\r\n"))
	out = append(out, lines[0]...)
	out = append(out, "\r\n"...)
	m := c.s.m
	dropped := false
	for _, l := range lines[1:] {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			if dropped {
				continue // obsolete line folding continues a removed field
			}
		} else {
			name, _, _ := bytes.Cut(l, []byte(":"))
			dropped = m.managed[http.CanonicalHeaderKey(string(bytes.TrimSpace(name)))]
			if dropped || len(bytes.TrimSpace(l)) == 0 {
				continue
			}
		}
		out = append(out, l...)
		out = append(out, "\r\n"...)
	}
	h := make(http.Header)
	c.s.done = false // the map the hook saw was never sent
	c.s.apply(h)
	var b bytes.Buffer
	_ = h.Write(&b)
	return append(out, b.Bytes()...)
}

var _ http.Hijacker = (*stamper)(nil)
