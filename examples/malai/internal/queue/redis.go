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
// Cluster). It is safe for concurrent use.
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

// Publish appends m to the stream.
func (q *Redis) Publish(ctx context.Context, m Message) (string, error) {
	id, err := q.c.XAdd(ctx, &redis.XAddArgs{Stream: q.stream, Values: map[string]any{
		"key": m.IdempotencyKey, "principal": m.Principal, "cid": m.CorrelationID, "body": m.Body,
	}}).Result()
	if err != nil {
		return "", fmt.Errorf("queue: publish: %w", err)
	}
	return id, nil
}

func decode(x redis.XMessage) Message {
	s := func(k string) string { v, _ := x.Values[k].(string); return v }
	return Message{ID: x.ID, IdempotencyKey: s("key"), Principal: s("principal"), CorrelationID: s("cid"), Body: []byte(s("body"))}
}

// Consume reads new messages and reclaims ones idle past MinIdle.
func (q *Redis) Consume(ctx context.Context, name string, h Handler) error {
	for ctx.Err() == nil {
		// Reclaim messages a dead consumer left pending.
		claimed, _, err := q.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: q.stream, Group: q.group, Consumer: name, MinIdle: q.opts.MinIdle, Start: "0-0", Count: 10,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			return fmt.Errorf("queue: autoclaim: %w", err)
		}
		for _, x := range claimed {
			q.handle(ctx, x, h, true)
		}
		res, err := q.c.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: q.group, Consumer: name, Streams: []string{q.stream, ">"}, Count: 10, Block: q.opts.Block,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("queue: read: %w", err)
		}
		for _, s := range res {
			for _, x := range s.Messages {
				q.handle(ctx, x, h, false)
			}
		}
	}
	return ctx.Err()
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
		// is done, and an unacked message would only be redelivered.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		q.c.XAck(actx, q.stream, q.group, x.ID)
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
