// Package correlation gives every request one correlation id and carries
// it, with the OpenTelemetry trace, through spans, RED metrics and JSON
// logs; it raises an alarm when the 5xx ratio crosses a threshold, and
// writes log streams that are encrypted and tamper-evident.
//
// # Guarantees
//
//   - Every response carries an X-Request-ID (or [Config.Header]) and
//     every request context an id ([FromContext]). An inbound id is kept only when
//     Config.TrustIncoming approves the hop and the id passes [ValidID]
//     (8-64 bytes of [A-Za-z0-9._-]); otherwise a fresh time-sortable id
//     ([NewID], a ULID) replaces it and the inbound value is never echoed.
//     Untrusted hops cannot choose the trace parent either: their span
//     starts a new trace that links to the inbound one.
//   - [Middleware.Transport] sends the id and the trace context (W3C
//     traceparent, or [Config.Propagator]) on outbound calls, so gateway →
//     service → worker share one id and one trace.
//   - One server span per request, named "METHOD route" from the matched
//     pattern, with the id as the [SpanAttribute] attribute and the
//     OpenTelemetry HTTP server attributes; its client.address is the
//     resolved client address, never X-Forwarded-For as sent. Outbound
//     spans come from otelhttp's transport.
//   - [LogHandler] adds request_id, trace_id and span_id to every record
//     logged with a request context. The access log records method, route
//     pattern, status, bytes, duration (seconds) and client IP, plus what
//     inner layers add with [AddAttrs] (the verified subject, a tenant);
//     never the path, the query, headers, cookies or bodies.
//   - RED metrics through the OpenTelemetry metric API: the
//     [MetricDuration] histogram (its count is the rate) and the
//     [MetricErrors] counter, with the HTTP semantic-convention attributes
//     (method, route, status code, scheme, protocol version, error.type),
//     so stock dashboards match. Label values come from a bounded set:
//     unknown methods become "_OTHER", requests no route matched (refused
//     before routing, 404, 405) are labelled [route.Unrouted].
//   - A handler panic is answered with a generic 500 problem+json (or the
//     connection is cut if the response had begun), counted and logged
//     without the panic value.
//   - [Alarm] fires its hook once per crossing of the 5xx-ratio threshold
//     and resolves once with hysteresis; it logs at ERROR with
//     alarm=<name> and exports gauges.
//   - [EncryptedWriter] seals each log record with AES-256-GCM under a
//     rotating [KeyRing]; [EncryptedReader] verifies the chain and names
//     the first altered, moved, removed or cut record by index and offset.
//
// # Usage
//
// The reference system wires each service like this, with the correlation
// middleware outermost (inside the security headers):
//
//	logger := slog.New(correlation.NewLogHandler(slog.NewJSONHandler(os.Stdout, nil)))
//	alarm, err := correlation.NewAlarm(correlation.AlarmConfig{
//		MeterProvider: mp, Logger: logger, OnFire: page,
//	})
//	go alarm.Run(ctx, 0) // resolves an idle alarm; 0 = once per bucket
//	proxies, err := clientip.New(clientip.Config{
//		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
//	})
//	mw, err := correlation.New(correlation.Config{
//		TrustIncoming:  fromGateway, // e.g. checks the mTLS peer
//		Logger:         logger,
//		TracerProvider: tp,
//		MeterProvider:  mp, // otel SDK with the Prometheus exporter
//		Alarm:          alarm,
//		ClientIP:       proxies,              // resolved once, read by every layer inside
//		Route:          route.ServeMux(mux),  // the route, known before routing
//	})
//	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//	srv.Handler = hdrs.Handler(mw.Handler(authn(mux))) // hdrs: headers.New(...)
//	ledger := &http.Client{Transport: mw.Transport(tlsTransport)}
//
// In PromQL the request rate is
// rate(http_server_request_duration_seconds_count[5m]) and the error
// ratio is rate(malai_http_server_errors_total[5m]) over it.
//
// # Route patterns
//
// The route label comes from package route: [Config.Route] resolves it
// before the handler (and hands it to every layer inside), or an inner
// [route.Handler] or [route.RecordPattern] records it; a ServeMux directly
// inside is seen on its own. Without any of them a request is labelled
// [route.Unrouted]: never the raw path.
//
// # Security caveats
//
//   - TrustIncoming must identify the hop (mTLS peer, private listener),
//     never a header the client controls. Trusted ids are still validated.
//   - Ids are labels, not secrets: never authorise anything by one.
//   - The client IP comes from Config.ClientIP (or an address already in
//     the context); the default is the TCP peer, so behind a proxy pass a
//     resolver that trusts only that proxy.
//   - Logging still needs care inside handlers: wrap secrets in [Secret]
//     (or implement [slog.LogValuer]) so they print as [Redacted].
//   - The encrypted stream detects changes inside a stream but not a whole
//     valid stream (sealed under the same ring) replacing the file, or
//     the file being deleted (a stream repeated within one input is
//     refused); anchor it with signed
//     checkpoints (auditlog) if that matters. A crashed writer
//     leaves a stream without its end record, which reads as
//     [ErrTruncated]; the records before it are still verified.
//   - The alarm's hooks run synchronously under its lock: hand slow work
//     to a goroutine.
package correlation
