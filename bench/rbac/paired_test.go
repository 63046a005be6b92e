package rbacbench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	stringadapter "github.com/casbin/casbin/v2/persist/string-adapter"
	"github.com/malai-sec/malai/rbac"
)

// BenchmarkPaired times Malai and its peer in alternating blocks inside
// one benchmark, so that both see the same machine load, and reports
// each one's ns/op and their ratio ("malai/peer"), in wall time and in
// the benchmark thread's CPU time ("cpu-…"), which leaves out the time
// spent waiting for a core. On a shared machine whose load swings
// between runs, these ratios are steadier than one computed from two
// separate benchmarks.
//
//   - uncached: the middleware with DisableCache vs Casbin's Enforce.
//   - uncached-no-body: the same with an ErrorHandler that writes only the
//     status, isolating the decision from writing the 403 problem body.
//   - uncached-explain: the same with OnDecision (EnforceEx) vs EnforceEx.
//   - miss: a cache-missing request (lookup, Enforce, insert) vs Enforce.
//   - cached: a cache hit through the middleware vs a hit in Casbin's
//     SyncedCachedEnforcer.
func BenchmarkPaired(b *testing.B) {
	m, err := model.NewModelFromString(rbac.RBAC.Text())
	if err != nil {
		b.Fatal(err)
	}
	plain, err := casbin.NewEnforcer(m, stringadapter.NewAdapter(policy()))
	if err != nil {
		b.Fatal(err)
	}
	cachedPeer, err := casbin.NewSyncedCachedEnforcer(m, stringadapter.NewAdapter(policy()))
	if err != nil {
		b.Fatal(err)
	}
	hook := func(*http.Request, rbac.Decision) {}
	cases := []struct {
		name  string
		cfg   rbac.Config
		users int
		block int
		peer  func(sub, obj, act string) bool
	}{
		{"uncached", rbac.Config{DisableCache: true}, 1, 4,
			func(s, o, a string) bool { ok, _ := plain.Enforce(s, o, a); return ok }},
		{"uncached-no-body", rbac.Config{DisableCache: true, ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(403) }}, 1, 4,
			func(s, o, a string) bool { ok, _ := plain.Enforce(s, o, a); return ok }},
		{"uncached-explain", rbac.Config{DisableCache: true, OnDecision: hook}, 1, 4,
			func(s, o, a string) bool { ok, _, _ := plain.EnforceEx(s, o, a); return ok }},
		{"miss", rbac.Config{CacheSize: 2}, 4, 4,
			func(s, o, a string) bool { ok, _ := plain.Enforce(s, o, a); return ok }},
		{"cached", rbac.Config{}, 1, 512,
			func(s, o, a string) bool { ok, _ := cachedPeer.Enforce(s, o, a); return ok }},
	}
	for _, c := range cases {
		cfg := c.cfg
		cfg.Enforcer, cfg.Subject = syncedEnforcer(b), subject
		authz, err := rbac.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, q := range queries {
			b.Run(c.name+"/"+q.name, func(b *testing.B) {
				var reached bool
				h := authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
				reqs := make([]*http.Request, c.users)
				subs := make([]string, c.users)
				for i := range reqs {
					user := fmt.Sprint(q.user, i*10)
					subs[i] = rbac.UserSubject(user)
					req, err := http.NewRequestWithContext(context.WithValue(context.Background(), claimsKey{}, user), q.act, "/x", nil)
					if err != nil {
						b.Fatal(err)
					}
					req.Pattern = q.pattern
					reqs[i] = req
				}
				w := &discard{h: http.Header{}}
				ours := func(n int) {
					for i := range n {
						reached = false
						h.ServeHTTP(w, reqs[i%c.users])
						if reached != q.want {
							b.Fatalf("reached = %v", reached)
						}
					}
				}
				peer := func(n int) {
					for i := range n {
						// The peer gets the subject built per call too, as
						// the middleware's Subject function does.
						sub := "user:" + subs[i%c.users][len("user:"):]
						if c.peer(sub, q.obj, q.act) != q.want {
							b.Fatal("peer decided wrongly")
						}
					}
				}
				ours(c.block) // warm both caches
				peer(c.block)
				// Wall time and this thread's CPU time per block; CPU
				// time leaves out the time the thread waited for a core.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var wall, cpu [2]time.Duration // [0] ours, [1] peer
				run := [2]func(int){ours, peer}
				rounds := 0
				b.ReportAllocs()
				for b.Loop() {
					first := rounds % 2 // alternate which side goes first
					for _, side := range [2]int{first, 1 - first} {
						w0, c0 := time.Now(), threadCPU(b)
						run[side](c.block)
						cpu[side] += threadCPU(b) - c0
						wall[side] += time.Since(w0)
					}
					rounds++
				}
				n := float64(rounds * c.block)
				b.ReportMetric(float64(wall[0].Nanoseconds())/n, "malai-ns/op")
				b.ReportMetric(float64(wall[1].Nanoseconds())/n, "peer-ns/op")
				b.ReportMetric(float64(wall[0])/float64(wall[1]), "malai/peer")
				b.ReportMetric(float64(cpu[0].Nanoseconds())/n, "malai-cpu-ns/op")
				b.ReportMetric(float64(cpu[1].Nanoseconds())/n, "peer-cpu-ns/op")
				b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "cpu-malai/peer")
			})
		}
	}
}
