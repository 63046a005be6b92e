package evidence

import (
	"context"
	"errors"
	"fmt"
)

// authenticationChecks: "Short-lived JWT bearer tokens, signed with a
// managed key, validated on every request … Token lifetime measured in
// minutes."
func authenticationChecks() []Check {
	return []Check{
		{Row: RowAuthentication, Name: "sign-in issues a short-lived at+jwt user token", Run: func(ctx context.Context, f *Fixture) (string, error) {
			h, c := JWTPart(f.Alice.Token, 0), JWTPart(f.Alice.Token, 1)
			exp, _ := c["exp"].(float64)
			iat, _ := c["iat"].(float64)
			obs := fmt.Sprintf("typ=%v alg=%v kid set=%v aud=%v token_class=%v lifetime=%ds", h["typ"], h["alg"], h["kid"] != nil, c["aud"], c["token_class"], int(exp-iat))
			if h["typ"] != "at+jwt" || exp-iat <= 0 || exp-iat > 15*60 || c["token_class"] != "user" {
				return obs, errors.New("not a short-lived at+jwt user token")
			}
			return obs, nil
		}},
	}
}

// signInChecks: "Every sign-in runs through compromised-credentials
// detection and adaptive risk scoring … the password policy requires at
// least twelve characters with mixed case, numbers and symbols … high-risk
// sign-ins are blocked."
func signInChecks() []Check {
	refusedSignUp := func(name, password string) Check {
		return Check{Row: RowSignIn, Name: name, Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/users", map[string]string{"username": f.Name("refused"), "password": password}, nil)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("HTTP %d %s", r.Status, JSONString(r.Body, "type"))
			if r.Status < 400 || r.Status >= 500 {
				return obs, errors.New("sign-up accepted")
			}
			return obs, nil
		}}
	}
	return []Check{
		refusedSignUp("a password shorter than 12 characters is refused at sign-up", "Ab1!short"),
		refusedSignUp("a password without a symbol is refused at sign-up", "Abcdefgh12345"),
		refusedSignUp("a breached password is refused at sign-up (offline corpus)", "P@ssword12345!"),
		{Row: RowSignIn, Name: "adaptive risk: a burst of failures from one network blocks a sign-in from it with the right password", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				u, err := f.SignUp(ctx, "carol")
				if err != nil {
					return "", err
				}
				from := Header{"X-Forwarded-For": "198.51.100.23"}
				for i := 0; i < 12; i++ {
					if _, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": fmt.Sprintf("Wrong-Password-99!%d", i)}, from); err != nil {
						return "", err
					}
				}
				r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": u.Password}, from)
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("after 12 failures from 198.51.100.23 the right password from there → HTTP %d %s", r.Status, JSONString(r.Body, "type"))
				if r.Status == 200 {
					return obs, errors.New("sign-in allowed")
				}
				return obs, nil
			}},
		{Row: RowSignIn, Name: "a caller that bypasses the gateway cannot choose its client address for risk scoring", Local: true, Effect: Degrades,
			// Degrades: the failures count against this machine's own
			// address, which identity then blocks.
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				c, err := f.ClientAs("worker")
				if err != nil {
					return "", err
				}
				var last Response
				for i := 0; i < 15; i++ {
					r, err := Send(ctx, c, "POST", f.Local.IdentityURL()+"/v1/sessions", map[string]string{"username": f.Name(fmt.Sprintf("nobody%d", i)), "password": "Wrong-Password-99!x"},
						Header{"X-Forwarded-For": fmt.Sprintf("192.0.2.%d", i+1)})
					if err != nil {
						return "", err
					}
					last = r
				}
				obs := fmt.Sprintf("15 failed sign-ins straight at identity (as the worker) with 15 forged X-Forwarded-For → last HTTP %d %s", last.Status, JSONString(last.Body, "type"))
				if last.Status != 403 {
					return obs, errors.New("the forged addresses spread the failures")
				}
				return obs, nil
			}},
	}
}
