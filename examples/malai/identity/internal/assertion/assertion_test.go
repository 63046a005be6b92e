package assertion

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	now      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	endpoint = "https://malai.example/oauth2/token"
)

type keys struct {
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
	ec2 *ecdsa.PrivateKey
}

func newKeys(t testing.TB) keys {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return keys{ec: ec, ed: ed, ec2: ec2}
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// sign builds header.payload.signature from raw JSON texts.
func (k keys) sign(t testing.TB, header, payload string) string {
	in := enc(header) + "." + enc(payload)
	var sig []byte
	switch {
	case strings.Contains(header, `"EdDSA"`):
		sig = ed25519.Sign(k.ed, []byte(in))
	default:
		h := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

const (
	goodHeader = `{"alg":"ES256","kid":"k1","typ":"client-authentication+jwt"}`
	goodClaims = `{"iss":"worker","sub":"worker","aud":"https://malai.example/oauth2/token","jti":"j-1","iat":1772366400,"exp":1772366460}`
)

func claims(replace ...string) string {
	return strings.NewReplacer(replace...).Replace(goodClaims)
}

func TestAssertions(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		name   string
		token  func() string
		stage  string // where it must fail: parse, check, verify; "" accepts
		want   error
		verify any
	}{
		{"valid ES256", func() string { return k.sign(t, goodHeader, goodClaims) }, "", nil, nil},
		{"valid EdDSA", func() string { return k.sign(t, `{"alg":"EdDSA","kid":"k2"}`, goodClaims) }, "", nil, k.ed.Public()},
		{"typ JWT", func() string { return k.sign(t, `{"alg":"ES256","kid":"k1","typ":"JWT"}`, goodClaims) }, "", nil, nil},
		{"typ application/ spelling", func() string {
			return k.sign(t, `{"alg":"ES256","kid":"k1","typ":"application/Client-Authentication+JWT"}`, goodClaims)
		}, "", nil, nil},
		{"aud as a one-element array", func() string {
			return k.sign(t, goodHeader, claims(`"aud":"https://malai.example/oauth2/token"`, `"aud":["https://malai.example/oauth2/token"]`))
		}, "", nil, nil},
		{"an access token (typ at+jwt)", func() string { return k.sign(t, `{"alg":"ES256","kid":"k1","typ":"at+jwt"}`, goodClaims) }, "parse", ErrType, nil},
		{"alg none", func() string { return enc(`{"alg":"none","kid":"k1"}`) + "." + enc(goodClaims) + ".AA" }, "parse", ErrAlgorithm, nil},
		{"alg HS256 (client_secret_jwt)", func() string { return enc(`{"alg":"HS256","kid":"k1"}`) + "." + enc(goodClaims) + ".AAAA" }, "parse", ErrAlgorithm, nil},
		{"alg RS256", func() string { return enc(`{"alg":"RS256","kid":"k1"}`) + "." + enc(goodClaims) + ".AAAA" }, "parse", ErrAlgorithm, nil},
		{"no kid", func() string { return k.sign(t, `{"alg":"ES256"}`, goodClaims) }, "parse", ErrHeader, nil},
		{"crit", func() string { return k.sign(t, `{"alg":"ES256","kid":"k1","crit":["exp"]}`, goodClaims) }, "parse", ErrHeader, nil},
		{"embedded jwk", func() string { return k.sign(t, `{"alg":"ES256","kid":"k1","jwk":{"kty":"EC"}}`, goodClaims) }, "parse", ErrHeader, nil},
		{"jku", func() string { return k.sign(t, `{"alg":"ES256","kid":"k1","jku":"https://evil/jwks"}`, goodClaims) }, "parse", ErrHeader, nil},
		{"duplicate alg", func() string { return k.sign(t, `{"alg":"ES256","alg":"none","kid":"k1"}`, goodClaims) }, "parse", ErrMalformed, nil},
		{"duplicate sub", func() string { return k.sign(t, goodHeader, claims(`"sub":"worker"`, `"sub":"worker","sub":"ledger"`)) }, "parse", ErrMalformed, nil},
		{"duplicate nested member", func() string { return k.sign(t, goodHeader, claims(`"jti":"j-1"`, `"jti":"j-1","x":{"a":1,"a":2}`)) }, "parse", ErrMalformed, nil},
		{"exp as a string", func() string { return k.sign(t, goodHeader, claims(`"exp":1772366460`, `"exp":"1772366460"`)) }, "parse", ErrClaims, nil},
		{"negative iat", func() string { return k.sign(t, goodHeader, claims(`"iat":1772366400`, `"iat":-1`)) }, "parse", ErrClaims, nil},
		{"missing jti", func() string { return k.sign(t, goodHeader, claims(`"jti":"j-1",`, ``)) }, "parse", ErrClaims, nil},
		{"jti with a space", func() string { return k.sign(t, goodHeader, claims(`"j-1"`, `"j 1"`)) }, "parse", ErrClaims, nil},
		{"missing exp", func() string { return k.sign(t, goodHeader, claims(`,"exp":1772366460`, ``)) }, "parse", ErrClaims, nil},
		{"missing iat", func() string { return k.sign(t, goodHeader, claims(`"iat":1772366400,`, ``)) }, "parse", ErrClaims, nil},
		{"trailing data", func() string { return enc(goodHeader) + "." + enc(goodClaims+"{}") + ".AA" }, "parse", ErrMalformed, nil},
		{"invalid UTF-8", func() string { return enc(goodHeader) + "." + enc(`{"iss":"w`+"\xff"+`"}`) + ".AA" }, "parse", ErrMalformed, nil},
		{"padded base64", func() string { return k.sign(t, goodHeader, goodClaims) + "=" }, "parse", ErrMalformed, nil},
		{"four segments", func() string { return k.sign(t, goodHeader, goodClaims) + ".AA" }, "parse", ErrMalformed, nil},
		{"whitespace", func() string { return " " + k.sign(t, goodHeader, goodClaims) }, "parse", ErrMalformed, nil},
		{"too large", func() string { return strings.Repeat("A", MaxSize+1) }, "parse", ErrMalformed, nil},
		{"iss is another client", func() string { return k.sign(t, goodHeader, claims(`"iss":"worker"`, `"iss":"ledger"`)) }, "check", ErrIssuer, nil},
		{"sub is another client", func() string { return k.sign(t, goodHeader, claims(`"sub":"worker"`, `"sub":"ledger"`)) }, "check", ErrIssuer, nil},
		{"aud is the issuer", func() string { return k.sign(t, goodHeader, claims(`/oauth2/token"`, `"`)) }, "check", ErrAudience, nil},
		{"aud with a second value", func() string {
			return k.sign(t, goodHeader, claims(`"aud":"https://malai.example/oauth2/token"`, `"aud":["https://malai.example/oauth2/token","https://evil"]`))
		}, "check", ErrAudience, nil},
		{"expired", func() string {
			return k.sign(t, goodHeader, claims(`"iat":1772366400`, `"iat":1772366000`, `"exp":1772366460`, `"exp":1772366100`))
		}, "check", ErrExpired, nil},
		{"lifetime of ten minutes", func() string { return k.sign(t, goodHeader, claims(`"exp":1772366460`, `"exp":1772367000`)) }, "check", ErrLifetime, nil},
		{"iat in the future", func() string {
			return k.sign(t, goodHeader, claims(`"iat":1772366400`, `"iat":1772366450`, `"exp":1772366460`, `"exp":1772366500`))
		}, "check", ErrNotYetValid, nil},
		{"nbf in the future", func() string { return k.sign(t, goodHeader, claims(`"jti"`, `"nbf":1772366440,"jti"`)) }, "check", ErrNotYetValid, nil},
		{"signed by another key", func() string { return k.sign(t, goodHeader, goodClaims) }, "verify", ErrSignature, &k.ec2.PublicKey},
		{"EdDSA token, EC key", func() string { return k.sign(t, `{"alg":"EdDSA","kid":"k2"}`, goodClaims) }, "verify", ErrKey, &k.ec.PublicKey},
		{"ES256 token, Ed25519 key", func() string { return k.sign(t, goodHeader, goodClaims) }, "verify", ErrKey, k.ed.Public()},
		{"DER signature", func() string {
			in := enc(goodHeader) + "." + enc(goodClaims)
			h := sha256.Sum256([]byte(in))
			der, _ := ecdsa.SignASN1(rand.Reader, k.ec, h[:])
			return in + "." + base64.RawURLEncoding.EncodeToString(der)
		}, "verify", ErrSignature, nil},
		{"changed payload", func() string {
			tok := k.sign(t, goodHeader, goodClaims)
			parts := strings.Split(tok, ".")
			return parts[0] + "." + enc(claims(`"j-1"`, `"j-2"`)) + "." + parts[2]
		}, "verify", ErrSignature, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Parse(tc.token())
			stage := "parse"
			if err == nil {
				stage = "check"
				err = a.Check("worker", endpoint, now)
			}
			if err == nil {
				stage = "verify"
				var pub any = &k.ec.PublicKey
				if tc.verify != nil {
					pub = tc.verify
				}
				err = a.Verify(pub)
			}
			if tc.stage == "" {
				if err != nil {
					t.Fatalf("refused at %s: %v", stage, err)
				}
				return
			}
			if err == nil || stage != tc.stage || !errors.Is(err, tc.want) {
				t.Fatalf("got %v at %s, want %v at %s", err, stage, tc.want, tc.stage)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	k := newKeys(f)
	f.Add(k.sign(f, goodHeader, goodClaims))
	f.Add(k.sign(f, `{"alg":"EdDSA","kid":"k2"}`, goodClaims))
	f.Add(k.sign(f, goodHeader, claims(`"sub":"worker"`, `"sub":"worker","sub":"x"`)))
	f.Add(enc(`{"alg":"none"}`) + "." + enc(goodClaims) + ".")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		a, err := Parse(tok)
		if err != nil {
			return
		}
		if a.Algorithm != "ES256" && a.Algorithm != "EdDSA" || a.KeyID == "" || a.JTI == "" || len(a.JTI) > MaxJTI ||
			a.Issuer == "" || a.Subject == "" || len(a.Audience) == 0 || a.Expiry.IsZero() || a.IssuedAt.IsZero() {
			t.Fatalf("Parse accepted an incomplete assertion: %+v", a)
		}
		_ = a.Check("worker", endpoint, now)
		_ = a.Verify(&k.ec.PublicKey)
	})
}
