// Package evidence checks the reference system's security claims against a
// running system and writes the report a reviewer reads: each claim of
// the security page, the check that tried it, what it observed, and
// whether it held.
//
// # Checks
//
// A [Check] is a value: the security-page row it supports, a name, its
// [Effect] (what it leaves behind) and a Run function. [Registry] returns
// every check, grouped by row in the files checks_*.go. Checks attack and
// fault the system — forged tokens at every layer, handshakes the edge
// must refuse, replays, stopped components — and say what they saw.
// [InRunOrder] runs every read-only check before any destructive one, so
// no check depends on another's comment about ordering.
//
// # Fixture
//
// A [Fixture] creates the test users, tokens and accounts once, before the
// first check; a check that needs more creates its own, named with
// [Fixture.Name] so that runs never collide. A check waits for concurrent
// work with [Eventually], never by sleeping.
//
// # Two modes
//
// Against a system the pass started itself, the [Local] interface gives
// the checks what only the operator has: the internal listeners, client
// certificates of the components, the data directory, restarts. Against a
// running deployment (a [Target] read by [LoadTarget] from its
// endpoints.json and demo-credentials.json) the pass touches only its own
// test accounts; checks marked Local are reported as not run, and claims
// that live in infrastructure are listed by [Responsibilities], never as
// passed.
//
//	func check(ctx context.Context) error {
//		t, err := evidence.LoadTarget("data/endpoints.json", "data/demo-credentials.json", "", "")
//		if err != nil {
//			return err
//		}
//		f, err := evidence.NewFixture(ctx, t, nil)
//		if err != nil {
//			return err
//		}
//		results := evidence.RunAll(ctx, f, evidence.Registry(), os.Stdout)
//		rep := evidence.NewReport("target", "Production, through its gateway.", t.Gateway, results, nil)
//		return rep.Write("evidence") // REPORT.md, report.json, report.schema.json
//	}
//
// # Caveats
//
// A pass proves what it observed on the system it ran against, at that
// moment. Checks that need a trusted proxy (many client networks from one
// machine) run only locally. The report's JSON matches [Schema]; [Validate]
// checks any report.json against it.
package evidence
