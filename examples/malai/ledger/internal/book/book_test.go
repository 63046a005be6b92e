package book

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

type row struct {
	typ string
	p   []byte
	at  time.Time
}

// chain folds rows into a live book and remembers them for a replay.
type chain struct {
	t    *testing.T
	live *Book
	rows []row
	now  time.Time
}

func newChain(t *testing.T) *chain {
	return &chain{t: t, live: New(24 * time.Hour), now: time.Unix(1_800_000_000, 0)}
}

func (c *chain) add(typ string, v any) error {
	r := row{typ, mustJSON(v), c.now}
	if err := c.live.Apply(uint64(len(c.rows)), r.at, r.typ, r.p); err != nil {
		return err
	}
	c.rows = append(c.rows, r)
	return nil
}

func (c *chain) must(typ string, v any) {
	c.t.Helper()
	if err := c.add(typ, v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chain) replay() *Book {
	b := New(24 * time.Hour)
	for i, r := range c.rows {
		if err := b.Apply(uint64(i), r.at, r.typ, r.p); err != nil {
			c.t.Fatal(err)
		}
	}
	return b
}

func op(principal string, key byte, status int) *Op {
	var k KeyHash
	k[0] = key
	return &Op{Principal: principal, Key: FormatKey(k), FP: FormatFP([32]byte{key}), Status: status, Body: json.RawMessage(`{}`)}
}

func TestFoldReproducesState(t *testing.T) {
	c := newChain(t)
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-alice", Owner: "user:alice"})
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-bob", Owner: "user:bob"})
	c.must(TypeDepositPosted, DepositPosted{Deposit: "dp-1", Account: "acc-alice", Amount: 5000, By: "user:teller", Op: op("user:teller", 1, 201)})
	c.must(TypeTransferPosted, TransferPosted{Transfer: "tr-1", From: "acc-alice", To: "acc-bob", Amount: 2500, By: "user:alice", Op: op("user:alice", 2, 201)})
	c.must(TypeRefused, Refused{Reason: "insufficient-funds", Op: *op("user:alice", 3, 422)})
	jop := *op("user:alice", 4, 202)
	jop.Job = "job-1"
	c.must(TypeJobAccepted, JobAccepted{Job: "job-1", Request: TransferRequest{From: "acc-alice", To: "acc-bob", Amount: 100}, Op: jop})
	c.must("rbac.decision", map[string]any{"allowed": true}) // ignored by the fold
	c.must(TypeTransferPosted, TransferPosted{Transfer: "tr-2", From: "acc-alice", To: "acc-bob", Amount: 100, By: "user:alice",
		Op: &Op{Principal: "user:alice", Job: "job-1", Status: 201, Body: json.RawMessage(`{"transfer":"tr-2"}`)}})

	replayed := c.replay()
	want := map[string]int64{"acc-alice": 2400, "acc-bob": 2600}
	if diff := cmp.Diff(want, replayed.Balances()); diff != "" {
		t.Fatalf("replayed balances (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(c.live.Balances(), replayed.Balances()); diff != "" {
		t.Fatalf("live and replayed differ:\n%s", diff)
	}
	if replayed.Keys() != 4 || c.live.Keys() != 4 {
		t.Fatalf("keys: replayed %d, live %d", replayed.Keys(), c.live.Keys())
	}
	j, ok := replayed.Job("job-1")
	if !ok || !j.Done || j.State() != JobSucceeded || replayed.Pending() != 0 {
		t.Fatalf("job after replay: %+v pending %d", j, replayed.Pending())
	}
}

// A chain that contradicts itself does not fold: the ledger refuses to
// start on it instead of inventing balances.
func TestCorruptEventsRefused(t *testing.T) {
	c := newChain(t)
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-a", Owner: "user:a"})
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-b", Owner: "user:b"})
	c.must(TypeDepositPosted, DepositPosted{Deposit: "dp-1", Account: "acc-a", Amount: 10, Op: op("user:t", 1, 201)})
	for name, ev := range map[string]struct {
		typ string
		v   any
	}{
		"overdraft":          {TypeTransferPosted, TransferPosted{Transfer: "t", From: "acc-a", To: "acc-b", Amount: 11}},
		"unknown account":    {TypeTransferPosted, TransferPosted{Transfer: "t", From: "acc-a", To: "acc-z", Amount: 1}},
		"account twice":      {TypeAccountOpened, AccountOpened{Account: "acc-a", Owner: "user:x"}},
		"key twice":          {TypeDepositPosted, DepositPosted{Deposit: "dp-2", Account: "acc-a", Amount: 1, Op: op("user:t", 1, 201)}},
		"run unknown job":    {TypeRefused, Refused{Op: Op{Principal: "user:a", Job: "job-x", Status: 422}}},
		"negative deposit":   {TypeDepositPosted, DepositPosted{Deposit: "dp-3", Account: "acc-a", Amount: -5}},
		"not json":           {TypeTransferPosted, json.RawMessage(`{"amount":`)},
		"malformed key":      {TypeRefused, Refused{Op: Op{Principal: "user:a", Key: "!!", Status: 422}}},
		"job accepted twice": {TypeJobAccepted, JobAccepted{Job: "", Op: Op{Principal: "user:a"}}},
	} {
		if err := c.add(ev.typ, ev.v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Apply = %v, want ErrCorrupt", name, err)
		}
	}
	if got := c.live.Balances()["acc-a"]; got != 10 {
		t.Fatalf("a refused event changed state: %d", got)
	}
	if err := c.live.Apply(99, c.now, TypeAccountOpened, mustJSON(AccountOpened{Account: "acc-c", Owner: "user:c"})); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a row out of order folded: %v", err)
	}
}

// Keys are remembered for the window, measured in chain time, the same
// live and in replay; a key reused after its window is new again.
func TestKeyWindow(t *testing.T) {
	c := newChain(t)
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-a", Owner: "user:a"})
	c.must(TypeDepositPosted, DepositPosted{Deposit: "dp-1", Account: "acc-a", Amount: 1, Op: op("user:t", 7, 201)})
	var k KeyHash
	k[0] = 7
	c.now = c.now.Add(23 * time.Hour)
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-b", Owner: "user:b"})
	if _, ok := c.live.Key(k); !ok {
		t.Fatal("key forgotten inside its window")
	}
	if err := c.add(TypeDepositPosted, DepositPosted{Deposit: "dp-2", Account: "acc-a", Amount: 1, Op: op("user:t", 7, 201)}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("key reused inside its window folded: %v", err)
	}
	c.now = c.now.Add(2 * time.Hour)
	c.must(TypeDepositPosted, DepositPosted{Deposit: "dp-3", Account: "acc-a", Amount: 1, Op: op("user:t", 7, 201)})
	r := c.replay()
	if e, ok := r.Key(k); !ok || e.Seq != 3 {
		t.Fatalf("replayed key entry %+v %v, want the reuse at row 3", e, ok)
	}
}

// A plan sees the requests planned before it, and changes nothing.
func TestPlanOverlay(t *testing.T) {
	c := newChain(t)
	c.must(TypeAccountOpened, AccountOpened{Account: "acc-a", Owner: "user:a"})
	c.must(TypeDepositPosted, DepositPosted{Deposit: "dp-1", Account: "acc-a", Amount: 100, Op: op("user:t", 1, 201)})
	p := c.live.NewPlan()
	if err := p.Open("acc-new", "user:a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Transfer("user:a", TransferRequest{From: "acc-a", To: "acc-new", Amount: 60}); err != nil {
		t.Fatalf("transfer to an account opened earlier in the plan: %v", err)
	}
	if err := p.Transfer("user:a", TransferRequest{From: "acc-a", To: "acc-new", Amount: 60}); !errors.Is(err, ErrFunds) {
		t.Fatalf("second transfer against the planned balance: %v", err)
	}
	if err := p.Open("acc-new", "user:b"); !errors.Is(err, ErrAccountExists) {
		t.Fatalf("account planned twice: %v", err)
	}
	if err := p.Transfer("user:b", TransferRequest{From: "acc-a", To: "acc-new", Amount: 1}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("foreign source: %v", err)
	}
	for _, r := range []TransferRequest{{From: "acc-a", To: "acc-a", Amount: 1}, {From: "acc-a", To: "acc-new", Amount: 0}, {From: "acc-a", To: "acc-new", Amount: MaxAmount + 1}, {From: "A", To: "acc-new", Amount: 1}} {
		if err := p.Transfer("user:a", r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", r, err)
		}
	}
	if _, ok := c.live.Account("acc-new"); ok || c.live.Balances()["acc-a"] != 100 {
		t.Fatal("a plan changed the book")
	}
}
