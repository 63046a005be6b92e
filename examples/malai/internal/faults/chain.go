package faults

// Faults of the audit chain and its keys: what the ledger's system of
// record stops guarding.
const (
	// LedgerStartsOnDamagedChain: a ledger whose audit chain does not
	// open or verify (a corrupt frame, a row that was modified, a witness
	// ahead of the store) starts anyway, on an empty chain in memory with
	// no witness, instead of refusing to start.
	LedgerStartsOnDamagedChain Fault = "ledger-starts-on-damaged-chain"
	// LedgerNoWitness: the ledger publishes its checkpoints to no witness
	// (it still signs and stores them beside the rows).
	LedgerNoWitness Fault = "ledger-no-witness"
	// DataKeyNoReencrypt: the ledger's background re-encryption is off: a
	// data-key rotation takes effect, but none of the older audit rows is
	// re-encrypted (they stay sealed under the keys they were written
	// with).
	DataKeyNoReencrypt Fault = "data-key-no-reencrypt"
)
