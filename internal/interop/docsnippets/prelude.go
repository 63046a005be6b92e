// Package docsnippets holds every Go snippet of the library's package
// documentation, one generated file per package, so that the build checks
// that they compile. The generator (TestDocSnippetsCompile in the parent
// directory) declares the placeholders the snippets use without declaring
// them (a mux, a handler, a Redis client) as local variables of the types
// in its placeholder table.
package docsnippets

import (
	"context"

	"github.com/malai-sec/malai/auditlog"
)

// ledgerState stands for an application's state folded from audit events.
type ledgerState struct{}

func (ledgerState) Fold(auditlog.Event) error { return nil }

// secretStore stands for a secret manager handing out the current database
// password.
type secretStore struct{}

func (secretStore) CurrentPassword(context.Context) (string, error) { return "", nil }

// queueMessage stands for a message a worker takes from a queue.
type queueMessage struct {
	Subject, Key string
	Body         []byte
}
