package evidence

// Responsibility is a claim of the security page that lives in the
// infrastructure a deployment runs on, with the configuration this system
// expects there.
type Responsibility struct {
	Row      string `json:"row"`
	Claim    string `json:"claim"`
	Expected string `json:"expected"`
}

// Responsibilities lists the claims no pass over the system's own
// interfaces can prove. They are reported, never passed.
func Responsibilities() []Responsibility {
	return []Responsibility{
		{RowWAF, "Rule sets are vendor-maintained; a new exploit family needs no application patch.",
			"The gateway embeds the OWASP CRS (coraza-coreruleset) at build time, so rule updates arrive with a dependency update. " +
				"A managed WAF in front of the gateway must run the OWASP core rule set and the known-bad-inputs rule set in blocking mode, " +
				"fed by its vendor, plus an IP reputation list, with its per-IP rate rule at or below the gateway's per-IP limit."},
		{RowPrivateDB, "The database has no public network address; only the application's security group reaches the database port.",
			"PostgreSQL on a private subnet with no public IP; an ingress rule admitting TCP 5432 only from the ledger's and identity's security group; " +
				"no other rule on that port."},
		{RowPrivateDB, "TLS to the database is enforced by the engine, not just the client.",
			"pg_hba.conf admitting the application roles only on hostssl lines (no host lines), ssl = on, and the components' DSNs with sslmode=verify-full " +
				"and the database's CA (the audit store refuses a non-TLS DSN to a non-loopback host)."},
		{RowEncryption, "Database, object storage, log streams and the image registry use customer-managed keys; rotation runs on a managed schedule.",
			"The system seals log streams, audit payloads and identity secrets with data keys from its key file, which stands in for a KMS " +
				"(wrap and unwrap one data key). A deployment replaces the key file with a customer-managed KMS key with automatic rotation enabled, " +
				"encrypts the database volume and snapshots, the object storage buckets and the image registry with that key, and denies unencrypted uploads by bucket policy."},
		{RowSecrets, "A managed secret store holds every credential; nothing is baked into an image or an env file.",
			"Each component generates its own key pair at start; the only credentials outside it are the database roles' passwords, read from a file per connection " +
				"(-audit-password-file), which the secret store's agent must write and rotate. No credential in the image or the environment."},
		{RowRoles, "The database master credential auto-rotates on a managed schedule and a redeploy picks it up.",
			"The master (migrator) credential rotated by the database service's managed rotation; the runtime never holds it (only `migrate` does)."},
		{RowHeaders, "Headers are stamped by the edge cache; header policy lives in infrastructure code.",
			"The gateway stamps the headers itself on every response (checked above). A CDN or cache in front must pass them through unchanged and " +
				"must not cache responses carrying Authorization or Set-Cookie."},
	}
}
