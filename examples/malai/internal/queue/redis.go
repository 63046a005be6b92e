package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a queue on a Redis Stream with one consumer group. It works
// with any redis.UniversalClient (the stream is one key, so one slot in a
// Cluster). An acknowledged message is deleted from the stream, so the
// stream's length is the number of messages not yet acknowledged, which
// MaxLen bounds. It is safe for concurrent use.
type Redis struct {
	c      redis.UniversalClient
	stream string
	group  string
	opts   Options
}

// NewRedis creates the stream and group if needed.
func NewRedis(ctx context.Context, c redis.UniversalClient, stream, group string, opts Options) (*Redis, error) {
	err := c.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return nil, fmt.Errorf("queue: create group: %w", err)
	}
	return &Redis{c: c, stream: stream, group: group, opts: opts.withDefaults()}, nil
}

// Durable reports true: the stream survives a restart of its consumers
// (as far as Redis's own persistence does).
func (q *Redis) Durable() bool { return true }

// publish appends a message unless the stream holds ARGV[1] or more.
var publish = redis.NewScript(`
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'key', ARGV[2], 'principal', ARGV[3], 'cid', ARGV[4], 'body', ARGV[5], 'tp', ARGV[6])
`)

// Publish appends m to the stream, or returns ErrFull.
func (q *Redis) Publish(ctx context.Context, m Message) (string, error) {
	id, err := publish.Run(ctx, q.c, []string{q.stream}, q.opts.MaxLen, m.IdempotencyKey, m.Principal, m.CorrelationID, m.Body, m.TraceParent).Text()
	if errors.Is(err, redis.Nil) {
		return "", ErrFull
	}
	if err != nil {
		return "", fmt.Errorf("queue: publish: %w", err)
	}
	return id, nil
}

// Len reports the messages published and not yet acknowledged.
func (q *Redis) Len(ctx context.Context) (int64, error) {
	n, err := q.c.XLen(ctx, q.stream).Result()
	if err != nil {
		return 0, fmt.Errorf("queue: len: %w", err)
	}
	return n, nil
}

func decode(x redis.XMessage) Message {
	s := func(k string) string { v, _ := x.Values[k].(string); return v }
	return Message{ID: x.ID, IdempotencyKey: s("key"), Principal: s("principal"), CorrelationID: s("cid"), TraceParent: s("tp"), Body: []byte(s("body"))}
}

// Consume reads new messages and reclaims ones idle past MinIdle until ctx
// ends. A store failure does not stop it: it is reported to OnError and
// the next poll waits a backoff (doubling up to MaxBackoff).
func (q *Redis) Consume(ctx context.Context, name string, h Handler) error {
	backoff, failing := 50*time.Millisecond, false
	for ctx.Err() == nil {
		err := q.poll(ctx, name, h)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			if failing {
				q.opts.OnError(nil)
			}
			backoff, failing = 50*time.Millisecond, false
			continue
		}
		failing = true
		q.opts.OnError(err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(backoff*2, q.opts.MaxBackoff)
	}
	return ctx.Err()
}

// poll reclaims idle messages, then reads new ones, handling each.
func (q *Redis) poll(ctx context.Context, name string, h Handler) error {
	// Reclaim messages a dead consumer (or a failed handler) left pending.
	claimed, _, err := q.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: q.stream, Group: q.group, Consumer: name, MinIdle: q.opts.MinIdle, Start: "0-0", Count: 10,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("queue: autoclaim: %w", err)
	}
	for _, x := range claimed {
		q.handle(ctx, x, h, true)
	}
	res, err := q.c.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: q.group, Consumer: name, Streams: []string{q.stream, ">"}, Count: 10, Block: q.opts.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			// The stream or group vanished (a flushed Redis): recreate them.
			if cerr := q.c.XGroupCreateMkStream(ctx, q.stream, q.group, "0").Err(); cerr != nil && !strings.Contains(cerr.Error(), "BUSYGROUP") {
				return fmt.Errorf("queue: recreate group: %w", cerr)
			}
		}
		return fmt.Errorf("queue: read: %w", err)
	}
	for _, s := range res {
		for _, x := range s.Messages {
			q.handle(ctx, x, h, false)
		}
	}
	return nil
}

func (q *Redis) handle(ctx context.Context, x redis.XMessage, h Handler, reclaimed bool) {
	m := decode(x)
	m.Deliveries = 1
	if reclaimed {
		// XPENDING gives the exact count; one extra round trip only on the
		// rare reclaim path.
		if p, err := q.c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.stream, Group: q.group, Start: x.ID, End: x.ID, Count: 1}).Result(); err == nil && len(p) == 1 {
			m.Deliveries = p[0].RetryCount
		}
	}
	if err := h(ctx, m); err == nil {
		// Ack even when shutdown cancelled ctx during the handler: the work
		// is done, and an unacked message would only be redelivered. The
		// entry is deleted so that the stream's length counts only what is
		// left to do. A lost ack means one more (harmless) delivery.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = q.c.TxPipelined(actx, func(p redis.Pipeliner) error {
			p.XAck(actx, q.stream, q.group, x.ID)
			p.XDel(actx, q.stream, x.ID)
			return nil
		})
		cancel()
	}
}

// Pending reports messages delivered but not acknowledged.
func (q *Redis) Pending(ctx context.Context) (int64, error) {
	p, err := q.c.XPending(ctx, q.stream, q.group).Result()
	if err != nil {
		return 0, err
	}
	return p.Count, nil
}

var (
	_ Queue = (*Redis)(nil)
	_ Queue = (*Memory)(nil)
)
