package evidence

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// clientChecks: "Services authenticate to each other with OAuth2 client
// credentials" with "no shared service secret" and "per-task identity":
// the internal listeners admit only certified components, and a
// component proves itself with a one-use signed assertion
// (private_key_jwt), never a secret.
func clientChecks() []Check {
	return []Check{noCertificateCheck, clientAssertionCheck}
}

// noCertificateCheck: an internal listener refuses the TLS handshake of a
// client without a certificate, before any route decides anything.
var noCertificateCheck = Check{Row: RowInterService, Local: true,
	Name: "internal listeners (identity, ledger) refuse the TLS handshake of a client without a certificate",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		c, err := f.ClientAs("")
		if err != nil {
			return "", err
		}
		var obs []string
		var errs []error
		for _, l := range []struct{ name, url string }{{"identity", f.Local.IdentityURL()}, {"ledger", f.Local.LedgerURL()}} {
			r, err := Send(ctx, c, "GET", l.url+"/healthz", nil, nil)
			if err == nil {
				obs = append(obs, fmt.Sprintf("%s: handshake completed, HTTP %d", l.name, r.Status))
				errs = append(errs, fmt.Errorf("%s completed a handshake without a client certificate", l.name))
				continue
			}
			msg := err.Error()
			if i := strings.LastIndex(msg, "tls: "); i >= 0 {
				msg = msg[i:]
			}
			obs = append(obs, l.name+": "+msg)
		}
		return strings.Join(obs, "; "), errors.Join(errs...)
	}}

// clientAssertionCheck: the token endpoint takes a fresh private_key_jwt
// assertion once; the same assertion again, a client secret, or the
// endpoint through the public gateway gets nothing.
var clientAssertionCheck = Check{Row: RowInterService, Local: true,
	Name: "private_key_jwt only: a fresh client assertion gets a service token once; its replay, client_secret_basic and the public gateway's /oauth2/token get none",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		c, err := f.ClientAs(AuditorComponent)
		if err != nil {
			return "", err
		}
		idURL := f.Local.IdentityURL()
		md, err := Send(ctx, c, "GET", idURL+clientauth.MetadataPath, nil, nil)
		if err != nil {
			return "", err
		}
		aud := JSONString(md.Body, "token_endpoint")
		if md.Status != http.StatusOK || aud == "" {
			return "", fmt.Errorf("metadata: %s", md)
		}
		// A key of this check's own, registered over the auditor's
		// certificate, as a component registers its own at start.
		key, err := clientauth.NewKey()
		if err != nil {
			return "", err
		}
		reg, err := Send(ctx, c, "POST", idURL+clientauth.ClientsPath, map[string]json.RawMessage{"jwk": key.PublicJWK()}, nil)
		if err != nil {
			return "", err
		}
		clientID := JSONString(reg.Body, "client_id")
		if reg.Status != http.StatusCreated || clientID == "" {
			return "", fmt.Errorf("register a key: %s", reg)
		}
		a, err := key.Assertion(clientID, aud, time.Now())
		if err != nil {
			return "", err
		}
		form := func(assertion string) string {
			return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {clientauth.AssertionType},
				"client_assertion": {assertion}, "scope": {"ledger:audit"}}.Encode()
		}
		formHdr := Header{"Content-Type": "application/x-www-form-urlencoded"}
		first, err := Send(ctx, c, "POST", idURL+clientauth.TokenPath, form(a), formHdr)
		if err != nil {
			return "", err
		}
		replay, err := Send(ctx, c, "POST", idURL+clientauth.TokenPath, form(a), formHdr)
		if err != nil {
			return "", err
		}
		basic, err := Send(ctx, c, "POST", idURL+clientauth.TokenPath, url.Values{"grant_type": {"client_credentials"}}.Encode(),
			formHdr.With("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(clientID+":a-shared-secret"))))
		if err != nil {
			return "", err
		}
		a2, err := key.Assertion(clientID, aud, time.Now())
		if err != nil {
			return "", err
		}
		public, err := f.Do(ctx, "POST", f.Target.Gateway+clientauth.TokenPath, []byte(form(a2)), formHdr)
		if err != nil {
			return "", err
		}
		tok := JSONString(first.Body, "access_token")
		class := JWTPart(tok, 1)["token_class"]
		obs := fmt.Sprintf("fresh assertion → %d token_class=%v; the same assertion again → %d %s; client_secret_basic → %d %s (Cache-Control %q); gateway %s → %d",
			first.Status, class, replay.Status, JSONString(replay.Body, "error"), basic.Status, JSONString(basic.Body, "error"),
			basic.Header.Get("Cache-Control"), clientauth.TokenPath, public.Status)
		switch {
		case first.Status != http.StatusOK || class != "service":
			return obs, errors.New("a fresh assertion got no service token")
		case replay.Status == http.StatusOK || bytes.Contains(replay.Body, []byte("access_token")):
			return obs, errors.New("a replayed assertion got a token")
		case basic.Status != http.StatusUnauthorized || JSONString(basic.Body, "error") != "invalid_client" || !strings.Contains(basic.Header.Get("Cache-Control"), "no-store"):
			return obs, errors.New("client_secret_basic was not refused as RFC 6749 §5.2 says")
		case public.Status != http.StatusNotFound:
			return obs, errors.New("the token endpoint is reachable through the public gateway")
		}
		return obs, nil
	}}
