package main

import (
	"flag"
	"log"
	"net/http"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	issuer := flag.String("issuer", "", "token issuer (iss), e.g. https://tenant.eu.auth0.com/")
	jwks := flag.String("jwks", "", "the issuer's JWKS URL")
	audience := flag.String("audience", "", "this API's audience")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
	data := flag.String("data", "data", "audit log directory")
	proxy := flag.String("trusted-proxy", "", "CIDR of the load balancer whose X-Forwarded-For counts")
	flag.Parse()

	opts, err := redis.ParseURL(*redisURL)
	if err != nil {
		log.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	var proxies []netip.Prefix
	if *proxy != "" {
		proxies = append(proxies, netip.MustParsePrefix(*proxy))
	}
	svc, err := New(Options{
		Issuer: *issuer, JWKSURL: *jwks, Audience: *audience,
		Redis: redis.NewClient(opts), Prefix: "consumer:", AuditDir: *data,
		TrustedProxies: proxies, PerIP: 600, PerUser: 120,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	srv := &http.Server{Addr: *addr, Handler: svc.Handler, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
