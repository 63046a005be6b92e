package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// revokeClientCmd is the operator's command that revokes one component
// task's key (or all of a component's keys) at identity: that task gets
// no new service token from the next request on, on every replica, and no
// other component or task is touched.
func revokeClientCmd(args []string) error {
	fs := flag.NewFlagSet("revoke-client", flag.ExitOnError)
	usage(fs, "revoke-client -identity URL [-data DIR] [-kid KID] CLIENT",
		"Revokes the key KID of component CLIENT (for example worker), or every key\n"+
			"it has registered when -kid is empty. The command presents an \"operator\"\n"+
			"certificate issued by the system CA under DIR/pki: only that certificate\n"+
			"may call identity's revocation route.")
	dataDir := fs.String("data", "malai-data", "data directory holding the system CA (pki/)")
	identityURL := fs.String("identity", "", "identity's internal `URL`, as malai prints it at start")
	kid := fs.String("kid", "", "the key id to revoke (default: every key of CLIENT)")
	fs.Parse(args)
	if *identityURL == "" || fs.NArg() != 1 {
		fs.Usage()
		return errors.New("revoke-client needs -identity and one CLIENT")
	}
	dir := filepath.Join(*dataDir, "pki")
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("revoke-client: no system CA under %s: %w", *dataDir, err)
	}
	ca, err := pki.LoadOrCreate(dir, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc, err := operatorClient(ca)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	n, err := revokeClient(ctx, hc, *identityURL, fs.Arg(0), *kid)
	if err != nil {
		return err
	}
	fmt.Printf("%d key(s) of %s revoked\n", n, fs.Arg(0))
	return nil
}

// operatorClient presents a fresh "operator" certificate of the system CA.
func operatorClient(ca *pki.CA) (*http.Client, error) {
	cert, err := ca.Issue(platform.Operator)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

// revokeClient calls identity's revocation route with hc (the operator's
// client) and returns how many keys were revoked.
func revokeClient(ctx context.Context, hc *http.Client, identityURL, client, kid string) (int, error) {
	body, _ := json.Marshal(map[string]string{"kid": kid})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, identityURL+identity.ClientsPath+"/"+url.PathEscape(client)+"/revoke", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("revoke-client: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(b, &p)
		return 0, fmt.Errorf("revoke-client: identity answered %d %s: %s", resp.StatusCode, p.Title, p.Detail)
	}
	var out struct {
		Revoked int `json:"revoked"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("revoke-client: unreadable answer: %w", err)
	}
	return out.Revoked, nil
}
