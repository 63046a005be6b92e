package identity

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// maxFormBody caps the token request body.
const maxFormBody = 4 << 10

// OAuth2 error codes (RFC 6749 §5.2).
const (
	oauthInvalidRequest       = "invalid_request"
	oauthInvalidClient        = "invalid_client"
	oauthUnauthorizedClient   = "unauthorized_client"
	oauthUnsupportedGrantType = "unsupported_grant_type"
	oauthInvalidScope         = "invalid_scope"
)

// TokenError is the RFC 6749 §5.2 error body of POST /oauth2/token.
type TokenError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func writeTokenError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="malai", charset="UTF-8"`)
	}
	b, _ := json.Marshal(TokenError{Error: code, ErrorDescription: desc})
	writeJSON(w, status, b)
}

// serveToken implements the client-credentials grant (RFC 6749 §4.4)
// with client authentication by HTTP Basic (§2.3.1) only. Secrets in the
// body or the query are refused, so they do not end up in access logs.
func (s *Service) serveToken(w http.ResponseWriter, r *http.Request) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "body must be application/x-www-form-urlencoded")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
	if err != nil {
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "body too large or unreadable")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "malformed form body")
		return
	}
	for k, v := range form {
		if len(v) > 1 {
			writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "parameter repeated: "+url.QueryEscape(k))
			return
		}
	}
	if form.Has("client_secret") || r.URL.Query().Has("client_secret") {
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "authenticate with HTTP Basic, not client_secret")
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// §2.3.1: both are form-urlencoded before Basic encoding.
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		ok = e1 == nil && e2 == nil && id != ""
	}
	if !ok {
		writeTokenError(w, http.StatusUnauthorized, oauthInvalidClient, "client authentication required (HTTP Basic)")
		return
	}
	if cid := form.Get("client_id"); cid != "" && cid != id {
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "client_id does not match the authenticated client")
		return
	}
	c, ok := s.authenticateClient(id, secret)
	if !ok {
		writeTokenError(w, http.StatusUnauthorized, oauthInvalidClient, "client authentication failed")
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "":
		writeTokenError(w, http.StatusBadRequest, oauthInvalidRequest, "grant_type is required")
		return
	case "client_credentials":
	case "authorization_code", "refresh_token", "password":
		writeTokenError(w, http.StatusBadRequest, oauthUnauthorizedClient, "this client may only use client_credentials")
		return
	default:
		writeTokenError(w, http.StatusBadRequest, oauthUnsupportedGrantType, "only client_credentials is supported")
		return
	}
	scopes := c.scopes
	if form.Has("scope") {
		req := strings.Fields(form.Get("scope"))
		if len(req) == 0 {
			writeTokenError(w, http.StatusBadRequest, oauthInvalidScope, "scope is empty")
			return
		}
		for _, sc := range req {
			if !slices.Contains(c.scopes, sc) {
				writeTokenError(w, http.StatusBadRequest, oauthInvalidScope, "scope exceeds what the client may request")
				return
			}
		}
		scopes = slices.Compact(slices.Sorted(slices.Values(req)))
	}
	tok, err := s.mint(grant{class: ClassService, subject: id, clientID: id, scopes: scopes})
	if err != nil {
		writeTokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "")
		return
	}
	writeJSON(w, http.StatusOK, marshalToken(tok))
}
