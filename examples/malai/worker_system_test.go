package main

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/internal/servicetest"
)

// TestWorkerReadinessFollowsTheQueue: with the queue in Redis, the
// worker's /readyz answers 503 while Redis is unreachable and ready again
// once it is back, without a restart.
func TestWorkerReadinessFollowsTheQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	u, err := url.Parse(servicetest.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	sys, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 10_000,
		RedisURL: u.String(), RedisPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	mon, err := sys.ComponentClient(platform.Monitor)
	if err != nil {
		t.Fatal(err)
	}
	status := func() int {
		resp, err := mon.Get(sys.URLs[platform.Worker] + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, "the worker to be ready", func() bool { return status() == http.StatusOK })
	p.Down()
	eventually(t, "the worker to report the queue down", func() bool { return status() == http.StatusServiceUnavailable })
	p.Up()
	eventually(t, "the worker to be ready again", func() bool { return status() == http.StatusOK })
}
