package respwriter

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRecordsStatusBytesAndHookOnce(t *testing.T) {
	tests := []struct {
		name       string
		handler    func(w http.ResponseWriter)
		wantStatus int
		wantBytes  int64
		wantHooks  int
	}{
		{"write implies 200", func(w http.ResponseWriter) { io.WriteString(w, "hello") }, 200, 5, 1},
		{"explicit status", func(w http.ResponseWriter) { w.WriteHeader(201); w.Write([]byte("ab")) }, 201, 2, 1},
		{"second WriteHeader ignored", func(w http.ResponseWriter) { w.WriteHeader(404); w.WriteHeader(500) }, 404, 0, 1},
		{"1xx passes through", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(204) }, 204, 0, 1},
		{"flush sends 200", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, 200, 0, 1},
		{"readfrom counts", func(w http.ResponseWriter) { w.(io.ReaderFrom).ReadFrom(strings.NewReader("xyz")) }, 200, 3, 1},
		{"nothing written", func(w http.ResponseWriter) {}, 0, 0, 0},
	}
	for _, tc := range tests {
		for _, via := range []string{"func", "hook"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				rec := httptest.NewRecorder()
				hooks := 0
				before := func(h http.Header, status int) {
					hooks++
					h.Set("X-Hook-Status", http.StatusText(status))
				}
				w := New(rec, before)
				if via == "hook" {
					w.ResetHook(rec, hookFunc(before))
				}
				tc.handler(w)
				if w.Status() != tc.wantStatus || w.BytesWritten() != tc.wantBytes || hooks != tc.wantHooks {
					t.Fatalf("status=%d bytes=%d hooks=%d, want %d %d %d", w.Status(), w.BytesWritten(), hooks, tc.wantStatus, tc.wantBytes, tc.wantHooks)
				}
				// httptest.ResponseRecorder snapshots headers at its first WriteHeader, 1xx included.
				if hooks == 1 && !strings.HasPrefix(tc.name, "1xx") && rec.Result().Header.Get("X-Hook-Status") != http.StatusText(tc.wantStatus) {
					t.Fatalf("hook header not sent with the status line: %v", rec.Result().Header)
				}
			})
		}
	}
}

type hookFunc func(http.Header, int)

func (f hookFunc) BeforeHeader(h http.Header, status int) { f(h, status) }

// Over a real server: Flush reaches the client before the handler returns,
// ResponseController finds deadlines through Unwrap, and Hijack works.
func TestOptionalInterfacesOverRealServer(t *testing.T) {
	flushed := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		rw := New(w, nil)
		io.WriteString(rw, "first\n")
		if err := http.NewResponseController(rw).Flush(); err != nil {
			t.Errorf("Flush through ResponseController: %v", err)
		}
		if err := http.NewResponseController(rw).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through Unwrap: %v", err)
		}
		<-flushed
		io.WriteString(rw, "second\n")
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		rw := New(w, func(http.Header, int) { t.Error("hook ran on a hijacked connection") })
		conn, buf, err := rw.Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		buf.Flush()
		rw.WriteHeader(500) // ignored after hijack
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk before handler returned: %q, %v", line, err)
	}
	close(flushed)
	resp.Body.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hijacked" {
		t.Fatalf("hijacked body = %q", body)
	}
}

func TestUnsupportedCapabilities(t *testing.T) {
	var plain struct{ http.ResponseWriter }
	plain.ResponseWriter = httptest.NewRecorder()
	rw := New(plain, nil)
	if _, _, err := rw.Hijack(); !errors.Is(err, http.ErrNotSupported) {
		t.Fatalf("Hijack on a recorder: %v, want ErrNotSupported", err)
	}
	if rw.Hijacked() {
		t.Fatal("failed hijack marked the writer hijacked")
	}
	if n, err := rw.ReadFrom(strings.NewReader("abcd")); n != 4 || err != nil {
		t.Fatalf("ReadFrom fallback = %d, %v", n, err)
	}
	rw.Reset(httptest.NewRecorder(), nil)
	if rw.WroteHeader() || rw.Status() != 0 || rw.BytesWritten() != 0 {
		t.Fatal("Reset kept state")
	}
}
