package ratelimitbench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/redisstore"
)

// A throwaway redis-server, started on first use and killed by TestMain,
// so INFO commandstats counts only this benchmark's calls. The shared test
// server is never touched.
var (
	srvOnce sync.Once
	srvCmd  *exec.Cmd
	srvAddr string
	srvErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if srvCmd != nil && srvCmd.Process != nil {
		srvCmd.Process.Kill()
		srvCmd.Wait()
	}
	os.Exit(code)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startRedis() {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		srvErr = fmt.Errorf("redis-server not installed: %w", err)
		return
	}
	port, err := freePort()
	if err != nil {
		srvErr = err
		return
	}
	srvAddr = "127.0.0.1:" + strconv.Itoa(port)
	srvCmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--dir", os.TempDir())
	if srvErr = srvCmd.Start(); srvErr != nil {
		return
	}
	c := redis.NewClient(&redis.Options{Addr: srvAddr})
	defer c.Close()
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		<-time.After(50 * time.Millisecond) // waiting for a child process to listen
	}
	srvErr = fmt.Errorf("throwaway redis-server did not answer: %w", err)
}

func redisClient(b *testing.B) *redis.Client {
	srvOnce.Do(startRedis)
	if srvErr != nil {
		b.Skip(srvErr)
	}
	c := redis.NewClient(&redis.Options{Addr: srvAddr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { c.Close() })
	return c
}

// infoFields returns the numeric fields of an INFO section.
func infoFields(b *testing.B, c *redis.Client, section string) map[string]float64 {
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = n
			continue
		}
		// cmdstat_x:calls=1,usec=2,... → cmdstat_x.calls, cmdstat_x.usec
		for kv := range strings.SplitSeq(v, ",") {
			kk, vv, _ := strings.Cut(kv, "=")
			if n, err := strconv.ParseFloat(vv, 64); err == nil {
				out[k+"."+kk] = n
			}
		}
	}
	return out
}

// sent counts the commands a client sends itself (not those a script
// calls on the server), by name.
type sent struct {
	mu sync.Mutex
	n  map[string]float64
}

func (c *sent) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *sent) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.n[cmd.Name()]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (c *sent) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// serverCost resets the server's command statistics, runs f, and
// reports the server's cost per benchmark operation two ways:
//   - redis-µs/op: the time Redis spent inside the commands the client
//     sent (INFO commandstats). A script's time includes the commands it
//     calls; the time of a command the client sent itself (a plain SET
//     beside the SETs scripts call) is its share of that command's total.
//     Redis measures it as elapsed time inside the command, so a busy
//     machine inflates it.
//   - redis-cpu-µs/op: the server main thread's user+sys CPU time (INFO
//     cpu, from getrusage) per operation, which includes reading and
//     writing the request and is immune to being descheduled.
//
// It also reports scripts/op and roundtrips/op (commands sent; no
// pipelining here, so one round trip each).
func serverCost(b *testing.B, c *redis.Client, f func()) {
	if err := c.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	counter := &sent{n: map[string]float64{}}
	c.AddHook(counter)
	cpu0 := infoFields(b, c, "cpu")
	counter.mu.Lock()
	clear(counter.n)
	counter.mu.Unlock()
	f()
	counter.mu.Lock()
	mine := maps.Clone(counter.n)
	counter.mu.Unlock()
	cpu1 := infoFields(b, c, "cpu")
	st := infoFields(b, c, "commandstats")
	var usec, trips float64
	for name, k := range mine {
		if name == "info" || name == "config" {
			continue
		}
		trips += k
		if calls := st["cmdstat_"+name+".calls"]; calls > 0 {
			usec += st["cmdstat_"+name+".usec"] * min(k/calls, 1)
		}
	}
	n := float64(b.N)
	b.ReportMetric(usec/n, "redis-µs/op")
	b.ReportMetric((mine["evalsha"]+mine["eval"])/n, "scripts/op")
	b.ReportMetric(trips/n, "roundtrips/op")
	cpu := func(m map[string]float64) float64 {
		return m["used_cpu_user_main_thread"] + m["used_cpu_sys_main_thread"]
	}
	b.ReportMetric((cpu(cpu1)-cpu(cpu0))*1e6/n, "redis-cpu-µs/op")
}

const redisKeys = 1000

// Sub-benchmarks: impl=malai is ratelimit/redisstore, impl=peer is
// go-redis/redis_rate/v10, impl=ping is one PING per operation: the round
// trip every Redis-backed decision pays, the latency floor.
//
// Allowed decisions: 1000 keys at up to 100k per second each, called in
// turn, so every call is admitted and each key is at or under its rate
// when called again: the well-behaved client, the common case.
func BenchmarkRedisDecision(b *testing.B) {
	ctx := context.Background()
	ks := make([]string, redisKeys)
	for i := range ks {
		ks[i] = "ip:192.0.2." + strconv.Itoa(i%256) + "/" + strconv.Itoa(i)
	}
	b.Run("impl=malai", func(b *testing.B) {
		c := redisClient(b)
		st, err := redisstore.New(redisstore.Config{Client: c, Prefix: "malai:"})
		if err != nil {
			b.Fatal(err)
		}
		l := ratelimit.Limit{Interval: 10 * time.Microsecond, Burst: 100_000}
		b.ReportAllocs()
		serverCost(b, c, func() {
			i := 0
			for b.Loop() {
				r, err := st.Allow(ctx, ks[i%redisKeys], l, 1)
				if err != nil || !r.Allowed {
					b.Fatal(r, err)
				}
				i++
			}
		})
	})
	b.Run("impl=ping", func(b *testing.B) {
		c := redisClient(b)
		b.ReportAllocs()
		serverCost(b, c, func() {
			for b.Loop() {
				if err := c.Ping(ctx).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("impl=peer", func(b *testing.B) {
		c := redisClient(b)
		lim := redis_rate.NewLimiter(c)
		l := redis_rate.Limit{Rate: 100_000, Burst: 100_000, Period: time.Second}
		b.ReportAllocs()
		serverCost(b, c, func() {
			i := 0
			for b.Loop() {
				r, err := lim.Allow(ctx, "rr:"+ks[i%redisKeys], l)
				if err != nil || r.Allowed != 1 {
					b.Fatal(r, err)
				}
				i++
			}
		})
	})
}

// A busy key: one key called far faster than its interval (one per
// second, burst 10^9), so its TAT is always ahead of now and every call
// takes the script's longer path, still admitted.
func BenchmarkRedisBusyKey(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=malai", func(b *testing.B) {
		c := redisClient(b)
		st, _ := redisstore.New(redisstore.Config{Client: c, Prefix: "malai:busy:" + strconv.Itoa(b.N) + ":"})
		l := ratelimit.Limit{Interval: time.Second, Burst: 1_000_000_000}
		st.Allow(ctx, "k", l, 1)
		b.ReportAllocs()
		serverCost(b, c, func() {
			for b.Loop() {
				if r, err := st.Allow(ctx, "k", l, 1); err != nil || !r.Allowed {
					b.Fatal(r, err)
				}
			}
		})
	})
	b.Run("impl=peer", func(b *testing.B) {
		c := redisClient(b)
		lim := redis_rate.NewLimiter(c)
		l := redis_rate.Limit{Rate: 1, Burst: 1_000_000_000, Period: time.Second}
		key := "rr:busy:" + strconv.Itoa(b.N)
		lim.Allow(ctx, key, l)
		b.ReportAllocs()
		serverCost(b, c, func() {
			for b.Loop() {
				if r, err := lim.Allow(ctx, key, l); err != nil || r.Allowed != 1 {
					b.Fatal(r, err)
				}
			}
		})
	})
}

// Over-limit keys: an abusive client keeps calling after its limit is
// spent. Malai answers from its local denial cache; redis_rate asks Redis.
func BenchmarkRedisOverLimit(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=malai", func(b *testing.B) {
		c := redisClient(b)
		st, _ := redisstore.New(redisstore.Config{Client: c, Prefix: "malai:"})
		l := ratelimit.Limit{Interval: time.Hour, Burst: 1}
		st.Allow(ctx, "abuser", l, 1)
		b.ReportAllocs()
		serverCost(b, c, func() {
			for b.Loop() {
				if r, err := st.Allow(ctx, "abuser", l, 1); err != nil || r.Allowed {
					b.Fatal(r, err)
				}
			}
		})
	})
	b.Run("impl=peer", func(b *testing.B) {
		c := redisClient(b)
		lim := redis_rate.NewLimiter(c)
		l := redis_rate.Limit{Rate: 1, Burst: 1, Period: time.Hour}
		lim.Allow(ctx, "rr:abuser", l)
		b.ReportAllocs()
		serverCost(b, c, func() {
			for b.Loop() {
				if r, err := lim.Allow(ctx, "rr:abuser", l); err != nil || r.Allowed != 0 {
					b.Fatal(r, err)
				}
			}
		})
	})
}
