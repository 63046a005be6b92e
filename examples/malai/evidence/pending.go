package evidence

// Pending are checks written for guarantees whose feature is not on main
// yet: running them would fail the pass for a reason the report already
// names. Each moves into its row's list when the feature lands.
type Pending struct {
	Check Check
	// Waits names the missing feature.
	Waits string
}

// PendingChecks lists the checks that wait for a feature. None waits
// today: every guarantee of the page has its check in the registry.
func PendingChecks() []Pending { return nil }
