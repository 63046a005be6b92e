package evidence

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/malai-sec/malai/idempotency"
)

// Fixture is what every check shares: the system, an HTTP client that
// trusts its CA, and the test users, tokens and accounts created once
// before the first check. Checks that need more data create their own
// (named with [Fixture.Name], so runs never collide).
type Fixture struct {
	Target Target
	// Local is nil against a deployment.
	Local Local
	// Client trusts the system's CA and presents no client certificate.
	Client *http.Client
	// Alice and Bob are signed-in customers, each with a funded account.
	Alice, Bob *User
	// Funds is each fixture account's balance after set-up.
	Funds int64
	// LedgerRequestID is the correlation id of a fixture request that
	// crossed the gateway and the ledger (Alice's account opening).
	LedgerRequestID string
	// OutDir, when set, receives evidence files the checks write (the
	// audit sample).
	OutDir string

	run string
	// client is the X-Forwarded-For the current check's requests carry
	// when the gateway believes the pass (each check is its own client,
	// with its own per-IP budget); "" against a deployment.
	client  string
	clients int
	teller  *User
}

// nextClient gives the next check an address of its own.
func (f *Fixture) nextClient() {
	if !f.Target.ForwardedFor {
		return
	}
	f.clients++
	f.client = fmt.Sprintf("10.77.%d.%d", f.clients/250, 1+f.clients%250)
}

// User is a test user the pass signed up (or was given) and signed in.
type User struct {
	Name, Password string
	// Token is a user access token; Account an account the user owns.
	Token, Account string

	openedBy string // correlation id of the account opening
}

// Auth is the user's bearer header.
func (u *User) Auth() Header { return Bearer(u.Token) }

// testPassword meets the sign-up policy and is in no breach corpus; each
// user's password is it plus a per-user suffix.
const testPassword = "Ledger-Evidence-2026!x"

// NewFixture signs up and signs in two customers and opens a funded
// account for each.
func NewFixture(ctx context.Context, t Target, l Local) (*Fixture, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	f := &Fixture{Target: t, Local: l, Client: newClient(t, nil), run: hex.EncodeToString(b[:])}
	f.nextClient()
	var err error
	if f.Alice, err = f.NewCustomer(ctx, "alice"); err != nil {
		return nil, fmt.Errorf("fixture: %w", err)
	}
	if f.Bob, err = f.NewCustomer(ctx, "bob"); err != nil {
		return nil, fmt.Errorf("fixture: %w", err)
	}
	f.LedgerRequestID = f.Alice.openedBy
	if f.Funds, err = f.Balance(ctx, f.Alice); err != nil {
		return nil, fmt.Errorf("fixture: %w", err)
	}
	return f, nil
}

// Name returns a name unique to this run: "ev<run>-<label>".
func (f *Fixture) Name(label string) string { return "ev" + f.run + "-" + label }

// Key returns an Idempotency-Key field value unique to this run.
func (f *Fixture) Key(label string) string { return idempotency.FormatKey(f.Name(label)) }

// NewClient returns a client that trusts t's CA and follows no redirect.
func NewClient(t Target) *http.Client { return newClient(t, nil) }

func newClient(t Target, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: t.CA, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true},
		Timeout:   15 * time.Second,
		// A check sees a redirect as the answer it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// SignUp registers a new user named f.Name(label).
func (f *Fixture) SignUp(ctx context.Context, label string) (*User, error) {
	u := &User{Name: f.Name(label), Password: testPassword + label}
	r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/users", map[string]string{"username": u.Name, "password": u.Password}, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusCreated {
		return nil, fmt.Errorf("sign-up %s: %s", u.Name, r)
	}
	return u, nil
}

// SignIn signs u in through the gateway and keeps the access token.
func (f *Fixture) SignIn(ctx context.Context, u *User, h Header) error {
	r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": u.Password}, h)
	if err != nil {
		return err
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tr) != nil || tr.AccessToken == "" {
		return fmt.Errorf("sign-in %s: %s", u.Name, r)
	}
	u.Token = tr.AccessToken
	return nil
}

// NewCustomer signs up, signs in and opens a funded account.
func (f *Fixture) NewCustomer(ctx context.Context, label string) (*User, error) {
	u, err := f.SignUp(ctx, label)
	if err != nil {
		return nil, err
	}
	if err := f.SignIn(ctx, u, nil); err != nil {
		return nil, err
	}
	// The account id says nothing of its owner (the audit sample must not
	// name users).
	var b [4]byte
	_, _ = rand.Read(b[:])
	if err := f.OpenAccount(ctx, u, "acc-"+f.run+"-"+hex.EncodeToString(b[:])); err != nil {
		return nil, err
	}
	// Accounts open at zero; a teller funds them.
	if err := f.fund(ctx, u.Account, 10000); err != nil {
		return nil, fmt.Errorf("fund %s: %w", u.Account, err)
	}
	return u, nil
}

// fund deposits amount into account as a teller: in process on a system
// the pass started, else through the gateway with the teller credential
// the deployment gave the pass.
func (f *Fixture) fund(ctx context.Context, account string, amount int64) error {
	if f.Local != nil {
		return f.Local.Deposit(ctx, account, amount, "fund-"+account)
	}
	if f.teller == nil {
		c, ok := f.Target.WithRole("teller")
		if !ok {
			return errors.New("no teller among the test credentials: the pass cannot fund its accounts")
		}
		f.teller = &User{Name: c.Username, Password: c.Password}
		if err := f.SignIn(ctx, f.teller, nil); err != nil {
			f.teller = nil
			return err
		}
	}
	r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/deposits", map[string]any{"account": account, "amount": amount},
		f.teller.Auth().With("Idempotency-Key", f.Key("fund-"+account)))
	if err != nil {
		return err
	}
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		return fmt.Errorf("deposit: %s", r)
	}
	return nil
}

// OpenAccount opens an account for u and makes it u.Account.
func (f *Fixture) OpenAccount(ctx context.Context, u *User, id string) error {
	r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/accounts", map[string]string{"id": id}, u.Auth())
	if err != nil {
		return err
	}
	if r.Status != http.StatusCreated {
		return fmt.Errorf("open account for %s: %s", u.Name, r)
	}
	if got := JSONString(r.Body, "id"); got != "" {
		id = got
	}
	u.Account, u.openedBy = id, r.Header.Get("X-Request-ID")
	return nil
}

// Balance reads u's account balance through the gateway.
func (f *Fixture) Balance(ctx context.Context, u *User) (int64, error) {
	r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts/"+u.Account, nil, u.Auth())
	if err != nil {
		return 0, err
	}
	var a struct {
		Balance *int64 `json:"balance"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &a) != nil || a.Balance == nil {
		return 0, fmt.Errorf("balance of %s: %s", u.Account, r)
	}
	return *a.Balance, nil
}

// Transfer is a transfer request body.
type Transfer struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// Restart restarts the system the pass started (closing the pass's idle
// connections first, so the stop need not wait them out) and signs the
// fixture's users in again.
func (f *Fixture) Restart(ctx context.Context) error {
	f.Client.CloseIdleConnections()
	if err := f.Local.Restart(ctx); err != nil {
		return err
	}
	if err := f.Refresh(ctx); err != nil {
		return fmt.Errorf("after the restart: %w", err)
	}
	return nil
}

// Shutdown stops the system the pass started for good, closing the
// pass's idle connections first.
func (f *Fixture) Shutdown() error {
	f.Client.CloseIdleConnections()
	return f.Local.Shutdown()
}

// Refresh signs the fixture's users in again (after a restart, the old
// tokens' keys may be gone) and follows the target's new URLs.
func (f *Fixture) Refresh(ctx context.Context) error {
	if f.Local != nil {
		f.Target = f.Local.Target()
		f.Client = newClient(f.Target, nil)
	}
	return errors.Join(f.SignIn(ctx, f.Alice, nil), f.SignIn(ctx, f.Bob, nil))
}

// ClientAs returns a client that presents component's certificate to the
// system's internal listeners ("" presents none). Local only.
func (f *Fixture) ClientAs(component string) (*http.Client, error) {
	if f.Local == nil {
		return nil, NotApplicable("needs a system the pass started")
	}
	cfg, err := f.Local.ClientTLS(component)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true},
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
