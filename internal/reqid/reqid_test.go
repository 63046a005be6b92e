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

// A context that answers Key{} with a *string (correlation's request
// state) is read like one built by NewContext.
func TestPointerValue(t *testing.T) {
	id := "01JD8Z"
	ctx := context.WithValue(context.Background(), Key{}, &id)
	if got, ok := FromContext(ctx); !ok || got != id {
		t.Fatalf("FromContext = %q, %v; want %q, true", got, ok, id)
	}
	empty := ""
	if _, ok := FromContext(context.WithValue(context.Background(), Key{}, &empty)); ok {
		t.Fatal("an empty id must not count as present")
	}
	if _, ok := FromContext(context.WithValue(context.Background(), Key{}, (*string)(nil))); ok {
		t.Fatal("a nil pointer must not count as present")
	}
}
