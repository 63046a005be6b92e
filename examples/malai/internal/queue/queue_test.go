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
	done := make(chan Message, 1)
	go q.Consume(ctx, "w1", func(ctx context.Context, m Message) error {
		if calls.Add(1) == 1 {
			advance()
			return errors.New("back-pressure: try later")
		}
		done <- m
		cancel()
		return nil
	})
	select {
	case m := <-done:
		if m.ID != id || m.IdempotencyKey != "k-1" || m.Principal != "alice" || m.CorrelationID != "c1" || string(m.Body) != `{"amount":5}` {
			t.Fatalf("redelivered message differs: %+v", m)
		}
		if m.Deliveries < 2 {
			t.Fatalf("deliveries = %d, want >= 2", m.Deliveries)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("failed message was never redelivered")
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
