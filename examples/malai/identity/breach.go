package identity

import (
	"bufio"
	"context"
	"crypto/sha1" // the range API is keyed by SHA-1 by definition; nothing relies on its collision resistance
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RangeChecker is a [BreachChecker] for a k-anonymity range API in the
// style of Have I Been Pwned's Pwned Passwords: only the first five hex
// digits of the password's SHA-1 leave the process, and the service
// answers with every known suffix under that prefix ("SUFFIX:COUNT" per
// line), so it never learns which password was checked. Padding is
// requested (Add-Padding: true) so the response size does not reveal the
// prefix's population either; padded entries have count 0 and are
// ignored.
//
// The zero value is not usable: set BaseURL. A RangeChecker is safe for
// concurrent use.
type RangeChecker struct {
	// BaseURL is the range endpoint; the prefix is appended. For HIBP:
	// "https://api.pwnedpasswords.com/range/".
	BaseURL string
	// Client performs the requests. Default: a client with a 5 s timeout.
	Client *http.Client
	// MinCount is how many sightings make a password compromised. Default 1.
	MinCount int
}

// maxRangeBody caps a range response (HIBP's padded pages are ~40 KiB).
const maxRangeBody = 1 << 20

var defaultRangeClient = &http.Client{Timeout: 5 * time.Second}

// ErrBreachService reports a range API that failed or answered badly.
var ErrBreachService = errors.New("identity: breach range service failed")

// Breached implements [BreachChecker].
func (c *RangeChecker) Breached(ctx context.Context, password string) (bool, error) {
	if c.BaseURL == "" {
		return false, fmt.Errorf("%w: no BaseURL", ErrBreachService)
	}
	sum := sha1.Sum([]byte(password))
	digest := strings.ToUpper(hex.EncodeToString(sum[:]))
	prefix, suffix := digest[:5], digest[5:]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+prefix, nil)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrBreachService, err)
	}
	req.Header.Set("Add-Padding", "true")
	client := c.Client
	if client == nil {
		client = defaultRangeClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrBreachService, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%w: status %d", ErrBreachService, resp.StatusCode)
	}
	minCount := c.MinCount
	if minCount < 1 {
		minCount = 1
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, maxRangeBody))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		got, count, ok := strings.Cut(line, ":")
		if !ok || len(got) != 35 {
			continue
		}
		if strings.EqualFold(got, suffix) {
			n, err := strconv.Atoi(count)
			return err == nil && n >= minCount, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("%w: %v", ErrBreachService, err)
	}
	return false, nil
}

// AnyBreachChecker reports a password as compromised when any checker
// does, asking them in order and stopping at the first hit; the usual
// pairing is [OfflineCorpus] (no network) then a [RangeChecker]. An error
// from any checker that is reached is returned, failing closed.
func AnyBreachChecker(checkers ...BreachChecker) BreachChecker {
	return anyChecker(checkers)
}

type anyChecker []BreachChecker

func (a anyChecker) Breached(ctx context.Context, password string) (bool, error) {
	for _, c := range a {
		hit, err := c.Breached(ctx, password)
		if err != nil || hit {
			return hit, err
		}
	}
	return false, nil
}
