package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/servicetest"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/ratelimit/storetest"
)

// TestClusterConformance runs the store suite against a three-master Redis
// Cluster, on the caller's clock and on the servers' (each script reads its
// own node's TIME there), with the deny cache on and off.
func TestClusterConformance(t *testing.T) {
	rc := servicetest.NewRedisCluster(t)
	for _, tc := range []struct {
		name      string
		denyCache int
	}{{"deny cache", 0}, {"no deny cache", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Store {
				st, err := redisstore.New(redisstore.Config{Client: rc.NewClient(t), Prefix: "rl:" + servicetest.Unique() + ":", Now: now, DenyCacheSize: tc.denyCache})
				if err != nil {
					t.Fatal(err)
				}
				return st
			})
		})
	}
	t.Run("server clock", func(t *testing.T) {
		st, err := redisstore.New(redisstore.Config{Client: rc.NewClient(t), Prefix: "rl:" + servicetest.Unique() + ":", DenyCacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		l := ratelimit.Limit{Interval: time.Hour, Burst: 2}
		for i, want := range []bool{true, true, false} {
			r, err := st.Allow(context.Background(), "k", l, 1)
			if err != nil || r.Allowed != want {
				t.Fatalf("call %d: %+v, %v; want allowed=%v", i, r, err, want)
			}
		}
	})
}
