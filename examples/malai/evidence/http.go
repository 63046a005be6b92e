package evidence

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"time"
)

// Header is a set of request headers.
type Header map[string]string

// Bearer is an Authorization header carrying tok.
func Bearer(tok string) Header { return Header{"Authorization": "Bearer " + tok} }

// With returns a copy of h with k set to v.
func (h Header) With(k, v string) Header {
	c := maps.Clone(h)
	if c == nil {
		c = Header{}
	}
	c[k] = v
	return c
}

// Response is a read HTTP response (the body capped at 1 MiB).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Proto  string
}

func (r Response) String() string {
	b := bytes.TrimSpace(r.Body)
	if len(b) > 300 {
		b = append(b[:300:300], "…"...)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, b)
}

// Do sends one request with f.Client; body, when not nil, is sent as JSON
// (or as is, when it is a []byte or a string).
//
// When the gateway believes the pass's X-Forwarded-For, a request without
// one carries the current check's own client address.
func (f *Fixture) Do(ctx context.Context, method, url string, body any, h Header) (Response, error) {
	if f.client != "" {
		if _, ok := h["X-Forwarded-For"]; !ok {
			h = h.With("X-Forwarded-For", f.client)
		}
	}
	return Send(ctx, f.Client, method, url, body, h)
}

// Send is Do with another client.
func Send(ctx context.Context, c *http.Client, method, url string, body any, h Header) (Response, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader: // sent as it reads: chunked, unless it has a Len
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Response{}, err
	}
	if l, ok := body.(interface{ Len() int }); ok && req.ContentLength == 0 {
		req.ContentLength = int64(l.Len())
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range h {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return Response{}, err
	}
	return Response{Status: res.StatusCode, Header: res.Header, Body: b, Proto: res.Proto}, nil
}

// Expect returns "HTTP <status> <content type>" and an error unless the
// status is want.
func Expect(r Response, err error, want int) (string, error) {
	if err != nil {
		return "", err
	}
	obs := fmt.Sprintf("HTTP %d", r.Status)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		obs += " " + ct
	}
	if t := JSONString(r.Body, "type"); t != "" {
		obs += " " + t
	}
	if r.Status != want {
		return obs, fmt.Errorf("want HTTP %d; got %s", want, r)
	}
	return obs, nil
}

// JSONString is the string member k of the JSON object b ("" if none).
func JSONString(b []byte, k string) string {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	s, _ := m[k].(string)
	return s
}

// JSONValue is member k of the JSON object b, formatted with %v.
func JSONValue(b []byte, k string) string {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	if v, ok := m[k]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// JWTPart decodes part i (0 header, 1 claims) of a compact JWT.
func JWTPart(tok string, i int) map[string]any {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// Eventually calls try until it reports done, the timeout passes or ctx
// ends, waiting a little longer after each try. It returns the last
// observation and, when not done, an error naming the timeout.
func Eventually(ctx context.Context, timeout time.Duration, try func() (done bool, observed string, err error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 10 * time.Millisecond
	var obs string
	var lastErr error
	for {
		done, o, err := try()
		obs, lastErr = o, err
		if done && err == nil {
			return obs, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if lastErr != nil {
				return obs, fmt.Errorf("not within %s: %w", timeout, lastErr)
			}
			return obs, fmt.Errorf("not within %s", timeout)
		case <-t.C:
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
}
