package servicetest

import (
	"context"
	"testing"
	"time"
)

func TestRedisPrefixIsolatedAndCleaned(t *testing.T) {
	var prefix string
	t.Run("inner", func(t *testing.T) {
		r := NewRedis(t)
		prefix = r.Prefix
		if err := r.Client.Set(context.Background(), r.Prefix+"k", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if prefix == "" {
		return // skipped: no Redis configured
	}
	r := NewRedis(t)
	if n, err := r.Client.Exists(context.Background(), prefix+"k").Result(); err != nil || n != 0 {
		t.Fatalf("key under a finished test's prefix still exists: n=%d err=%v", n, err)
	}
}

func TestProxyDownAndUp(t *testing.T) {
	r := NewRedis(t)
	p := NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("through proxy: %v", err)
	}
	p.Down()
	ctx2, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx2).Err(); err == nil {
		t.Fatal("ping succeeded while the proxy was down")
	}
	p.Up()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("after Up: %v", err)
	}
}

// A dropped reply: the server ran the command, the client saw the
// connection break instead of the answer.
func TestProxyDropReplyAfter(t *testing.T) {
	r := NewRedis(t)
	p := NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	c.Options().MaxRetries = -1 // go-redis would resend the SET otherwise
	ctx := context.Background()
	key := r.Prefix + "lost-reply"
	fired := p.DropReplyAfter([]byte("lost-reply-value"))
	if err := c.Set(ctx, key, "lost-reply-value", time.Minute).Err(); err == nil {
		t.Fatal("SET answered although its reply was dropped")
	}
	select {
	case <-fired:
	default:
		t.Fatal("fault did not report firing")
	}
	if v, err := r.Client.Get(ctx, key).Result(); err != nil || v != "lost-reply-value" {
		t.Fatalf("the server did not act on the command whose reply was lost: %q %v", v, err)
	}
	// One-shot: the next command goes through.
	if err := c.Set(ctx, key, "lost-reply-value", time.Minute).Err(); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
}
