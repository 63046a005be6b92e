package faults

import (
	"context"
	"net/http"
	"time"

	"github.com/malai-sec/malai/idempotency"
)

// Faults of the composition: telemetry, idempotency records.
const (
	// CorrelationTrustsClient keeps whatever X-Request-ID a client sends.
	CorrelationTrustsClient Fault = "correlation-trusts-client"
	// NoPropagation: the gateway's calls to the services carry no
	// correlation id or trace context.
	NoPropagation Fault = "no-trace-propagation"
	// NoMetrics serves no /metrics on the internal listeners.
	NoMetrics Fault = "no-metrics"
	// NoEncryptedLogs writes no encrypted log streams.
	NoEncryptedLogs Fault = "no-encrypted-logs"
	// InternalCertOptional: the internal listeners complete a handshake
	// with a client that presents no certificate (admission by route
	// still refuses it).
	InternalCertOptional Fault = "internal-client-cert-optional"
	// IdempotencyForgets: the idempotency store drops every record once
	// its request completes (a store that loses what it holds).
	IdempotencyForgets Fault = "idempotency-store-forgets"
)

// TrustIncoming is the correlation middleware's trust decision.
func (s Set) TrustIncoming(trust func(*http.Request) bool) func(*http.Request) bool {
	if s.On(CorrelationTrustsClient) {
		return func(*http.Request) bool { return true }
	}
	return trust
}

// Propagation returns rt, or bare (no correlation) under NoPropagation.
func (s Set) Propagation(rt, bare http.RoundTripper) http.RoundTripper {
	if s.On(NoPropagation) {
		return bare
	}
	return rt
}

// LogDir returns dir, or "" (no streams) under NoEncryptedLogs.
func (s Set) LogDir(dir string) string {
	if s.On(NoEncryptedLogs) {
		return ""
	}
	return dir
}

// IdempotencyStore returns st, or under IdempotencyForgets a store that
// deletes each record when its request completes.
func (s Set) IdempotencyStore(st idempotency.Store) idempotency.Store {
	if s.On(IdempotencyForgets) {
		return forgetful{st}
	}
	return st
}

type forgetful struct{ idempotency.Store }

func (f forgetful) Complete(ctx context.Context, key string, rec idempotency.Record, _ time.Time) error {
	return f.Release(ctx, key, rec)
}
