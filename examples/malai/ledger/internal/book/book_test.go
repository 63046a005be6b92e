package book

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestFoldReproducesBalances(t *testing.T) {
	live := New()
	var chain []struct {
		typ string
		p   []byte
	}
	appendEv := func(typ string, v any) {
		p := mustJSON(v)
		if err := live.Apply(typ, p); err != nil {
			t.Fatal(err)
		}
		chain = append(chain, struct {
			typ string
			p   []byte
		}{typ, p})
	}
	for _, a := range []struct{ id, owner string }{{"acc-alice", "alice"}, {"acc-bob", "bob"}} {
		ev, err := live.OpenAccount(a.id, a.owner)
		if err != nil {
			t.Fatal(err)
		}
		appendEv(TypeAccountOpened, ev)
	}
	tr, err := live.PlanTransfer("tr-1", "alice", "acc-alice", "acc-bob", 2500, false)
	if err != nil {
		t.Fatal(err)
	}
	appendEv(TypeTransferPosted, tr)
	appendEv("rbac.decision", map[string]any{"allowed": true}) // ignored by the fold

	replayed := New()
	for _, e := range chain {
		if err := replayed.Apply(e.typ, e.p); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int64{"acc-alice": OpeningCredit - 2500, "acc-bob": OpeningCredit + 2500}
	if diff := cmp.Diff(want, replayed.Balances()); diff != "" {
		t.Fatalf("replayed balances (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(live.Balances(), replayed.Balances()); diff != "" {
		t.Fatalf("replay differs from live state:\n%s", diff)
	}
}

func TestPlanTransferRefuses(t *testing.T) {
	b := New()
	for _, a := range []struct{ id, owner string }{{"acc-alice", "alice"}, {"acc-bob", "bob"}} {
		ev, _ := b.OpenAccount(a.id, a.owner)
		if err := b.Apply(TypeAccountOpened, mustJSON(ev)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name          string
		id, who, from string
		to            string
		amount        int64
		service       bool
		want          error
	}{
		{"not the owner", "tr-1", "bob", "acc-alice", "acc-bob", 1, false, ErrNotOwner},
		{"service may move on behalf", "tr-2", "svc-worker", "acc-alice", "acc-bob", 1, true, nil},
		{"overdraw", "tr-3", "alice", "acc-alice", "acc-bob", OpeningCredit + 1, false, ErrFunds},
		{"negative", "tr-4", "alice", "acc-alice", "acc-bob", -5, false, ErrInvalid},
		{"self transfer", "tr-5", "alice", "acc-alice", "acc-alice", 5, false, ErrInvalid},
		{"unknown account", "tr-6", "alice", "acc-alice", "acc-carol", 5, false, ErrNoAccount},
		{"bad id", "TR 7;drop", "alice", "acc-alice", "acc-bob", 5, false, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.PlanTransfer(tc.id, tc.who, tc.from, tc.to, tc.amount, tc.service)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := b.OpenAccount("acc-alice", "mallory"); !errors.Is(err, ErrAccountExists) {
		t.Fatalf("re-opening an account: %v", err)
	}
}
