package main

import (
	"flag"
	"os"
	"strings"
)

// telemetryFlags adds the observability flags every component command
// takes: where the error-rate alarm's changes go, and where spans are
// exported.
func telemetryFlags(fs *flag.FlagSet, o *Options) {
	fs.StringVar(&o.AlarmHook.Webhook, "alarm-webhook", "", "URL that receives each error-rate alarm change (fired, resolved) as a JSON POST")
	fs.Func("alarm-command", "program (and space-separated arguments, no shell) run with each alarm change as JSON on its standard input", func(v string) error {
		o.AlarmHook.Command = strings.Fields(v)
		return nil
	})
	fs.StringVar(&o.OTLPEndpoint, "otlp-endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "OpenTelemetry collector base URL for OTLP/HTTP span export, e.g. http://127.0.0.1:4318 (default $OTEL_EXPORTER_OTLP_ENDPOINT; empty: spans stay in a bounded in-memory ring)")
}
