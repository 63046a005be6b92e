package gateway

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
)

// answerBody is the upstream's answer to request n: 100 KiB (several copy
// buffers' worth) that no other request's answer shares.
func answerBody(n int) []byte {
	var b bytes.Buffer
	for b.Len() < 100<<10 {
		fmt.Fprintf(&b, "answer %d line %d\n", n, b.Len())
	}
	return b.Bytes()
}

// TestProxyReusedBuffersKeepAnswersApart: with the copy buffers reused,
// concurrent clients each receive exactly their own answer, however
// many buffers it fills, and nothing of another's.
func TestProxyReusedBuffersKeepAnswersApart(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = w.Write(answerBody(n))
	}))
	defer up.Close()
	target, _ := url.Parse(up.URL)
	gw := httptest.NewServer(proxy(target, up.Client().Transport, nil, slog.New(slog.DiscardHandler)))
	defer gw.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				n := g*100 + i
				resp, err := gw.Client().Get(gw.URL + "/?n=" + strconv.Itoa(n))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, answerBody(n)) {
					errs <- fmt.Errorf("answer %d: %d bytes, err %v, not the upstream's", n, len(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestProxyBuffers: a buffer is the proxy's size, and one that is not
// the pool's is not taken back.
func TestProxyBuffers(t *testing.T) {
	var p proxyBuffers
	b := p.Get()
	if len(b) != proxyBufferSize {
		t.Fatalf("buffer of %d bytes, want %d", len(b), proxyBufferSize)
	}
	p.Put(b)
	p.Put(make([]byte, 512)) // too small: dropped, not converted
	if b := p.Get(); len(b) != proxyBufferSize {
		t.Fatalf("buffer of %d bytes after a foreign Put, want %d", len(b), proxyBufferSize)
	}
}
