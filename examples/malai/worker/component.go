package worker

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
)

// ScopeTransfer is the scope the worker's service token carries: the
// ledger's internal transfer route requires it.
const ScopeTransfer = "ledger:transfer"

// Start runs the worker component: it consumes the queue (the embedded
// one the composition shares, or Redis) and hands each job to the ledger
// with its own service token. Its internal listener serves only /metrics
// and the health probes.
func Start(ctx context.Context, env *platform.Env) (func() error, error) {
	ledgerURL, err := env.Peer(platform.Ledger)
	if err != nil {
		return nil, err
	}
	// The queue reports its failures to the worker (set below, before
	// anything consumes), whose Ready answers /readyz.
	var w *Worker
	q := env.Queue
	if q == nil {
		if env.Redis == nil {
			return nil, errors.New("worker: no queue (set -redis-url, or run with the ledger in one process)")
		}
		opts := queue.Options{OnError: func(err error) { w.QueueError(err) }}
		if q, err = queue.NewRedis(ctx, env.Redis, env.RedisKey("transfers"), "workers", opts); err != nil {
			return nil, err
		}
	}
	client, err := env.ServiceClient(ctx, ScopeTransfer)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	w, err = New(Config{Queue: q, LedgerURL: ledgerURL, Client: client, Logger: env.Telemetry.Logger,
		TracerProvider: env.Telemetry.Tracer, MeterProvider: env.Telemetry.Meter, Alarm: env.Telemetry.Alarm,
		Name: fmt.Sprintf("worker-%s-%d", host, os.Getpid())})
	if err != nil {
		return nil, err
	}
	stopServe, err := platform.Serve(env, nil, platform.ServeOptions{Ready: func(context.Context) error { return w.Ready() }})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := w.Run(wctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			env.Telemetry.Logger.Error("worker stopped", "error", err.Error())
		}
	}()
	return func() error { cancel(); <-done; return stopServe() }, nil
}
