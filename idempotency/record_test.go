package idempotency_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/idempotency"
)

func sampleRecord() idempotency.Record {
	now := time.Unix(1_772_000_000, 123)
	r := idempotency.Record{
		State: idempotency.StateCompleted, Token: 7,
		CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
		Result: idempotency.Result{Status: 201,
			Header: http.Header{"Content-Type": {"application/json"}, "Location": {"/t/1", "/t/2"}},
			Body:   []byte(`{"ok":true}`)},
	}
	r.Owner[0], r.Fingerprint[31] = 9, 4
	return r
}

func TestRecordRoundTrip(t *testing.T) {
	for name, r := range map[string]idempotency.Record{
		"completed": sampleRecord(),
		"in-flight": {State: idempotency.StateInFlight, Token: 1, CreatedAt: time.Unix(5, 0), LeaseUntil: time.Unix(35, 0), ExpiresAt: time.Unix(99, 0)},
		"not-replayable": {State: idempotency.StateNotReplayable, Token: 2, Result: idempotency.Result{Status: 200},
			ExpiresAt: time.Unix(99, 0)},
	} {
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(b[:idempotency.FenceLen], r.Fence()) {
			t.Fatalf("%s: encoding does not start with the fence", name)
		}
		var got idempotency.Record
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if diff := cmp.Diff(r, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Fatalf("%s: round trip (-want +got):\n%s", name, diff)
		}
	}
}

func TestRecordEncodeRejects(t *testing.T) {
	for name, r := range map[string]idempotency.Record{
		"state 0":     {},
		"state 9":     {State: 9},
		"status 1000": {State: idempotency.StateCompleted, Result: idempotency.Result{Status: 1000}},
		"headers":     {State: idempotency.StateCompleted, Result: idempotency.Result{Header: manyHeaders(65)}},
	} {
		if _, err := r.MarshalBinary(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

func manyHeaders(n int) http.Header {
	h := http.Header{}
	for i := range n {
		h.Set("X-H"+string(rune('a'+i%26))+string(rune('a'+i/26)), "v")
	}
	return h
}

func TestRecordDecodeRejects(t *testing.T) {
	good, _ := func() ([]byte, error) { r := sampleRecord(); return r.MarshalBinary() }()
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     good[:20],
		"version":   mut(func(b []byte) []byte { b[0] = 2; return b }),
		"state":     mut(func(b []byte) []byte { b[1] = 0; return b }),
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"status":    mut(func(b []byte) []byte { b[82], b[83] = 0xff, 0xff; return b }),
		"hdr count": mut(func(b []byte) []byte { b[84] = 0x7f; return b }),
	} {
		var r idempotency.Record
		if err := r.UnmarshalBinary(b); !errors.Is(err, idempotency.ErrCorruptRecord) {
			t.Errorf("%s: %v; want ErrCorruptRecord", name, err)
		}
	}
}

func TestLive(t *testing.T) {
	now := time.Unix(1000, 0)
	inflight := idempotency.Record{State: idempotency.StateInFlight, LeaseUntil: now.Add(time.Second), ExpiresAt: now.Add(time.Hour)}
	done := idempotency.Record{State: idempotency.StateCompleted, ExpiresAt: now.Add(time.Hour)}
	switch {
	case !inflight.Live(now), inflight.Live(now.Add(time.Second)):
		t.Fatal("in-flight liveness must end at LeaseUntil")
	case !done.Live(now.Add(59 * time.Minute)), done.Live(now.Add(time.Hour)):
		t.Fatal("finished liveness must end at ExpiresAt")
	}
}

func FuzzRecordDecode(f *testing.F) {
	r := sampleRecord()
	good, _ := r.MarshalBinary()
	f.Add(good)
	in := idempotency.Record{State: idempotency.StateInFlight, Token: 1}
	b, _ := in.MarshalBinary()
	f.Add(b)
	f.Add([]byte{})
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, b []byte) {
		var r idempotency.Record
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		// Whatever decodes re-encodes to a record that decodes the same.
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		var again idempotency.Record
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if diff := cmp.Diff(r, again, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Fatalf("unstable round trip:\n%s", diff)
		}
		if len(out) != len(b) {
			t.Fatalf("re-encoding has %d bytes, input %d", len(out), len(b))
		}
	})
}

func TestRecordDecodeRejectsOverlongVarint(t *testing.T) {
	r := idempotency.Record{State: idempotency.StateInFlight, Token: 1}
	b, _ := r.MarshalBinary()
	// header count 0 then body length 0, each as one byte: re-encode the
	// body length as the two-byte overlong form 0x80 0x00.
	b = append(b[:len(b)-1], 0x80, 0x00)
	var got idempotency.Record
	if err := got.UnmarshalBinary(b); !errors.Is(err, idempotency.ErrCorruptRecord) {
		t.Fatalf("overlong varint: %v; want ErrCorruptRecord", err)
	}
}
