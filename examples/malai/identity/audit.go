package identity

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/correlation"
)

// Audit event types appended to identity's chain. Payloads are JSON and
// sealed at rest by the log's key ring; they carry the account id and
// never a username, password, code or token.
const (
	AuditUserCreated       = "identity.user.created"
	AuditUserDeleted       = "identity.user.deleted"
	AuditPasswordChanged   = "identity.password.changed"
	AuditPasswordReset     = "identity.password.reset"
	AuditMFAEnrolled       = "identity.mfa.enrolled"
	AuditMFADisabled       = "identity.mfa.disabled"
	AuditRecoveryRenewed   = "identity.mfa.recovery-codes.regenerated"
	AuditSignIn            = "identity.sign-in.succeeded"
	AuditSignInRefused     = "identity.sign-in.refused"
	AuditSessionRevoked    = "identity.session.revoked"
	AuditSignOut           = "identity.session.signed-out"
	AuditRefreshReused     = "identity.session.refresh-reused"
	AuditClientKeyAdded    = "identity.client.key-registered"
	AuditClientKeysRevoked = "identity.client.keys-revoked"
	AuditKeysRotated       = "identity.keys.rotated"
)

// auditEvent appends one event to identity's chain, detached from the
// request so a client that goes away cannot cancel it. A failed append is
// logged as an error: the change it describes is already durable.
func (s *Service) auditEvent(ctx context.Context, typ string, payload map[string]any) {
	b, err := json.Marshal(payload)
	if err != nil {
		s.log.ErrorContext(ctx, "identity: audit payload", "type", typ, "error", err.Error())
		return
	}
	cid, _ := correlation.FromContext(ctx)
	actx, cancel := durable(ctx)
	defer cancel()
	if _, err := s.cfg.Audit.Append(actx, auditlog.Event{Type: typ, Actor: "service:identity", CorrelationID: cid, Payload: b}); err != nil {
		s.log.ErrorContext(ctx, "identity: audit append failed", "type", typ, "error", err.Error())
	}
}

// decision logs a lockout decision and appends it to the audit chain; a
// decision repeated for the same key within a minute is logged but not
// appended again, so a flood of refused attempts cannot flood the chain.
func (s *Service) decision(ctx context.Context, level slog.Level, outcome string, key string, attrs []slog.Attr, payload map[string]any) {
	s.log.LogAttrs(ctx, level, "identity: sign-in", append([]slog.Attr{slog.String("outcome", outcome)}, attrs...)...)
	if payload == nil || !s.audited.first(outcome+"|"+key, s.cfg.Now()) {
		return
	}
	payload["outcome"] = outcome
	s.auditEvent(ctx, AuditSignInRefused, payload)
}

// auditDedup remembers recently audited decision keys (bounded).
type auditDedup struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const auditDedupMax = 10_000

func (d *auditDedup) first(key string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]time.Time{}
	}
	if t, ok := d.seen[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if len(d.seen) >= auditDedupMax {
		for k, t := range d.seen {
			if now.Sub(t) >= time.Minute {
				delete(d.seen, k)
			}
		}
		if len(d.seen) >= auditDedupMax {
			clear(d.seen)
		}
	}
	d.seen[key] = now
	return true
}

// reasonsAttr joins reasons for a log line.
func reasonsAttr(r []string) slog.Attr { return slog.String("reasons", strings.Join(r, ",")) }
