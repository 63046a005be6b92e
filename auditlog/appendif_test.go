package auditlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
)

// Two logs over one store stand for two processes on one PostgreSQL
// table: a conditional append planned on a stale head appends nothing,
// the writer reads the other's rows and appends on the new head.
func TestAppendIfRefusesAStaleHead(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	st := memstore.New()
	cfg := auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Ring: newRing(t, "r1")}
	a := newLog(t, cfg)
	b := newLog(t, cfg)

	if _, err := a.AppendIf(ctx, auditlog.Head{}, []auditlog.Event{{Type: "a1"}}); err != nil {
		t.Fatal(err)
	}
	_, err := b.AppendIf(ctx, auditlog.Head{}, []auditlog.Event{{Type: "b1"}})
	if !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("AppendIf on a stale head = %v, want ErrConflict", err)
	}
	var seen []string
	head, err := b.ReadFrom(ctx, auditlog.Head{}, func(e auditlog.Event) error { seen = append(seen, e.Type); return nil })
	if err != nil || head.Size != 1 || strings.Join(seen, ",") != "a1" {
		t.Fatalf("ReadFrom = %+v %v %v", head, seen, err)
	}
	rs, err := b.AppendIf(ctx, head, []auditlog.Event{{Type: "b1"}, {Type: "b2"}})
	if err != nil || len(rs) != 2 || rs[0].Seq != 1 || rs[1].Seq != 2 {
		t.Fatalf("AppendIf on the new head = %+v, %v", rs, err)
	}
	// An unconditional append still group-commits on whatever head is
	// current, and a conditional one after it must name that head.
	if _, err := a.Append(ctx, auditlog.Event{Type: "a2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AppendIf(ctx, b.Head(), []auditlog.Event{{Type: "b3"}}); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("AppendIf after the other writer's append = %v, want ErrConflict", err)
	}
	var all []string
	full, err := auditlog.Replay(ctx, st, cfg.Ring, func(e auditlog.Event) error { all = append(all, e.Type); return nil })
	if err != nil || full.Size != 4 || strings.Join(all, ",") != "a1,b1,b2,a2" {
		t.Fatalf("chain = %v %+v %v", all, full, err)
	}
	if _, err := auditlog.New(cfg); err != nil {
		t.Fatalf("the chain two writers built does not reopen: %v", err)
	}
}

// An append whose acknowledgement was lost is read back, and the next
// conditional append names the head that includes it.
func TestAppendIfAfterLostAck(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	st := &flakyStore{Store: memstore.New(), failAfter: 1}
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	_, err := l.AppendIf(ctx, auditlog.Head{}, []auditlog.Event{{Type: "lost-ack", Payload: []byte(`{"key":"k1"}`)}})
	if err == nil || errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("AppendIf with a lost ack = %v, want the store's error", err)
	}
	if h := l.Head(); h.Size != 0 {
		t.Fatalf("the log counted a row it was not told was durable: %+v", h)
	}
	var got []string
	head, err := l.ReadFrom(ctx, auditlog.Head{}, func(e auditlog.Event) error { got = append(got, string(e.Payload)); return nil })
	if err != nil || head.Size != 1 || len(got) != 1 || got[0] != `{"key":"k1"}` {
		t.Fatalf("read back = %+v %v %v", head, got, err)
	}
	// Retrying on the old head is refused (the row is there); on the head
	// read back it continues the chain.
	if _, err := l.AppendIf(ctx, auditlog.Head{}, []auditlog.Event{{Type: "again"}}); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("AppendIf on the pre-failure head = %v, want ErrConflict", err)
	}
	rs, err := l.AppendIf(ctx, head, []auditlog.Event{{Type: "next"}})
	if err != nil || rs[0].Seq != 1 {
		t.Fatalf("AppendIf on the read-back head = %+v %v", rs, err)
	}
	e, err := l.Event(ctx, 0)
	if err != nil || e.Type != "lost-ack" || e.Seq != 0 {
		t.Fatalf("Event(0) = %+v %v", e, err)
	}
	if _, err := l.Event(ctx, 9); !errors.Is(err, auditlog.ErrNotFound) {
		t.Fatalf("Event past the head = %v, want ErrNotFound", err)
	}
}

// ReadFrom refuses a row that does not link to the head the caller holds
// (a forked or rewritten store), and Event refuses a modified row.
func TestReadFromAndEventCheckRows(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	for _, typ := range []string{"a", "b", "c"} {
		if _, err := l.Append(ctx, auditlog.Event{Type: typ, Payload: []byte(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	bogus := auditlog.Head{Size: 1, Last: auditlog.Hash{1}}
	if _, err := l.ReadFrom(ctx, bogus, nil); !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("ReadFrom a head the store does not continue = %v, want ErrTampered", err)
	}
	st.Tamper(func(rows *[]auditlog.Record, _ *[][]byte) { (*rows)[1].Payload = []byte(`{"n":2}`) })
	if _, err := l.Event(ctx, 1); !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("Event over a modified row = %v, want ErrTampered", err)
	}
}
