// Package queue is the reference system's asynchronous transfer queue: a
// Redis Streams consumer group in a distributed deployment, an in-memory
// queue in the single-process one. Delivery is at least once: a message is
// redelivered until a consumer acknowledges it, and a message held by a
// consumer that died is claimed by another after MinIdle. Exactly-once
// effects come from the job each message names, which the ledger runs at
// most once (its outcome is in the audit chain).
//
// The queue is bounded (Options.MaxLen): Publish on a full queue returns
// [ErrFull]. A consumer survives store errors: Consume backs off and keeps
// polling until its context ends, reporting each failure (and the
// recovery) to Options.OnError, so a worker's readiness can say the queue
// is unreachable. The in-memory queue is not durable ([Memory.Durable]):
// whoever publishes must publish again what it still needs after a
// restart (the ledger republishes every pending job from its chain).
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
	// TraceParent is the W3C traceparent of the span that queued the job
	// (empty: none), so the consumer continues the request's trace.
	TraceParent string
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

// Errors.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("queue: closed")
	// ErrFull: the queue holds MaxLen messages not yet acknowledged.
	ErrFull = errors.New("queue: full")
)

// DefaultMaxLen bounds a queue when Options.MaxLen is zero.
const DefaultMaxLen = 100_000

// Options tune redelivery.
type Options struct {
	// MinIdle is how long a delivered, unacknowledged message waits before
	// another consumer may claim it. Default 30 s.
	MinIdle time.Duration
	// Block is how long a consumer waits for new messages per poll.
	// Default 1 s.
	Block time.Duration
	// MaxLen bounds the messages published and not yet acknowledged;
	// Publish beyond it returns ErrFull. Default DefaultMaxLen.
	MaxLen int64
	// OnError, if set, is called by Consume with every store failure (it
	// then backs off and polls again) and with nil once a poll succeeds
	// after failures.
	OnError func(error)
	// MaxBackoff caps the wait between failed polls. Default 5 s.
	MaxBackoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.MinIdle <= 0 {
		o.MinIdle = 30 * time.Second
	}
	if o.Block <= 0 {
		o.Block = time.Second
	}
	if o.MaxLen <= 0 {
		o.MaxLen = DefaultMaxLen
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	return o
}
