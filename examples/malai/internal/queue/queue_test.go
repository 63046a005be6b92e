package queue

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/internal/servicetest"
)

// testTraceParent is a W3C traceparent the queue must carry unchanged.
const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// runRedelivery publishes one message, fails its first delivery, and
// expects a second delivery of the same message, then an ack.
func runRedelivery(t *testing.T, q Queue, advance func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := q.Publish(ctx, Message{IdempotencyKey: "k-1", Principal: "alice", CorrelationID: "c1", TraceParent: testTraceParent, Body: []byte(`{"amount":5}`)})
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
	if got.ID != id || got.IdempotencyKey != "k-1" || got.Principal != "alice" || got.CorrelationID != "c1" || got.TraceParent != testTraceParent || string(got.Body) != `{"amount":5}` {
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
	testRedisRedelivery(t, r.Client, r.Prefix)
}

func testRedisRedelivery(t *testing.T, c redis.UniversalClient, prefix string) {
	ctx := context.Background()
	q, err := NewRedis(ctx, c, prefix+"transfers", "workers", Options{MinIdle: 100 * time.Millisecond, Block: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRedis(ctx, c, prefix+"transfers", "workers", Options{}); err != nil {
		t.Fatalf("re-creating an existing group: %v", err)
	}
	runRedelivery(t, q, func() {})
	if n, err := q.Pending(ctx); err != nil || n != 0 {
		t.Fatalf("pending = %d, %v after ack", n, err)
	}
}

func TestMemoryBounded(t *testing.T) {
	q := NewMemory(Options{MaxLen: 2, Block: 10 * time.Millisecond}, nil)
	ctx := context.Background()
	for i := range 2 {
		if _, err := q.Publish(ctx, Message{Body: []byte("x")}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, err := q.Publish(ctx, Message{Body: []byte("x")}); !errors.Is(err, ErrFull) {
		t.Fatalf("publish past MaxLen = %v, want ErrFull", err)
	}
	if q.Durable() {
		t.Fatal("the in-memory queue claims to be durable")
	}
}

func TestRedisBoundedAndDeletesAcked(t *testing.T) {
	r := servicetest.NewRedis(t)
	testRedisBoundedAndDeletesAcked(t, r.Client, r.Prefix)
}

func testRedisBoundedAndDeletesAcked(t *testing.T, c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := NewRedis(ctx, c, prefix+"bounded", "workers", Options{MaxLen: 2, Block: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := q.Publish(ctx, Message{Body: []byte("x")}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, err := q.Publish(ctx, Message{Body: []byte("x")}); !errors.Is(err, ErrFull) {
		t.Fatalf("publish past MaxLen = %v, want ErrFull", err)
	}
	var n atomic.Int32
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		for n.Load() < 2 && cctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		ccancel()
	}()
	_ = q.Consume(cctx, "w", func(context.Context, Message) error { n.Add(1); return nil })
	if l, err := q.Len(ctx); err != nil || l != 0 {
		t.Fatalf("Len after acking everything = %d, %v; acked entries must leave the stream", l, err)
	}
	if _, err := q.Publish(ctx, Message{Body: []byte("x")}); err != nil {
		t.Fatalf("publish once there is room: %v", err)
	}
}

// A consumer survives Redis going away: it reports the failure, backs
// off, and handles messages again once Redis is back.
func TestRedisConsumerSurvivesOutage(t *testing.T) {
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var failures, recoveries int
	q, err := NewRedis(ctx, c, r.Prefix+"outage", "workers", Options{Block: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures++
			} else {
				recoveries++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(ctx, "w", func(_ context.Context, m Message) error { handled <- string(m.Body); return nil })
	}()
	p.Down()
	waitFor(t, "the consumer to report the outage", func() bool { mu.Lock(); defer mu.Unlock(); return failures > 0 })
	select {
	case err := <-done:
		t.Fatalf("Consume returned during the outage: %v", err)
	default:
	}
	p.Up()
	direct, _ := NewRedis(ctx, r.Client, r.Prefix+"outage", "workers", Options{})
	if _, err := direct.Publish(ctx, Message{Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-handled:
		if got != "after" {
			t.Fatalf("handled %q", got)
		}
	case <-ctx.Done():
		t.Fatal("the consumer never came back")
	}
	waitFor(t, "the recovery to be reported", func() bool { mu.Lock(); defer mu.Unlock(); return recoveries > 0 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume = %v", err)
	}
}

// TestRedisCluster runs the Redis queue tests against a three-master Redis
// Cluster, once with the stream on each master: a stream is one key, and
// the ack's MULTI touches only it.
func TestRedisCluster(t *testing.T) {
	rc := servicetest.NewRedisCluster(t)
	c := rc.NewClient(t)
	for _, tc := range []struct {
		name, stream string
		run          func(*testing.T, redis.UniversalClient, string)
	}{
		{"redelivery", "transfers", testRedisRedelivery},
		{"bounded and deletes acked", "bounded", testRedisBoundedAndDeletesAcked},
	} {
		for i, addr := range rc.Addrs {
			prefix := prefixOnNode(t, c, addr, tc.stream)
			t.Run(tc.name+"/node"+strconv.Itoa(i), func(t *testing.T) { tc.run(t, c, prefix) })
		}
	}
}

// prefixOnNode returns a fresh prefix that puts prefix+name in a slot the
// node at addr serves.
func prefixOnNode(t *testing.T, c *redis.ClusterClient, addr, name string) string {
	t.Helper()
	for range 1000 {
		p := "q:" + servicetest.Unique() + ":"
		n, err := c.MasterForKey(context.Background(), p+name)
		if err != nil {
			t.Fatal(err)
		}
		if n.Options().Addr == addr {
			return p
		}
	}
	t.Fatalf("no prefix puts %q on %s", name, addr)
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
