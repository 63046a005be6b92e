package headers

import "crypto/tls"

// tls12Suites are the TLS 1.2 suites Malai accepts: ECDHE key exchange
// (forward secrecy) with an AEAD cipher. Go's default list still carries
// CBC suites for TLS 1.2; these are not among them. TLS 1.3 suites are not
// configurable in crypto/tls and are all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSCipherSuites returns a copy of the TLS 1.2 suites [TLSConfig] allows.
func TLSCipherSuites() []uint16 { return append([]uint16(nil), tls12Suites...) }

// TLSConfig returns a copy of base (nil means an empty config, to which the
// caller adds Certificates or GetCertificate) hardened for the edge:
//
//   - MinVersion is at least TLS 1.2 (a higher floor in base is kept; a
//     MaxVersion below the floor is cleared);
//   - CipherSuites are exactly the ECDHE AEAD suites of [TLSCipherSuites],
//     whatever base listed;
//   - NextProtos is "h2", "http/1.1" when base sets none, so HTTP/2 is
//     negotiated by ALPN.
//
// Certificates, GetCertificate, ClientAuth and the rest of base are kept.
// For HTTP/3, give the same config to quic-go's http3.Server: QUIC
// requires TLS 1.3 and http3 sets its own ALPN on a clone.
func TLSConfig(base *tls.Config) *tls.Config {
	var c *tls.Config
	if base == nil {
		c = &tls.Config{}
	} else {
		c = base.Clone()
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.MaxVersion != 0 && c.MaxVersion < c.MinVersion {
		c.MaxVersion = 0
	}
	c.CipherSuites = TLSCipherSuites()
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"h2", "http/1.1"}
	}
	return c
}
