package ledger

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/keyring"
)

func TestAsyncJobLifecycle(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	body := transferBody("acc-a", "acc-b", 300)
	r := e.do("POST", "/v1/transfers/async", alice, body, "job-1")
	var acc jobAccepted
	r.json(t, &acc)
	loc := r.header.Get("Location")
	if r.code != 202 || acc.Status != "queued" || loc != "/v1/jobs/"+acc.Job {
		t.Fatalf("async: %s Location %q", r, loc)
	}
	st := e.jobStatus(alice, loc)
	if st.Status != book.JobQueued || st.Result != nil {
		t.Fatalf("before the worker: %+v", st)
	}
	// Only the owner sees the job; anyone else gets the same 404 as for a
	// job that does not exist.
	if r := e.do("GET", loc, e.user("bob"), "", ""); r.code != 404 {
		t.Fatalf("someone else's job: %s", r)
	}
	if r := e.do("GET", "/v1/jobs/job-nope", alice, "", ""); r.code != 404 {
		t.Fatalf("missing job: %s", r)
	}
	// The sync route with the same key and body replays the acceptance;
	// with another body it is refused at once.
	if r := e.do("POST", "/v1/transfers", alice, body, "job-1"); r.code != 202 || !r.replayed() || r.header.Get("Location") != loc {
		t.Fatalf("sync retry of an async key: %s", r)
	}
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 999), "job-1"); r.code != 422 {
		t.Fatalf("sync reuse with another body: %s", r)
	}
	// The other way round: a key first used synchronously is refused on
	// the async route with another body, and replays with the same one;
	// no job is queued for either.
	sb := transferBody("acc-a", "acc-b", 10)
	if r := e.do("POST", "/v1/transfers", alice, sb, "sync-first"); r.code != 201 {
		t.Fatalf("sync: %s", r)
	}
	if r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 11), "sync-first"); r.code != 422 {
		t.Fatalf("async reuse of a sync key with another body: %s", r)
	}
	if r := e.do("POST", "/v1/transfers/async", alice, sb, "sync-first"); r.code != 201 || !r.replayed() {
		t.Fatalf("async retry of a sync key: %s", r)
	}
	if n := e.queueLen(); n != 1 {
		t.Fatalf("%d jobs queued, want only job-1's", n)
	}
	msg := e.nextJob()
	for i := range 3 { // redelivered: runs once
		w := e.runJob(msg.Body)
		var ws JobStatus
		w.json(t, &ws)
		if w.code != 200 || ws.Status != book.JobSucceeded || ws.Result == nil || ws.Result.Status != 201 {
			t.Fatalf("delivery %d: %s", i, w)
		}
	}
	st = e.jobStatus(alice, loc)
	var tr book.TransferPosted
	if st.Status != book.JobSucceeded || st.Result == nil || json.Unmarshal(st.Result.Body, &tr) != nil || tr.Amount != 300 {
		t.Fatalf("after the worker: %+v", st)
	}
	if got := e.svc().Balances()["acc-a"]; got != 690 {
		t.Fatalf("balance %d", got)
	}
	// An async transfer that fails is reported with its problem.
	r = e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 690), "job-2")
	r2 := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 100), "drain")
	if r.code != 202 || r2.code != 201 {
		t.Fatalf("setup: %s %s", r, r2)
	}
	e.runJob(e.nextJob().Body)
	st = e.jobStatus(alice, r.header.Get("Location"))
	var prob map[string]any
	if st.Status != book.JobFailed || st.Result == nil || st.Result.Status != 422 || json.Unmarshal(st.Result.Body, &prob) != nil || prob["title"] != "Insufficient funds" {
		t.Fatalf("failed job: %+v", st)
	}
	f := e.checkChain()
	if len(f.jobRuns) != 2 {
		t.Fatalf("job runs in the chain: %v", f.jobRuns)
	}
}

func (e *env) jobStatus(tok, loc string) JobStatus {
	e.t.Helper()
	r := e.do("GET", loc, tok, "", "")
	if r.code != 200 {
		e.t.Fatalf("GET %s: %s", loc, r)
	}
	var st JobStatus
	r.json(e.t, &st)
	return st
}

// The worker can only run jobs the ledger signed; a job message cannot be
// altered, and a user token cannot reach the route.
func TestForgedJobRefused(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("mallory"), "acc-m")
	e.fund("acc-a", 5000)
	r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-m", 10), "forge-1")
	var acc jobAccepted
	r.json(t, &acc)
	for name, body := range map[string]string{
		"no signature":    `{"job":"` + acc.Job + `","sig":""}`,
		"other job's sig": `{"job":"job-invented","sig":"` + mustSig(t, e, acc.Job) + `"}`,
		"garbage":         `{"job":"` + acc.Job + `","sig":"AAAA"}`,
		"duplicate job":   `{"job":"job-invented","job":"` + acc.Job + `","sig":"` + mustSig(t, e, acc.Job) + `"}`,
	} {
		if r := e.runJob([]byte(body)); r.code != http.StatusForbidden && r.code != http.StatusBadRequest {
			t.Errorf("%s: %s", name, r)
		}
	}
	good := `{"job":"` + acc.Job + `","sig":"` + mustSig(t, e, acc.Job) + `"}`
	if r := e.do("POST", "/internal/v1/transfers", alice, good, ""); r.code != http.StatusForbidden && r.code != http.StatusUnauthorized {
		t.Fatalf("user token on the internal route: %s", r)
	}
	if got := e.svc().Balances()["acc-a"]; got != 5000 {
		t.Fatalf("balance moved to %d", got)
	}
}

func mustSig(t *testing.T, e *env, id string) string {
	s, err := e.svc().signJob(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Jobs survive a restart of the default mode: the in-memory queue is
// gone, the chain holds the job, and the ledger publishes it again; its
// signature (a persisted key ring) still verifies.
func TestJobsSurviveRestart(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 40), "survive")
	old := e.nextJob() // delivered, then the process dies before running it
	e.restart()
	again := e.nextJob()
	var m1, m2 jobMessage
	_ = json.Unmarshal(old.Body, &m1)
	_ = json.Unmarshal(again.Body, &m2)
	if m1.Job != m2.Job {
		t.Fatalf("republished %q, want %q", m2.Job, m1.Job)
	}
	if w := e.runJob(old.Body); w.code != 200 { // the message from before the restart verifies too
		t.Fatalf("pre-restart message: %s", w)
	}
	if w := e.runJob(again.Body); w.code != 200 {
		t.Fatalf("republished message: %s", w)
	}
	if st := e.jobStatus(alice, r.header.Get("Location")); st.Status != book.JobSucceeded {
		t.Fatalf("job after restart: %+v", st)
	}
	if got := e.svc().Balances()["acc-a"]; got != 960 {
		t.Fatalf("balance %d", got)
	}
	e.checkChain()
}

// A job nobody runs before its TTL expires: it fails as expired (recorded,
// so every replica and every retry agrees), and the worker can no longer
// run it.
func TestJobsExpire(t *testing.T) {
	clock := fakeclock.New(time.Unix(1_800_000_000, 0))
	e := newEnv(t, withConfig(func(c *Config) { c.Now = clock.Now; c.JobTTL = time.Minute }))
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 40), "expire")
	msg := e.nextJob()
	clock.Advance(2 * time.Minute)
	eventually(t, 5*time.Second, "the pump to expire the job", func() bool {
		j, _ := e.svc().book.Job(e.jobStatus(alice, r.header.Get("Location")).ID)
		return j.Done
	})
	st := e.jobStatus(alice, r.header.Get("Location"))
	if st.Status != book.JobFailed || st.Result == nil || st.Result.Status != http.StatusGone {
		t.Fatalf("expired job: %+v", st)
	}
	if w := e.runJob(msg.Body); w.code != 200 {
		t.Fatalf("late delivery: %s", w)
	}
	if got := e.svc().Balances()["acc-a"]; got != 1000 {
		t.Fatalf("an expired job moved money: %d", got)
	}
	e.checkChain()
}

// The queue of pending jobs is bounded: beyond it the async route answers
// 503 with Retry-After, and the key stays free for the retry.
func TestJobQueueBounded(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.MaxPendingJobs = 2 }))
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	for i, key := range []string{"q1", "q2"} {
		if r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 1), key); r.code != 202 {
			t.Fatalf("job %d: %s", i, r)
		}
	}
	r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 1), "q3")
	if r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("full queue: %s Retry-After %q", r, r.header.Get("Retry-After"))
	}
	e.runJob(e.nextJob().Body)
	if r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 1), "q3"); r.code != 202 || r.replayed() {
		t.Fatalf("retry once there is room: %s", r)
	}
}

// A job queued before a key rotation still verifies after it (the ring
// keeps the old key, the message names its key id); a ring that never held
// the key refuses it.
func TestJobSignatureSurvivesRotation(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 100)
	e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 10), "rot")
	msg := e.nextJob()
	k2, _ := keyring.NewKey()
	if err := e.ring.Rotate("k2", k2); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if w := e.runJob(msg.Body); w.code != 200 {
		t.Fatalf("job signed before the rotation: %s", w)
	}
	other, _ := keyring.NewKey()
	foreign, _ := keyring.NewRing("k9", map[string]keyring.Key{"k9": other})
	var m jobMessage
	_ = json.Unmarshal(msg.Body, &m)
	sealed, _ := foreign.Seal(nil, nil, jobAAD(m.Job))
	forged, _ := json.Marshal(jobMessage{Job: m.Job, Sig: base64.RawURLEncoding.EncodeToString(sealed)})
	if w := e.runJob(forged); w.code != http.StatusForbidden {
		t.Fatalf("job signed by a foreign ring: %s", w)
	}
	// The issued signature spelt with a line break inside decodes to the
	// same bytes; it is not the signature the ledger wrote.
	respelt, _ := json.Marshal(jobMessage{Job: m.Job, Sig: m.Sig[:10] + "\r\n" + m.Sig[10:]})
	if w := e.runJob(respelt); w.code != http.StatusForbidden {
		t.Fatalf("issued signature with CR LF inside: %s", w)
	}
}
