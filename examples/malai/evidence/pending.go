package evidence

// Pending are checks written for guarantees whose feature is not on main
// yet: running them would fail the pass for a reason the report already
// names. Each moves into its row's list when the feature lands.
type Pending struct {
	Check Check
	// Waits names the missing feature.
	Waits string
}

// PendingChecks lists the checks that wait for a feature.
func PendingChecks() []Pending {
	return []Pending{
		{restartKeyCheck, "identity persistence: users and signing keys that survive a restart (without them no user can retry after one)"},
		{reRegisterCheck, "identity persistence: users that survive a restart"},
		{mfaReauthCheck, "re-authentication for MFA enrolment"},
		{ownerLockoutCheck, "a lockout that exempts the owner's known device (a signed device cookie)"},
		{sprayCheck, "password-spraying detection"},
	}
}
