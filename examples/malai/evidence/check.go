package evidence

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// The security page's rows, as the report names them.
const (
	RowTLS            = "TLS at the edge"
	RowHeaders        = "Security headers"
	RowWAF            = "Managed WAF at the edge"
	RowReputation     = "IP reputation"
	RowRateLimit      = "Per-IP rate limit"
	RowAuthentication = "Authentication"
	RowSignIn         = "Sign-in hardening"
	RowAuthorization  = "Authorization"
	RowInterService   = "Inter-service authentication"
	RowTokens         = "Defence-in-depth token verification"
	RowEncryption     = "Encryption at rest"
	RowSecrets        = "Secrets management"
	RowRoles          = "Database role separation"
	RowAudit          = "Append-only audit"
	RowPrivateDB      = "Private database"
	RowIdempotency    = "Idempotency"
	RowLogging        = "Encrypted, correlated, alarmed logging"
)

// Effect says what a check leaves behind. Checks run in Effect order
// (registry order within one Effect), so a check that changes the system
// for everyone runs after every check that needs it intact.
type Effect int

const (
	// ReadOnly checks touch nothing but their own test data.
	ReadOnly Effect = iota
	// Restarts checks restart the system on the same data and stores.
	Restarts
	// Degrades checks leave the system worse for later checks: a component
	// stopped, an address blocked, a shared budget spent.
	Degrades
	// Stops checks stop the system for good (offline verification, the
	// log streams of a finished run).
	Stops
)

func (e Effect) String() string {
	switch e {
	case ReadOnly:
		return "read-only"
	case Restarts:
		return "restarts"
	case Degrades:
		return "degrades"
	case Stops:
		return "stops"
	}
	return fmt.Sprintf("Effect(%d)", int(e))
}

// A Check tests one claim of the security page against a running system.
type Check struct {
	// Row is the security-page row the check supports.
	Row string
	// Name says what is tried and what must happen.
	Name string
	// Effect orders the check; anything but ReadOnly is destructive.
	Effect Effect
	// Local marks a check that needs a system the pass started itself:
	// its internal listeners, data directory, restarts or a proxy it
	// trusts. Against a deployment (-target) it is listed as not run.
	Local bool
	// Run tries the claim. It returns what it observed; a non-nil error
	// means the claim does not hold (or could not be checked). An error
	// wrapping ErrNotApplicable means the check does not apply to this
	// system (for example a PostgreSQL check on a file-backed run).
	Run func(ctx context.Context, f *Fixture) (observed string, err error)
}

// Destructive reports whether the check changes the system for the checks
// after it.
func (c Check) Destructive() bool { return c.Effect != ReadOnly }

// ID is the check's stable name in reports and tests: "row / name".
func (c Check) ID() string { return c.Row + " / " + c.Name }

// ErrNotApplicable marks a check that cannot apply to the system under
// test; see [NotApplicable].
var ErrNotApplicable = errors.New("evidence: not applicable")

// NotApplicable returns an error wrapping [ErrNotApplicable] with a reason.
func NotApplicable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotApplicable, fmt.Sprintf(format, args...))
}

// Registry returns every check in the security page's order of rows.
func Registry() []Check {
	var cs []Check
	for _, group := range [][]Check{
		tlsChecks(), headerChecks(), wafChecks(), limitBeforeWAFChecks(), rateLimitChecks(),
		authenticationChecks(), signInChecks(), authorizationChecks(),
		interServiceChecks(), clientChecks(), tokenChecks(), badClaimChecks(),
		// Idempotency before the data rows: their checks look for its
		// keys and transfers on disk and in the chain.
		idempotencyChecks(), auditChecks(), encryptionChecks(), roleChecks(),
		loggingChecks(),
		// Last of all: it damages the chain.
		corruptionChecks(),
	} {
		cs = append(cs, group...)
	}
	return cs
}

// InRunOrder returns cs sorted by Effect, keeping their order within one
// Effect: every read-only check runs before any destructive one.
func InRunOrder(cs []Check) []Check {
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b Check) int { return int(a.Effect) - int(b.Effect) })
	return cs
}
