package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/servicetest"
)

// runRedelivery publishes one message, fails its first delivery, and
// expects a second delivery of the same message, then an ack.
func runRedelivery(t *testing.T, q Queue, advance func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := q.Publish(ctx, Message{IdempotencyKey: "k-1", Principal: "alice", CorrelationID: "c1", Body: []byte(`{"amount":5}`)})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var got Message
	handler := func(ctx context.Context, m Message) error {
		if calls.Add(1) == 1 {
			advance()
			return errors.New("back-pressure: try later")
		}
		got = m
		cancel() // stop consuming once the redelivery is handled
		return nil
	}
	// Consume returns after the redelivered message was handled and acked.
	if err := q.Consume(ctx, "w1", handler); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume = %v, want context.Canceled (redelivery never came?)", err)
	}
	if got.ID != id || got.IdempotencyKey != "k-1" || got.Principal != "alice" || got.CorrelationID != "c1" || string(got.Body) != `{"amount":5}` {
		t.Fatalf("redelivered message differs: %+v", got)
	}
	if got.Deliveries < 2 {
		t.Fatalf("deliveries = %d, want >= 2", got.Deliveries)
	}
}

func TestMemoryRedelivery(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	q := NewMemory(Options{MinIdle: time.Minute, Block: 10 * time.Millisecond}, clock)
	runRedelivery(t, q, func() { mu.Lock(); now = now.Add(2 * time.Minute); mu.Unlock() })
	if q.Pending() != 0 {
		t.Fatalf("pending = %d after ack", q.Pending())
	}
}

func TestRedisRedelivery(t *testing.T) {
	r := servicetest.NewRedis(t)
	ctx := context.Background()
	q, err := NewRedis(ctx, r.Client, r.Prefix+"transfers", "workers", Options{MinIdle: 100 * time.Millisecond, Block: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRedis(ctx, r.Client, r.Prefix+"transfers", "workers", Options{}); err != nil {
		t.Fatalf("re-creating an existing group: %v", err)
	}
	runRedelivery(t, q, func() {})
	if n, err := q.Pending(ctx); err != nil || n != 0 {
		t.Fatalf("pending = %d, %v after ack", n, err)
	}
}
