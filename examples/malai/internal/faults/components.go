package faults

import (
	"github.com/malai-sec/malai/examples/malai/gateway"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/ledger"
)

// Faults the components implement themselves (their Config.Faults).
const (
	// EdgeLimitAfterWAF runs the reputation list and the per-IP limit
	// after the WAF (blocked requests are never counted).
	EdgeLimitAfterWAF Fault = "edge-limit-after-waf"
	// EdgeNoShapeLimits drops the header, cookie, argument, URL and body
	// caps in front of the WAF.
	EdgeNoShapeLimits Fault = "edge-no-shape-limits"
	// EdgeNoWAFCap lifts the WAF's concurrency cap.
	EdgeNoWAFCap Fault = "edge-no-waf-cap"
	// LedgerForgetKeys: a key's outcome lives only in the idempotency
	// store, not in the chain.
	LedgerForgetKeys Fault = "ledger-forget-keys"
	// LedgerAppendOnRequestContext: the append runs on the request's
	// context and an unknown outcome is not read back.
	LedgerAppendOnRequestContext Fault = "ledger-append-on-request-context"
	// LedgerNoJobStatus: an async job's outcome is never reported.
	LedgerNoJobStatus Fault = "ledger-no-job-status"
	// LedgerNoOwnerCheck: any customer may read and debit any account.
	LedgerNoOwnerCheck Fault = "ledger-no-owner-check"
	// LedgerUnredactedSample: the audit sample shows who asked.
	LedgerUnredactedSample Fault = "ledger-unredacted-sample"
	// LedgerKeyOptional: a write without Idempotency-Key runs.
	LedgerKeyOptional Fault = "ledger-key-optional"
	// LedgerLaxBodies: bodies decoded by encoding/json alone (duplicate
	// and case-variant members pass).
	LedgerLaxBodies Fault = "ledger-lax-bodies"
	// LedgerLiveDrift: the live balances drift from the chain.
	LedgerLiveDrift Fault = "ledger-live-drift"
	// IdentityNoReauth: an access token alone enrols or disables MFA,
	// regenerates recovery codes and changes the password.
	IdentityNoReauth Fault = "identity-no-reauth"
	// IdentityHardLockout: no exemption for a device that signed in
	// before, and an account under attack is refused for everyone (the
	// lockout an attacker can aim).
	IdentityHardLockout Fault = "identity-hard-lockout"
	// IdentityNoSprayDetection: failures are not counted per password.
	IdentityNoSprayDetection Fault = "identity-no-spray-detection"
	// IdentityNoAssertionReplayCheck: a client assertion's jti may be used
	// again.
	IdentityNoAssertionReplayCheck Fault = "identity-no-assertion-replay-check"
	// IdentityNoTokenCheck: identity believes the claims of any
	// well-formed bearer token on its own routes (other layers unchanged).
	IdentityNoTokenCheck Fault = "identity-no-token-check"
	// IdentityShortPasswords: the password policy's minimum is 8
	// characters, below the page's 12.
	IdentityShortPasswords Fault = "identity-short-passwords"
	// IdentityNoSymbolRequired: the password policy does not require a
	// symbol.
	IdentityNoSymbolRequired Fault = "identity-no-symbol-required"
	// IdentityNoBreachCorpus: the compromised-password corpus is never
	// consulted.
	IdentityNoBreachCorpus Fault = "identity-no-breach-corpus"
	// IdentityNoRiskEngine: sign-in ignores the account-under-attack
	// signal (no throttle on the account, no block of a right password
	// from a new network).
	IdentityNoRiskEngine Fault = "identity-no-risk-engine"
	// IdentityNoTokenClass: user tokens state no token_class (every
	// verifier requires it and refuses them).
	IdentityNoTokenClass Fault = "identity-no-token-class"
)

// Faults of the token layers, one layer at a time.
const (
	// EdgeNoTokenCheck: the gateway forwards any bearer token unverified
	// (JWT check #1 off; the services keep theirs).
	EdgeNoTokenCheck Fault = "edge-no-token-check"
	// LedgerNoTokenCheck: the ledger believes the claims of any
	// well-formed bearer token on its own routes (other layers unchanged).
	LedgerNoTokenCheck Fault = "ledger-no-token-check"
	// IdentityServiceSubjectNotClient: a client-credentials token's sub
	// is not its client_id.
	IdentityServiceSubjectNotClient Fault = "identity-service-subject-not-client"
	// LedgerAnyClassOnUserRoutes: the ledger's user routes take a token
	// of either class (scopes and the policy unchanged).
	LedgerAnyClassOnUserRoutes Fault = "ledger-any-class-on-user-routes"
	// LedgerAnyClassOnInternalRoutes: the ledger's internal routes take a
	// token of either class (scopes, callers and the policy unchanged).
	LedgerAnyClassOnInternalRoutes Fault = "ledger-any-class-on-internal-routes"
)

// Gateway is the gateway's share of the set.
func (s Set) Gateway() gateway.Faults {
	return gateway.Faults{
		LimitAfterWAF: s.On(EdgeLimitAfterWAF),
		NoShapeLimits: s.On(EdgeNoShapeLimits),
		NoWAFCap:      s.On(EdgeNoWAFCap),
		NoTokenCheck:  s.On(EdgeNoTokenCheck),
		WAFRules:      s.wafDirectives(),
	}
}

// Identity is identity's share of the set.
func (s Set) Identity() identity.Faults {
	return identity.Faults{
		NoReauth:                s.On(IdentityNoReauth),
		HardLockout:             s.On(IdentityHardLockout),
		NoSprayDetection:        s.On(IdentityNoSprayDetection),
		NoAssertionReplayCheck:  s.On(IdentityNoAssertionReplayCheck),
		ServiceSubjectNotClient: s.On(IdentityServiceSubjectNotClient),
		NoTokenCheck:            s.On(IdentityNoTokenCheck),
		ShortPasswords:          s.On(IdentityShortPasswords),
		NoSymbolRequired:        s.On(IdentityNoSymbolRequired),
		NoBreachCorpus:          s.On(IdentityNoBreachCorpus),
		NoRiskEngine:            s.On(IdentityNoRiskEngine),
		NoTokenClass:            s.On(IdentityNoTokenClass),
	}
}

// Ledger is the ledger's share of the set.
func (s Set) Ledger() ledger.Faults {
	return ledger.Faults{
		ForgetKeys:               s.On(LedgerForgetKeys),
		AppendOnRequestContext:   s.On(LedgerAppendOnRequestContext),
		NoJobStatus:              s.On(LedgerNoJobStatus),
		NoOwnerCheck:             s.On(LedgerNoOwnerCheck),
		UnredactedSample:         s.On(LedgerUnredactedSample),
		KeyOptional:              s.On(LedgerKeyOptional),
		LaxBodies:                s.On(LedgerLaxBodies),
		LiveDrift:                s.On(LedgerLiveDrift),
		NoTokenCheck:             s.On(LedgerNoTokenCheck),
		AnyClassOnUserRoutes:     s.On(LedgerAnyClassOnUserRoutes),
		AnyClassOnInternalRoutes: s.On(LedgerAnyClassOnInternalRoutes),
		StartOnDamagedChain:      s.On(LedgerStartsOnDamagedChain),
		NoWitness:                s.On(LedgerNoWitness),
		NoReencrypt:              s.On(DataKeyNoReencrypt),
	}
}
