package idempotency

import "time"

// Test hooks.
var (
	StoreKeyForTest     = storeKey
	HTTPStoreKeyForTest = httpStoreKey
)

// HeartbeatDueForTest exposes the heartbeat's renewal decision.
func HeartbeatDueForTest(l *Lease, now time.Time) bool { return l.heartbeatDue(now) }
