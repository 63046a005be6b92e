package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/idempotency/storetest"
	"github.com/malai-sec/malai/internal/servicetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		r := servicetest.NewRedis(t)
		s, err := redisstore.New(redisstore.Config{Client: r.Client, Prefix: r.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNewValidates(t *testing.T) {
	if _, err := redisstore.New(redisstore.Config{}); err == nil {
		t.Fatal("New accepted a nil client")
	}
	r := servicetest.NewRedis(t)
	if _, err := redisstore.New(redisstore.Config{Client: r.Client, Backstop: -time.Second}); err == nil {
		t.Fatal("New accepted a negative backstop")
	}
}

// The stored key is the prefix plus the hashed key, and Redis's own expiry
// is the remaining retention plus the backstop.
func TestKeyLayoutAndBackstop(t *testing.T) {
	ctx := context.Background()
	r := servicetest.NewRedis(t)
	s, err := redisstore.New(redisstore.Config{Client: r.Client, Prefix: r.Prefix, Backstop: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := idempotency.Record{State: idempotency.StateInFlight, Token: 1, CreatedAt: now,
		LeaseUntil: now.Add(time.Minute), ExpiresAt: now.Add(2 * time.Hour)}
	if _, ok, err := s.Claim(ctx, "abc", rec, now); err != nil || !ok {
		t.Fatal(ok, err)
	}
	ttl, err := r.Client.PTTL(ctx, r.Prefix+"abc").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl < 2*time.Hour+59*time.Minute || ttl > 3*time.Hour {
		t.Fatalf("PTTL %v; want about 3h (2h retention + 1h backstop)", ttl)
	}
}

func TestCorruptRecordFailsClosed(t *testing.T) {
	ctx := context.Background()
	r := servicetest.NewRedis(t)
	s, err := redisstore.New(redisstore.Config{Client: r.Client, Prefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Client.Set(ctx, r.Prefix+"k", "garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := idempotency.Record{State: idempotency.StateInFlight, Token: 1, LeaseUntil: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour)}
	if _, ok, err := s.Claim(ctx, "k", rec, now); !errors.Is(err, idempotency.ErrCorruptRecord) || ok {
		t.Fatalf("Claim over a corrupt record = %v, %v; want ErrCorruptRecord", ok, err)
	}
}

func TestOutage(t *testing.T) {
	ctx := context.Background()
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	s, err := redisstore.New(redisstore.Config{Client: c, Prefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := idempotency.Record{State: idempotency.StateInFlight, Token: 1, LeaseUntil: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour)}
	p.Down()
	if _, ok, err := s.Claim(ctx, "k", rec, now); err == nil || ok {
		t.Fatalf("Claim during an outage = %v, %v; want an error", ok, err)
	}
	p.Up()
	if _, ok, err := s.Claim(ctx, "k", rec, now); err != nil || !ok {
		t.Fatalf("Claim after recovery = %v, %v", ok, err)
	}
}
