package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/malai-sec/malai/examples/malai/internal/pki"
)

// A deadline under test is short; the others are long, so only the one
// under test can close the connection. The clients give up after
// clientWait, well under the defaults (5 s header, 10 s body, 2 min idle):
// a deadline that does not come from the configuration fails the test.
const (
	short      = 300 * time.Millisecond
	clientWait = 4 * time.Second
)

// deadlineEdge is the gateway's handler behind ServeTLS and ServeHTTP3
// with deadlines d, recording the status each request was answered with.
type deadlineEdge struct {
	*edge
	addr     string
	tls      *tls.Config // the client's
	statuses chan int
}

func newDeadlineEdge(t *testing.T, d Deadlines) *deadlineEdge {
	t.Helper()
	e := newEdge(t, func(c *Config) { c.Deadlines = d })
	ca, err := pki.NewCA(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("gateway", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	de := &deadlineEdge{edge: e, statuses: make(chan int, 16),
		tls: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sr := &statusWriter{ResponseWriter: w}
		e.h.ServeHTTP(sr, r)
		de.statuses <- sr.status
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	de.addr = ln.Addr().String()
	pc, err := net.ListenPacket("udp", de.addr)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	serverTLS := &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	stop := ServeTLS(ln, serverTLS, h, d, log)
	stopH3, err := ServeHTTP3(pc, serverTLS, h, d, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(); _ = stopH3() })
	return de
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(c int) {
	if s.status == 0 {
		s.status = c
	}
	s.ResponseWriter.WriteHeader(c)
}
func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (de *deadlineEdge) dial(t *testing.T, proto string) *tls.Conn {
	t.Helper()
	cfg := de.tls.Clone()
	cfg.NextProtos = []string{proto}
	c, err := tls.Dial("tcp", de.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().NegotiatedProtocol != proto {
		t.Fatalf("negotiated %q, want %q", c.ConnectionState().NegotiatedProtocol, proto)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(clientWait))
	return c
}

// closedByServer reads until the connection ends: true when the server
// closed it, false when the client's own deadline ran out first.
func closedByServer(c net.Conn) bool {
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// recorded is the next status the handler recorded.
func (de *deadlineEdge) recorded(t *testing.T) int {
	t.Helper()
	select {
	case s := <-de.statuses:
		return s
	case <-time.After(clientWait):
		t.Fatal("the handler recorded no status")
		return 0
	}
}

const stalledPost = "POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":"

func TestHTTP1Deadlines(t *testing.T) {
	t.Run("header", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: short, Body: time.Minute, Idle: time.Minute})
		c := de.dial(t, "http/1.1")
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t") // and no more
		if !closedByServer(c) {
			t.Fatal("a request header left open was held past the header deadline")
		}
	})
	t.Run("body: 408, recorded as 408", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: short, Idle: time.Minute})
		c := de.dial(t, "http/1.1")
		_, _ = io.WriteString(c, stalledPost)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("stalled body: %d, want 408", resp.StatusCode)
		}
		if s := de.recorded(t); s != http.StatusRequestTimeout {
			t.Fatalf("recorded %d, want 408", s)
		}
		if de.g.WAFStats().Slow != 1 {
			t.Fatalf("WAF stats %+v: want one slow body", de.g.WAFStats())
		}
	})
	t.Run("idle", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: time.Minute, Idle: short})
		c := de.dial(t, "http/1.1")
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if !closedByServer(c) {
			t.Fatal("an idle keep-alive connection was held past the idle deadline")
		}
	})
}

// h2conn is a raw HTTP/2 client connection.
type h2conn struct {
	c  *tls.Conn
	fr *http2.Framer
}

func (de *deadlineEdge) h2(t *testing.T) *h2conn {
	t.Helper()
	c := de.dial(t, "h2")
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2conn{c: c, fr: fr}
}

func headerBlock(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

var getHealthz = []string{":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/healthz", "user-agent", "t", "accept", "*/*"}

// closedByServer reads frames until the connection ends: true when the
// server closed it (with or without GOAWAY), false on the client's own
// deadline.
func (h *h2conn) closedByServer() bool {
	for {
		if _, err := h.fr.ReadFrame(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func TestHTTP2Deadlines(t *testing.T) {
	t.Run("header block left open", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: short, Body: time.Minute, Idle: time.Minute})
		h := de.h2(t)
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock(getHealthz...), EndStream: true, EndHeaders: false}); err != nil {
			t.Fatal(err)
		}
		if !h.closedByServer() {
			t.Fatal("an h2 header block without END_HEADERS was held past the header deadline")
		}
	})
	t.Run("header block trickled", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: short, Body: time.Minute, Idle: time.Minute})
		h := de.h2(t)
		block := headerBlock(getHealthz...)
		// A frame header announcing the block, then its payload a byte
		// at a time.
		var fh bytes.Buffer
		fr := http2.NewFramer(&fh, nil)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true})
		raw := fh.Bytes()
		done := make(chan bool)
		go func() { done <- h.closedByServer() }()
		for i := 0; i < len(raw); i++ {
			if _, err := h.c.Write(raw[i : i+1]); err != nil {
				break // closed: what the test wants
			}
			select {
			case closed := <-done:
				if !closed {
					t.Fatal("client deadline")
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if !<-done {
			t.Fatal("a trickled h2 header block was held past the header deadline")
		}
	})
	t.Run("stalled body: 408, recorded as 408", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: short, Idle: time.Minute})
		h := de.h2(t)
		block := headerBlock(":method", "POST", ":scheme", "https", ":authority", "localhost", ":path", "/v1/sessions",
			"user-agent", "t", "accept", "*/*", "content-type", "application/json", "content-length", "100")
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := h.fr.WriteData(1, false, []byte(`{"username":`)); err != nil {
			t.Fatal(err)
		}
		dec := hpack.NewDecoder(4096, nil)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				t.Fatalf("no answer to a stalled h2 body: %v", err)
			}
			if hf, ok := f.(*http2.HeadersFrame); ok {
				fields, err := dec.DecodeFull(hf.HeaderBlockFragment())
				if err != nil {
					t.Fatal(err)
				}
				if fields[0].Name != ":status" || fields[0].Value != "408" {
					t.Fatalf("stalled h2 body answered %v, want :status 408", fields[0])
				}
				break
			}
		}
		if s := de.recorded(t); s != http.StatusRequestTimeout {
			t.Fatalf("recorded %d, want 408", s)
		}
	})
	t.Run("idle", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: time.Minute, Idle: short})
		h := de.h2(t)
		if !h.closedByServer() {
			t.Fatal("an idle h2 connection was held past the idle deadline")
		}
	})
}

func (de *deadlineEdge) quic(t *testing.T) *quic.Conn {
	t.Helper()
	cfg := de.tls.Clone()
	cfg.NextProtos = []string{http3.NextProtoH3}
	ctx, cancel := context.WithTimeout(context.Background(), clientWait)
	defer cancel()
	c, err := quic.DialAddr(ctx, de.addr, cfg, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseWithError(0, "") })
	return c
}

func TestHTTP3Deadlines(t *testing.T) {
	t.Run("HEADERS frame left incomplete: stream reset", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: short, Body: time.Minute, Idle: time.Minute})
		c := de.quic(t)
		ctx, cancel := context.WithTimeout(context.Background(), clientWait)
		defer cancel()
		str, err := c.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A HEADERS frame (type 0x01) announcing 100 bytes, 3 sent.
		if _, err := str.Write([]byte{0x01, 0x40, 100, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		_ = str.SetReadDeadline(time.Now().Add(clientWait))
		_, err = io.Copy(io.Discard, str)
		var se *quic.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("read %v: want the stream reset by the server at the header deadline", err)
		}
	})
	t.Run("stalled body: 408, recorded as 408", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: short, Idle: time.Minute})
		cfg := de.tls.Clone()
		tr := &http3.Transport{TLSClientConfig: cfg}
		t.Cleanup(func() { tr.Close() })
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		go func() { _, _ = io.WriteString(pw, `{"username":`) }() // and no more
		req, _ := http.NewRequest("POST", "https://"+de.addr+"/v1/sessions", pr)
		req.Host = "localhost"
		req.ContentLength = 100
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "t")
		req.Header.Set("Accept", "*/*")
		ctx, cancel := context.WithTimeout(context.Background(), clientWait)
		defer cancel()
		resp, err := tr.RoundTrip(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("no answer to a stalled h3 body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("stalled h3 body: %d, want 408", resp.StatusCode)
		}
		if s := de.recorded(t); s != http.StatusRequestTimeout {
			t.Fatalf("recorded %d, want 408", s)
		}
	})
	t.Run("idle", func(t *testing.T) {
		de := newDeadlineEdge(t, Deadlines{Header: time.Minute, Body: time.Minute, Idle: short})
		c := de.quic(t)
		select {
		case <-c.Context().Done():
		case <-time.After(clientWait):
			t.Fatal("an idle h3 connection was held past the idle deadline")
		}
	})
}

func TestAltSvc(t *testing.T) {
	h := http.Header{}
	if err := AltSvc(8443)(h); err != nil || h.Get("Alt-Svc") != `h3=":8443"; ma=2592000` {
		t.Fatalf("Alt-Svc %q, %v", h.Get("Alt-Svc"), err)
	}
}
