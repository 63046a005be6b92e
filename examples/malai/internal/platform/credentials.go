package platform

import (
	"context"
	"errors"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/malai-sec/malai/correlation"
)

// ServiceClient returns an HTTP client for calls to peers that carries
// this component's own service token for scopes (from Env.Credentials),
// forwards the correlation id and trace context, and presents the
// component's certificate. No secret is configured, shared or written
// anywhere.
func (e *Env) ServiceClient(ctx context.Context, scopes ...string) (*http.Client, error) {
	if e.Credentials == nil {
		return nil, errors.New(e.Name + ": no service credentials configured")
	}
	src, err := e.Credentials(ctx, scopes...)
	if err != nil {
		return nil, err
	}
	tr := e.Transport()
	return &http.Client{
		Transport: correlation.Transport(&oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, src), Base: tr}, e.Telemetry.Tracer),
		Timeout:   30 * time.Second,
	}, nil
}
