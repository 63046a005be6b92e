package queue

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Memory is an in-process queue with the same at-least-once semantics as
// the Redis one: a message whose handler fails is redelivered after
// MinIdle. It is safe for concurrent use.
type Memory struct {
	opts   Options
	now    func() time.Time
	mu     sync.Mutex
	seq    int64
	ready  []Message
	held   map[string]heldMsg
	notify chan struct{}
}

type heldMsg struct {
	m     Message
	since time.Time
}

// NewMemory returns an empty queue. now may be nil (time.Now).
func NewMemory(opts Options, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{opts: opts.withDefaults(), now: now, held: map[string]heldMsg{}, notify: make(chan struct{}, 1)}
}

// Durable reports false: the queue is lost with the process.
func (q *Memory) Durable() bool { return false }

// Len reports the messages published and not yet acknowledged.
func (q *Memory) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ready) + len(q.held)
}

// Publish enqueues m, or returns ErrFull.
func (q *Memory) Publish(_ context.Context, m Message) (string, error) {
	q.mu.Lock()
	if int64(len(q.ready)+len(q.held)) >= q.opts.MaxLen {
		q.mu.Unlock()
		return "", ErrFull
	}
	q.seq++
	m.ID = strconv.FormatInt(q.seq, 10)
	m.Deliveries = 0
	q.ready = append(q.ready, m)
	q.mu.Unlock()
	q.wake()
	return m.ID, nil
}

func (q *Memory) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// next hands out a ready message, or a held one idle past MinIdle.
func (q *Memory) next() (Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for id, h := range q.held {
		if now.Sub(h.since) >= q.opts.MinIdle {
			h.m.Deliveries++
			q.held[id] = heldMsg{m: h.m, since: now}
			return h.m, true
		}
	}
	if len(q.ready) == 0 {
		return Message{}, false
	}
	m := q.ready[0]
	q.ready = q.ready[1:]
	m.Deliveries++
	q.held[m.ID] = heldMsg{m: m, since: now}
	return m, true
}

func (q *Memory) ack(id string) {
	q.mu.Lock()
	delete(q.held, id)
	q.mu.Unlock()
}

// Pending reports messages delivered but not acknowledged.
func (q *Memory) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.held)
}

// Consume processes messages until ctx is done.
func (q *Memory) Consume(ctx context.Context, _ string, h Handler) error {
	t := time.NewTicker(q.opts.Block)
	defer t.Stop()
	for {
		for {
			m, ok := q.next()
			if !ok {
				break
			}
			if err := h(ctx, m); err == nil {
				q.ack(m.ID)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.notify:
		case <-t.C:
		}
	}
}
