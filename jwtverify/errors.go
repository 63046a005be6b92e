package jwtverify

import (
	"errors"
	"net/http"
)

// Sentinel errors. Every error returned by [Verifier.Verify], passed to an
// ErrorHandler or reported to [Config.Observe] is an [*Error] that wraps one
// of these; test them with errors.Is.
var (
	// ErrNoToken: the request carries no bearer token (HTTP 401 with a
	// challenge and no error code, RFC 6750 §3.1).
	ErrNoToken = errors.New("jwtverify: no bearer token")
	// ErrInvalidRequest: credentials are sent in a malformed way, such as
	// two Authorization headers (HTTP 400 invalid_request).
	ErrInvalidRequest = errors.New("jwtverify: invalid request")
	// ErrInvalidToken: the token is malformed, expired, not for us or fails
	// verification (HTTP 401 invalid_token).
	ErrInvalidToken = errors.New("jwtverify: invalid token")
	// ErrInsufficientScope: the token is valid but its class or scopes do
	// not meet the route's [Requirement] (HTTP 403 insufficient_scope).
	ErrInsufficientScope = errors.New("jwtverify: insufficient scope")
	// ErrUnavailable: the issuer's keys could not be fetched, or the last
	// good copy is older than [Issuer.MaxStaleness] (HTTP 503). Every
	// package names its "dependency down" error ErrUnavailable.
	ErrUnavailable = errors.New("jwtverify: signing keys unavailable")
	// ErrKeysUnavailable is the former name of ErrUnavailable (the same
	// value).
	//
	// Deprecated: use ErrUnavailable.
	ErrKeysUnavailable = ErrUnavailable
)

// Reason is a stable, low-cardinality code saying why a token was refused.
// Use it as a log field or metric label; it never contains token text.
type Reason string

// Reasons. The set may grow; existing values do not change.
const (
	ReasonNone             Reason = ""
	ReasonNoToken          Reason = "no_token"
	ReasonMultipleTokens   Reason = "multiple_tokens"
	ReasonBadScheme        Reason = "bad_authorization"
	ReasonTooLarge         Reason = "too_large"
	ReasonMalformed        Reason = "malformed"
	ReasonDuplicateKey     Reason = "duplicate_key"
	ReasonAlgorithm        Reason = "algorithm_not_allowed"
	ReasonUntrustedHeader  Reason = "untrusted_header"
	ReasonType             Reason = "wrong_type"
	ReasonIDToken          Reason = "id_token"
	ReasonIssuer           Reason = "unknown_issuer"
	ReasonUnknownKey       Reason = "unknown_key"
	ReasonAmbiguousKey     Reason = "ambiguous_key"
	ReasonSignature        Reason = "bad_signature"
	ReasonMissingClaim     Reason = "missing_claim"
	ReasonBadClaim         Reason = "bad_claim"
	ReasonExpired          Reason = "expired"
	ReasonNotYetValid      Reason = "not_yet_valid"
	ReasonIssuedInFuture   Reason = "issued_in_future"
	ReasonLifetime         Reason = "lifetime_exceeded"
	ReasonAudience         Reason = "wrong_audience"
	ReasonClass            Reason = "unknown_class"
	ReasonKeysUnavailable  Reason = "keys_unavailable"
	ReasonWrongClass       Reason = "wrong_class"
	ReasonScope            Reason = "insufficient_scope"
	ReasonRouteAudience    Reason = "route_audience"
	ReasonContextCancelled Reason = "context_cancelled"
)

// Error is the error type of this package: a stable [Reason] and the
// sentinel it belongs to. Its text is "jwtverify: <reason>" and never
// contains token or key material.
type Error struct {
	Reason Reason
	kind   error
	// scope lists the scopes a Requirement asked for, for the
	// WWW-Authenticate scope attribute (RFC 6750 §3).
	scope string
}

func (e *Error) Error() string { return "jwtverify: " + string(e.Reason) }

// Unwrap returns the sentinel ([ErrInvalidToken], ...).
func (e *Error) Unwrap() error { return e.kind }

// Status is the HTTP status the default error handler answers with.
func (e *Error) Status() int {
	switch e.kind {
	case ErrInvalidRequest:
		return http.StatusBadRequest
	case ErrInsufficientScope:
		return http.StatusForbidden
	case ErrUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}

// Preallocated errors: a rejection costs no allocation and cannot carry
// request data by accident.
var (
	errNoToken        = &Error{ReasonNoToken, ErrNoToken, ""}
	errMultiple       = &Error{ReasonMultipleTokens, ErrInvalidRequest, ""}
	errBadScheme      = &Error{ReasonBadScheme, ErrInvalidRequest, ""}
	errTooLarge       = &Error{ReasonTooLarge, ErrInvalidToken, ""}
	errMalformed      = &Error{ReasonMalformed, ErrInvalidToken, ""}
	errDuplicate      = &Error{ReasonDuplicateKey, ErrInvalidToken, ""}
	errAlgorithm      = &Error{ReasonAlgorithm, ErrInvalidToken, ""}
	errUntrusted      = &Error{ReasonUntrustedHeader, ErrInvalidToken, ""}
	errType           = &Error{ReasonType, ErrInvalidToken, ""}
	errIDToken        = &Error{ReasonIDToken, ErrInvalidToken, ""}
	errIssuer         = &Error{ReasonIssuer, ErrInvalidToken, ""}
	errUnknownKey     = &Error{ReasonUnknownKey, ErrInvalidToken, ""}
	errAmbiguousKey   = &Error{ReasonAmbiguousKey, ErrInvalidToken, ""}
	errSignature      = &Error{ReasonSignature, ErrInvalidToken, ""}
	errMissingClaim   = &Error{ReasonMissingClaim, ErrInvalidToken, ""}
	errBadClaim       = &Error{ReasonBadClaim, ErrInvalidToken, ""}
	errExpired        = &Error{ReasonExpired, ErrInvalidToken, ""}
	errNotYetValid    = &Error{ReasonNotYetValid, ErrInvalidToken, ""}
	errIssuedInFuture = &Error{ReasonIssuedInFuture, ErrInvalidToken, ""}
	errLifetime       = &Error{ReasonLifetime, ErrInvalidToken, ""}
	errAudience       = &Error{ReasonAudience, ErrInvalidToken, ""}
	errClass          = &Error{ReasonClass, ErrInvalidToken, ""}
	errKeys           = &Error{ReasonKeysUnavailable, ErrUnavailable, ""}
	errCancelled      = &Error{ReasonContextCancelled, ErrUnavailable, ""}
)

// ReasonOf returns the reason code carried by err, or "" if err is not
// from this package.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonNone
}
