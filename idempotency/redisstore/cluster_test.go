package redisstore_test

import (
	"testing"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/idempotency/storetest"
	"github.com/malai-sec/malai/internal/servicetest"
)

// TestClusterConformance runs the store suite against a three-master Redis
// Cluster: every script touches one key, so one slot.
func TestClusterConformance(t *testing.T) {
	rc := servicetest.NewRedisCluster(t)
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s, err := redisstore.New(redisstore.Config{Client: rc.NewClient(t), Prefix: "idem:" + servicetest.Unique() + ":"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
