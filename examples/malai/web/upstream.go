package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/malai-sec/malai/idempotency"
)

// refreshCookie is the cookie identity puts the refresh token in. The app
// keeps it in the session record; the browser never sees it.
const refreshCookie = "__Secure-malai-refresh"

// maxUpstreamBody caps what the app reads from a service.
const maxUpstreamBody = 1 << 20

// apiError is a problem+json answer from identity or the ledger.
type apiError struct {
	Status     int      `json:"status"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations"`
	MFAToken   string   `json:"mfa_token"`
}

func (e *apiError) Error() string { return fmt.Sprintf("web: upstream %d %s", e.Status, e.Type) }

// slug is the problem type without the documentation prefix.
func (e *apiError) slug() string {
	if i := strings.LastIndexByte(e.Type, '#'); i >= 0 {
		return e.Type[i+1:]
	}
	return e.Type
}

// problemIs reports whether err is an upstream problem of type slug.
func problemIs(err error, slug string) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.slug() == slug
}

// errUpstream is a transport failure or a 5xx: the service did not give
// an answer a user can act on.
var errUpstream = errors.New("web: service unavailable")

type upstream struct {
	identity, ledger *url.URL
	client           *http.Client
}

// call is one request to a service.
type call struct {
	method string
	base   *url.URL
	path   string
	token  string
	body   any
	header http.Header
	// clientIP, when valid, is forwarded so identity scores the browser's
	// network, not the app's.
	clientIP netip.Addr
}

// result is a service's successful answer.
type result struct {
	status  int
	header  http.Header
	cookies []*http.Cookie
	body    []byte
}

func (u *upstream) do(ctx context.Context, c call) (result, error) {
	var body io.Reader
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return result{}, err
		}
		body = bytes.NewReader(b)
	}
	target := *c.base
	p, q, _ := strings.Cut(c.path, "?")
	target.Path = strings.TrimSuffix(target.Path, "/") + p
	target.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, c.method, target.String(), body)
	if err != nil {
		return result{}, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.clientIP.IsValid() {
		req.Header.Set("X-Forwarded-For", c.clientIP.String())
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return result{}, fmt.Errorf("%w: %w", errUpstream, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		return result{}, fmt.Errorf("%w: %w", errUpstream, err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, cookies: resp.Cookies(), body: b}
	if resp.StatusCode >= 500 {
		return res, fmt.Errorf("%w: status %d", errUpstream, resp.StatusCode)
	}
	if resp.StatusCode >= 400 {
		ae := &apiError{}
		if json.Unmarshal(b, ae) != nil || ae.Type == "" {
			ae.Type = "unknown"
		}
		ae.Status = resp.StatusCode
		return res, ae
	}
	return res, nil
}

func (u *upstream) decode(ctx context.Context, c call, out any) (result, error) {
	res, err := u.do(ctx, c)
	if err != nil {
		return res, err
	}
	if out != nil && len(res.body) > 0 {
		if err := json.Unmarshal(res.body, out); err != nil {
			return res, fmt.Errorf("%w: undecodable answer: %w", errUpstream, err)
		}
	}
	return res, nil
}

// tokens is what a sign-in or refresh hands the app.
type tokens struct {
	access  string
	expires time.Time
	refresh string
}

type tokenBody struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func tokensFrom(res result, now time.Time) (tokens, error) {
	var tb tokenBody
	if err := json.Unmarshal(res.body, &tb); err != nil || tb.AccessToken == "" || tb.ExpiresIn <= 0 {
		return tokens{}, fmt.Errorf("%w: token answer without a token", errUpstream)
	}
	t := tokens{access: tb.AccessToken, expires: now.Add(time.Duration(tb.ExpiresIn) * time.Second)}
	for _, c := range res.cookies {
		if c.Name == refreshCookie && c.Value != "" && c.MaxAge >= 0 {
			t.refresh = c.Value
		}
	}
	if t.refresh == "" {
		return tokens{}, fmt.Errorf("%w: token answer without a refresh session", errUpstream)
	}
	return t, nil
}

func refreshHeader(tok string) http.Header {
	return http.Header{"Cookie": {(&http.Cookie{Name: refreshCookie, Value: tok}).String()}}
}

// signIn is POST /v1/sessions. A right password on an account with a
// second factor answers mfa-required (the returned apiError).
func (u *upstream) signIn(ctx context.Context, ip netip.Addr, body map[string]string, now time.Time) (tokens, error) {
	res, err := u.do(ctx, call{method: http.MethodPost, base: u.identity, path: "/v1/sessions", body: body, clientIP: ip})
	if err != nil {
		return tokens{}, err
	}
	return tokensFrom(res, now)
}

// refresh rotates the refresh session (POST /v1/refresh).
func (u *upstream) refresh(ctx context.Context, ip netip.Addr, refresh string, now time.Time) (tokens, error) {
	res, err := u.do(ctx, call{method: http.MethodPost, base: u.identity, path: "/v1/refresh", header: u.identityCSRF(refreshHeader(refresh)), clientIP: ip})
	if err != nil {
		return tokens{}, err
	}
	return tokensFrom(res, now)
}

// signOut revokes the refresh session (DELETE /v1/refresh).
func (u *upstream) signOut(ctx context.Context, ip netip.Addr, refresh string) error {
	_, err := u.do(ctx, call{method: http.MethodDelete, base: u.identity, path: "/v1/refresh", header: u.identityCSRF(refreshHeader(refresh)), clientIP: ip})
	return err
}

// identityCSRF adds what identity's cookie routes ask of a caller that is
// not a browser page: the custom request header (identity waives the
// Origin check for the web component's certificate).
func (u *upstream) identityCSRF(h http.Header) http.Header {
	h.Set("X-Malai-CSRF", "1")
	return h
}

// account is one ledger account.
type account struct {
	ID      string `json:"id"`
	Balance int64  `json:"balance"`
}

func (u *upstream) accounts(ctx context.Context, token string) ([]account, error) {
	var out struct {
		Accounts []account `json:"accounts"`
	}
	_, err := u.decode(ctx, call{method: http.MethodGet, base: u.ledger, path: "/v1/accounts", token: token}, &out)
	return out.Accounts, err
}

// transferRecord is one transfer as the ledger lists it.
type transferRecord struct {
	Transfer string    `json:"transfer"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Amount   int64     `json:"amount"`
	At       time.Time `json:"at"`
}

func (u *upstream) transfers(ctx context.Context, token, acct string) ([]transferRecord, error) {
	var out struct {
		Transfers []transferRecord `json:"transfers"`
	}
	_, err := u.decode(ctx, call{method: http.MethodGet, base: u.ledger, path: "/v1/accounts/" + url.PathEscape(acct) + "/transfers?limit=10", token: token}, &out)
	return out.Transfers, err
}

// transferReq is the ledger's transfer body.
type transferReq struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

func (u *upstream) transfer(ctx context.Context, token, key string, async bool, tr transferReq) (result, error) {
	path := "/v1/transfers"
	if async {
		path += "/async"
	}
	return u.do(ctx, call{method: http.MethodPost, base: u.ledger, path: path, token: token, body: tr,
		header: http.Header{idempotency.HeaderKey: {idempotency.FormatKey(key)}}})
}

// jobState is GET /v1/jobs/{id}.
type jobState struct {
	Status string `json:"status"`
	Result *struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	} `json:"result"`
}

func (u *upstream) job(ctx context.Context, token, location string) (jobState, error) {
	var js jobState
	_, err := u.decode(ctx, call{method: http.MethodGet, base: u.ledger, path: location, token: token}, &js)
	return js, err
}
