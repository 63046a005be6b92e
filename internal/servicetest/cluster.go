package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvRedisServer names the redis-server binary [NewRedisCluster] starts;
// by default the one on PATH.
const EnvRedisServer = "MALAI_TEST_REDIS_SERVER"

// clusterMasters is the size of the cluster [NewRedisCluster] builds: the
// smallest Redis Cluster with every slot range on its own master.
const clusterMasters = 3

// RedisCluster is a Redis Cluster of three masters (no replicas) that a
// test started on loopback ports, each node in its own directory under
// the test's temporary directory. Keys spread over the nodes by hash slot,
// so a store whose script touches two keys of different slots fails with
// CROSSSLOT here as it would for a user. The nodes are stopped at cleanup.
type RedisCluster struct {
	// Addrs are the nodes' host:port, one per master.
	Addrs []string
}

// NewRedisCluster starts three redis-server processes in cluster mode on
// free loopback ports, assigns the 16384 slots over them, joins them and
// waits until every node reports cluster_state:ok. Without a redis-server
// binary the test skips (fails under MALAI_REQUIRE_SERVICES=1). It takes
// about a second; start one per top-level test and give each subtest its
// own key prefix ([Unique]).
func NewRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	bin := os.Getenv(EnvRedisServer)
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		Unavailable(t, "Redis Cluster test skipped: no %s binary (set %s or install redis-server): %v", bin, EnvRedisServer, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := &RedisCluster{}
	ports := make([]int, clusterMasters)
	for i := range clusterMasters {
		ports[i] = startClusterNode(t, path, filepath.Join(t.TempDir(), "node"+strconv.Itoa(i)))
		rc.Addrs = append(rc.Addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])))
	}
	nodes := make([]*redis.Client, clusterMasters)
	for i, a := range rc.Addrs {
		nodes[i] = redis.NewClient(&redis.Options{Addr: a})
		defer nodes[i].Close()
	}
	// Slots 0..16383 in three contiguous ranges, as redis-cli --cluster
	// create assigns them.
	const slots = 16384
	for i, c := range nodes {
		lo, hi := i*slots/clusterMasters, (i+1)*slots/clusterMasters-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("redis cluster: ADDSLOTSRANGE %d-%d on %s: %v", lo, hi, rc.Addrs[i], err)
		}
	}
	for i := 1; i < clusterMasters; i++ {
		if err := nodes[0].ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(ports[i])).Err(); err != nil {
			t.Fatalf("redis cluster: MEET %s: %v", rc.Addrs[i], err)
		}
	}
	for i, c := range nodes {
		if err := waitClusterOK(ctx, c); err != nil {
			t.Fatalf("redis cluster: node %s never reached cluster_state:ok: %v", rc.Addrs[i], err)
		}
	}
	return rc
}

// NewClient returns a cluster client seeded with every node, closed at
// cleanup. It has followed the cluster's slot map before it is returned.
func (rc *RedisCluster) NewClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
		t.Fatalf("redis cluster client: %v", err)
	}
	return c
}

// startClusterNode starts one cluster-enabled redis-server in dir on a
// free port whose cluster bus port (port+10000) is free too, retrying on
// the race where another process takes the port first. The process is
// killed at cleanup.
func startClusterNode(t testing.TB, bin, dir string) int {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 5 {
		port, err := freeClusterPort()
		if err != nil {
			lastErr = err
			continue
		}
		var out bytes.Buffer
		cmd := exec.Command(bin,
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--protected-mode", "yes")
		cmd.Stdout, cmd.Stderr = &out, &out
		setDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatalf("redis cluster: start %s: %v", bin, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if err := waitPing(port, exited); err != nil {
			stop()
			lastErr = fmt.Errorf("%w; output: %s", err, strings.TrimSpace(out.String()))
			continue
		}
		t.Cleanup(stop)
		return port
	}
	t.Fatalf("redis cluster: no node started after 5 attempts: %v", lastErr)
	return 0
}

// freeClusterPort returns a loopback port free now, with port+10000 (the
// cluster bus) free as well.
func freeClusterPort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			ln.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		ln.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no loopback port with a free cluster bus port")
}

// waitPing waits up to 10 s for the node on port to answer, or for it to
// exit.
func waitPing(port int, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited", port)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d does not answer: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitClusterOK polls CLUSTER INFO until the node sees every slot served
// and all three masters known.
func waitClusterOK(ctx context.Context, c *redis.Client) error {
	var last string
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") &&
			strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(clusterMasters)) {
			return nil
		}
		last = info
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last CLUSTER INFO: %s", ctx.Err(), strings.Join(strings.Fields(last), " "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
