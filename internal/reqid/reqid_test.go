package reqid

import (
	"context"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("empty context reported an id")
	}
	ctx := NewContext(context.Background(), "01JD8Z")
	got, ok := FromContext(ctx)
	if !ok || got != "01JD8Z" {
		t.Fatalf("FromContext = %q, %v; want 01JD8Z, true", got, ok)
	}
	if _, ok := FromContext(NewContext(context.Background(), "")); ok {
		t.Fatal("an empty id must not count as present")
	}
}
