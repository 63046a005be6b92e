// Package queue is the reference system's asynchronous transfer queue: a
// Redis Streams consumer group in a distributed deployment, an in-memory
// queue in the single-process one. Delivery is at least once: a message is
// redelivered until a consumer acknowledges it, and a message held by a
// consumer that died is claimed by another after MinIdle. Exactly-once
// effects come from the idempotency key each message carries, which the
// worker hands to the ledger.
package queue

import (
	"context"
	"errors"
	"time"
)

// Message is one queued job.
type Message struct {
	// ID is assigned by the queue.
	ID string
	// IdempotencyKey is the key the client sent with the original request.
	IdempotencyKey string
	// Principal is the verified subject that enqueued the job.
	Principal string
	// CorrelationID links the job to the request that created it.
	CorrelationID string
	// Body is the job payload (the transfer as JSON).
	Body []byte
	// Deliveries counts how often the message was handed out, 1 the first
	// time.
	Deliveries int64
}

// Handler processes one message. A nil error acknowledges it; an error
// leaves it pending for redelivery.
type Handler func(ctx context.Context, m Message) error

// Queue is the interface both implementations satisfy.
type Queue interface {
	Publish(ctx context.Context, m Message) (id string, err error)
	// Consume runs h on messages until ctx ends, as consumer name.
	Consume(ctx context.Context, name string, h Handler) error
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("queue: closed")

// Options tune redelivery.
type Options struct {
	// MinIdle is how long a delivered, unacknowledged message waits before
	// another consumer may claim it. Default 30 s.
	MinIdle time.Duration
	// Block is how long a consumer waits for new messages per poll.
	// Default 1 s.
	Block time.Duration
}

func (o Options) withDefaults() Options {
	if o.MinIdle <= 0 {
		o.MinIdle = 30 * time.Second
	}
	if o.Block <= 0 {
		o.Block = time.Second
	}
	return o
}
