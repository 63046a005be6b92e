package servicetest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP forwarder in front of a real server. Tests use
// it to take a dependency down mid-run (Down) and bring it back (Up)
// without stopping the shared server other packages are testing against,
// and to lose the server's reply after it acted ([Proxy.DropReplyAfter]).
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener

	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	faults []*fault
	wg     sync.WaitGroup
}

// fault is one armed DropReplyAfter.
type fault struct {
	match []byte
	fired chan struct{}
	once  sync.Once
}

// NewProxy listens on 127.0.0.1 and forwards every connection to target.
// It is closed at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Down cuts every open connection and refuses new ones until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// Up lets new connections through again.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// DropReplyAfter arms a one-shot fault: the next time a client sends bytes
// containing match (for example "COMMIT" in PostgreSQL's simple-query
// message, or a value only one Redis command carries), the proxy forwards
// them to the server, which acts on them, and then cuts that connection
// instead of forwarding the server's reply. The client sees a broken
// connection after the effect: the "lost acknowledgement" fault. The
// returned channel is closed when the fault fires.
func (p *Proxy) DropReplyAfter(match []byte) <-chan struct{} {
	f := &fault{match: bytes.Clone(match), fired: make(chan struct{})}
	p.mu.Lock()
	p.faults = append(p.faults, f)
	p.mu.Unlock()
	return f.fired
}

// take removes and returns the first armed fault whose match occurs in b.
func (p *Proxy) take(b []byte) *fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.faults {
		if bytes.Contains(b, f.match) {
			p.faults = append(p.faults[:i], p.faults[i+1:]...)
			return f
		}
	}
	return nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		pair := &connPair{}
		p.wg.Add(2)
		go p.pipe(up, c, pair, true)
		go p.pipe(c, up, pair, false)
	}
}

// connPair is the state one client connection and its upstream share: the
// fault armed by the client's bytes, waiting for the server's reply.
type connPair struct {
	mu      sync.Mutex
	pending *fault
}

func (cp *connPair) arm(f *fault) {
	cp.mu.Lock()
	cp.pending = f
	cp.mu.Unlock()
}

func (cp *connPair) armed() *fault {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.pending
}

// pipe copies src to dst. fromClient is true for the client→server
// direction, where faults are armed; the other direction fires them.
func (p *Proxy) pipe(dst, src net.Conn, pair *connPair, fromClient bool) {
	defer p.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous chunk, so a match may span two
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if fromClient {
				p.mu.Lock()
				anyArmed := len(p.faults) > 0
				p.mu.Unlock()
				if anyArmed {
					if f := p.take(append(tail, chunk...)); f != nil {
						pair.arm(f) // before the server can answer
					}
					tail = append(tail[:0], chunk[max(0, len(chunk)-256):]...)
				}
			} else if f := pair.armed(); f != nil {
				// The server acted and answered: lose the answer.
				f.once.Do(func() { close(f.fired) })
				return
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Down()
	p.wg.Wait()
}
