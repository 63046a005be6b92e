package sessionstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucket = []byte("sessions")

// sweepBatch bounds the expired records one sweep deletes, so a sweep
// never holds the write lock for long.
const sweepBatch = 1000

// Bolt is the embedded durable store: one bbolt file, for one process
// (bbolt locks the file). Records survive restarts; expired ones are
// swept in the background. Leases are in process memory, which is
// enough because only this process opens the file.
type Bolt struct {
	db  *bolt.DB
	now func() time.Time

	mu    sync.Mutex
	locks map[string]chan struct{}

	stop chan struct{}
	done chan struct{}
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (or creates, mode 0600) the store at path. now is the
// clock (nil: time.Now); sweep is how often expired records are removed
// (0: every minute).
func OpenBolt(path string, now func() time.Time, sweep time.Duration) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("sessionstore: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("sessionstore: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	if sweep <= 0 {
		sweep = time.Minute
	}
	b := &Bolt{db: db, now: now, locks: make(map[string]chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go b.sweepLoop(sweep)
	return b, nil
}

func (b *Bolt) sweepLoop(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_, _ = b.Sweep()
		}
	}
}

// Sweep deletes up to a batch of expired records and reports how many.
func (b *Bolt) Sweep() (int, error) {
	now := b.now().UnixNano()
	n := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.First(); k != nil && n < sweepBatch; k, v = c.Next() {
			if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= now {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

// Get implements Store.
func (b *Bolt) Get(_ context.Context, key string) ([]byte, bool, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(key))
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= b.now().UnixNano() {
			return nil
		}
		out = append([]byte(nil), v[8:]...)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("sessionstore: %w", err)
	}
	return out, out != nil, nil
}

// Set implements Store. The write is fsynced before Set returns.
func (b *Bolt) Set(_ context.Context, key string, val []byte, ttl time.Duration) error {
	rec := make([]byte, 8+len(val))
	binary.BigEndian.PutUint64(rec, uint64(b.now().Add(ttl).UnixNano()))
	copy(rec[8:], val)
	if err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), rec) }); err != nil {
		return fmt.Errorf("sessionstore: %w", err)
	}
	return nil
}

// Delete implements Store.
func (b *Bolt) Delete(_ context.Context, key string) error {
	if err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(key)) }); err != nil {
		return fmt.Errorf("sessionstore: %w", err)
	}
	return nil
}

// Lock implements Store. The lease has no expiry of its own: a holder in
// this process always releases it (the caller defers unlock).
func (b *Bolt) Lock(ctx context.Context, key string, _ time.Duration) (func(), error) {
	for {
		b.mu.Lock()
		ch, held := b.locks[key]
		if !held {
			ch = make(chan struct{})
			b.locks[key] = ch
			b.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					b.mu.Lock()
					delete(b.locks, key)
					b.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrLocked, ctx.Err())
		}
	}
}

// Close stops the sweeper and closes the file.
func (b *Bolt) Close() error {
	select {
	case <-b.stop:
		return nil
	default:
	}
	close(b.stop)
	<-b.done
	return b.db.Close()
}
