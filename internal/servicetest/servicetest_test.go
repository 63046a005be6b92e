package servicetest

import (
	"context"
	"strings"
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

// The cluster really is three masters sharing the slots: keys of different
// hash slots land on different nodes, a multi-key command across slots is
// refused with CROSSSLOT, and hash-tagged keys share a slot.
func TestRedisClusterSpreadsSlots(t *testing.T) {
	rc := NewRedisCluster(t)
	c := rc.NewClient(t)
	ctx := context.Background()
	if n, err := c.ClusterShards(ctx).Result(); err != nil || len(n) != 3 {
		t.Fatalf("CLUSTER SHARDS = %d shards, %v; want 3", len(n), err)
	}
	owners := map[string]bool{}
	for i := range 30 {
		k := "spread:" + Unique() + ":" + string(rune('a'+i%26))
		if err := c.Set(ctx, k, "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := c.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		owners[n.Options().Addr] = true
	}
	if len(owners) != 3 {
		t.Fatalf("30 keys landed on %d nodes, want all 3", len(owners))
	}
	err := c.Do(ctx, "MSET", "a", "1", "b", "2").Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("MSET over two slots = %v, want CROSSSLOT", err)
	}
	if err := c.Do(ctx, "MSET", "{t}a", "1", "{t}b", "2").Err(); err != nil {
		t.Fatalf("MSET of hash-tagged keys: %v", err)
	}
}
