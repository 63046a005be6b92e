package idempotency

// Test hooks.
var (
	StoreKeyForTest     = storeKey
	HTTPStoreKeyForTest = httpStoreKey
)
