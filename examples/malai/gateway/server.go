package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
)

// Deadlines bound how long one client may hold the gateway, on HTTP/1.1,
// HTTP/2 and HTTP/3 alike. Zero fields take the defaults.
type Deadlines struct {
	// Header bounds a request's header block: the request line and
	// headers (h1), a HEADERS frame and its CONTINUATIONs (h2), the
	// HEADERS frame of a request stream (h3). Over it the connection (h1,
	// h2) or the stream (h3) is closed. Default 5 s.
	Header time.Duration
	// Body bounds reading a request body (the WAF's read): over it the
	// answer is 408. Default 10 s.
	Body time.Duration
	// Idle closes a connection with no request in flight. Default 2 min.
	Idle time.Duration
}

func (d Deadlines) withDefaults() Deadlines {
	if d.Header <= 0 {
		d.Header = 5 * time.Second
	}
	if d.Body <= 0 {
		d.Body = 10 * time.Second
	}
	if d.Idle <= 0 {
		d.Idle = 2 * time.Minute
	}
	return d
}

// ServeTLS runs h on ln, HTTPS with HTTP/1.1 and HTTP/2, under the
// deadlines d. It returns the function that stops it.
func ServeTLS(ln net.Listener, tlsCfg *tls.Config, h http.Handler, d Deadlines, log *slog.Logger) (stop func() error) {
	d = d.withDefaults()
	srv := &http.Server{
		Handler: h, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// ReadTimeout backs the WAF's own body deadline on every route.
		ReadHeaderTimeout: d.Header, ReadTimeout: d.Header + d.Body, WriteTimeout: time.Minute, IdleTimeout: d.Idle,
	}
	// Go's own HTTP/2 server bounds neither a header block left open nor
	// one trickled in, and offers no hook to wrap the connection it
	// serves: x/net's ServeConn (deprecated in favour of http.Server,
	// which cannot do this) serves it on a connection that watches the
	// frames.
	//lint:ignore SA1019 see above
	h2s := &http2.Server{IdleTimeout: d.Idle}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		http2.NextProtoTLS: func(hs *http.Server, c *tls.Conn, h http.Handler) {
			w := watchHeaderBlocks(c, d.Header, log)
			defer w.stop()
			var ctx context.Context
			if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
				ctx = bc.BaseContext()
			}
			//lint:ignore SA1019 see the comment on h2s
			h2s.ServeConn(w, &http2.ServeConnOpts{Context: ctx, BaseConfig: hs, Handler: h})
		},
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			// An HTTP/2 connection served through ServeConn stays active
			// for Shutdown until its client closes it (an idle browser or
			// scanner keeps it for minutes): after the grace period, close
			// what is left.
			return srv.Close()
		}
		return err
	}
}

// AltSvc advertises HTTP/3 on port (the headers middleware's AltSvc).
func AltSvc(port int) func(http.Header) error {
	v := fmt.Sprintf(`%s=":%d"; ma=2592000`, http3.NextProtoH3, port)
	return func(h http.Header) error {
		h["Alt-Svc"] = append(h["Alt-Svc"], v)
		return nil
	}
}

// HTTP/2 frame types and the END_HEADERS flag (RFC 9113 §6).
const (
	frameHeaders      = 0x1
	framePushPromise  = 0x5
	frameContinuation = 0x9
	flagEndHeaders    = 0x4
	clientPrefaceLen  = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// headerWatch reads an HTTP/2 connection's frames as they pass and closes
// the connection when a header block (HEADERS or PUSH_PROMISE up to the
// frame that carries END_HEADERS, payload included) is not complete
// within limit. Only the server's frame reader calls Read.
type headerWatch struct {
	*tls.Conn
	limit time.Duration
	log   *slog.Logger

	preface int     // client preface bytes still to pass
	hdr     [9]byte // the frame header being read
	hn      int     // bytes of it read
	skip    uint32  // payload bytes of the current frame still to pass
	ends    bool    // the current frame ends the header block
	mu      sync.Mutex
	timer   *time.Timer // running while a header block is open
}

func watchHeaderBlocks(c *tls.Conn, limit time.Duration, log *slog.Logger) *headerWatch {
	return &headerWatch{Conn: c, limit: limit, log: log, preface: clientPrefaceLen}
}

func (c *headerWatch) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.scan(b[:n])
	return n, err
}

func (c *headerWatch) scan(b []byte) {
	for len(b) > 0 {
		switch {
		case c.preface > 0:
			k := min(c.preface, len(b))
			c.preface -= k
			b = b[k:]
		case c.skip > 0:
			k := min(int(c.skip), len(b))
			c.skip -= uint32(k)
			b = b[k:]
			if c.skip == 0 && c.ends {
				c.closeBlock()
			}
		default:
			k := copy(c.hdr[c.hn:], b)
			c.hn += k
			b = b[k:]
			if c.hn < len(c.hdr) {
				return
			}
			c.hn = 0
			length := uint32(c.hdr[0])<<16 | uint32(c.hdr[1])<<8 | uint32(c.hdr[2])
			typ, flags := c.hdr[3], c.hdr[4]
			c.ends = false
			switch typ {
			case frameHeaders, framePushPromise:
				c.openBlock()
				c.ends = flags&flagEndHeaders != 0
			case frameContinuation:
				c.ends = flags&flagEndHeaders != 0
			}
			c.skip = length
			if length == 0 && c.ends {
				c.closeBlock()
			}
		}
	}
}

func (c *headerWatch) openBlock() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer == nil {
		c.timer = time.AfterFunc(c.limit, c.expire)
	}
}

func (c *headerWatch) closeBlock() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (c *headerWatch) expire() {
	c.log.Warn("gateway: HTTP/2 header block not complete in time; closing the connection",
		"remote", c.RemoteAddr().String(), "deadline", c.limit.String())
	_ = c.Conn.Close()
}

func (c *headerWatch) stop() { c.closeBlock() }

// ServeHTTP3 runs h on pc, HTTP/3, under the deadlines d. quic-go's server bounds no request
// stream's HEADERS frame, so the gateway runs the accept loop itself and
// gives every request stream a read deadline of d.Header, which the
// handler replaces with d.Body once the headers are in. 0-RTT is off:
// early data can be replayed.
func ServeHTTP3(pc net.PacketConn, tlsCfg *tls.Config, h http.Handler, d Deadlines, log *slog.Logger) (stop func() error, err error) {
	d = d.withDefaults()
	body := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d.Body))
		h.ServeHTTP(w, r)
	})
	srv := &http3.Server{Handler: body, IdleTimeout: d.Idle, Logger: log}
	ln, err := quic.Listen(pc, http3.ConfigureTLSConfig(tlsCfg), &quic.Config{})
	if err != nil {
		return nil, fmt.Errorf("gateway: HTTP/3 listener: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu    sync.Mutex
		conns = map[*quic.Conn]bool{}
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = true
			mu.Unlock()
			wg.Go(func() {
				serveH3Conn(ctx, srv, conn, d.Header)
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
			})
		}
	})
	return func() error {
		cancel()
		err := ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		}
		mu.Unlock()
		wg.Wait()
		return errors.Join(err, pc.Close())
	}, nil
}

func serveH3Conn(ctx context.Context, srv *http3.Server, conn *quic.Conn, header time.Duration) {
	hc, err := srv.NewRawServerConn(conn)
	if err != nil {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
		return
	}
	go func() {
		for {
			str, err := conn.AcceptUniStream(ctx)
			if err != nil {
				return
			}
			go hc.HandleUnidirectionalStream(str)
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
			return
		}
		_ = str.SetReadDeadline(time.Now().Add(header))
		wg.Go(func() { hc.HandleRequestStream(str) })
	}
}
