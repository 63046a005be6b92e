package evidence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
		reRegisterCheck,
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
		// Failures from many networks, one each, so that no pair or
		// network throttle holds any back: every one counts, whatever
		// the machine's load (from one network the progressive delay
		// throttles the burst, and a delay that has run out lets the
		// right password in, as it should).
		{Row: RowSignIn, Name: "adaptive risk: 12 wrong passwords from 12 networks put the account under attack; the right password from a new network is refused", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				u, err := f.SignUp(ctx, "carol")
				if err != nil {
					return "", err
				}
				codes := map[int]int{}
				for i := 0; i < 12; i++ {
					r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": fmt.Sprintf("Wrong-Password-99!%d", i)},
						Header{"X-Forwarded-For": fmt.Sprintf("198.18.%d.23", 40+i)})
					if err != nil {
						return "", err
					}
					codes[r.Status]++
				}
				r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": u.Password},
					Header{"X-Forwarded-For": "198.18.60.23"})
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("12 failures from 12 networks → %v; the right password from a 13th → HTTP %d %s", codes, r.Status, JSONString(r.Body, "type"))
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
				// 403 caller-not-allowed: sign-in admits only the components
				// that forward a client's address (gateway, web); 429 or 403
				// sign-in-blocked: identity throttles the one real address.
				if last.Status != 429 && last.Status != 403 {
					return obs, errors.New("the forged addresses spread the failures")
				}
				return obs, nil
			}},
		mfaReauthCheck, ownerLockoutCheck, sprayCheck,
	}
}

// mfaReauthCheck: a stolen access token alone cannot enrol a second
// factor (which would lock the owner out with the thief's codes).
var mfaReauthCheck = Check{Row: RowSignIn, Name: "MFA enrolment with an access token alone is refused; with the current password it proceeds",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		u, err := f.SignUp(ctx, "mfa")
		if err != nil {
			return "", err
		}
		if err := f.SignIn(ctx, u, nil); err != nil {
			return "", err
		}
		alone, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/mfa/totp", map[string]string{}, u.Auth())
		if err != nil {
			return "", err
		}
		wrong, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/mfa/totp", map[string]string{"password": u.Password + "x"}, u.Auth())
		if err != nil {
			return "", err
		}
		right, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/mfa/totp", map[string]string{"password": u.Password}, u.Auth())
		if err != nil {
			return "", err
		}
		obs := fmt.Sprintf("token alone → %d %s; wrong password → %d %s; current password → %d",
			alone.Status, JSONString(alone.Body, "type"), wrong.Status, JSONString(wrong.Body, "type"), right.Status)
		switch {
		case alone.Status < 400 || alone.Status >= 500, wrong.Status < 400 || wrong.Status >= 500:
			return obs, errors.New("enrolment accepted without re-authentication")
		case right.Status >= 300:
			return obs, errors.New("enrolment refused with the current password")
		}
		return obs, nil
	}}

// deviceCookie is identity's signed cookie for a device that signed in.
const deviceCookie = "__Secure-malai-device"

// ownerLockoutCheck: failures aimed at one account from several networks
// must not lock its owner out on a device that signed in before.
var ownerLockoutCheck = Check{Row: RowSignIn, Local: true,
	Name: "5 failures from each of 4 networks do not lock the owner out on a device that signed in before",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		u, err := f.SignUp(ctx, "owner")
		if err != nil {
			return "", err
		}
		home := Header{"X-Forwarded-For": "198.51.100.40"}
		r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": u.Password}, home)
		if err != nil {
			return "", err
		}
		var device string
		for _, c := range (&http.Response{Header: r.Header}).Cookies() {
			if c.Name == deviceCookie {
				device = c.Value
			}
		}
		if r.Status != http.StatusOK || device == "" {
			return "", fmt.Errorf("first sign-in: %s, device cookie set=%v", r, device != "")
		}
		codes := map[int]int{}
		for n := 1; n <= 4; n++ {
			for i := 0; i < 5; i++ {
				r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": fmt.Sprintf("Wrong-Password-%d-%d!x", n, i)},
					Header{"X-Forwarded-For": fmt.Sprintf("198.18.%d.7", n)})
				if err != nil {
					return "", err
				}
				codes[r.Status]++
			}
		}
		owner, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": u.Name, "password": u.Password},
			home.With("Cookie", deviceCookie+"="+device))
		if err != nil {
			return "", err
		}
		obs := fmt.Sprintf("20 failures from 4 networks → %v; then the owner on the known device → %d %s", codes, owner.Status, JSONString(owner.Body, "type"))
		if owner.Status != http.StatusOK {
			return obs, errors.New("the owner was locked out")
		}
		return obs, nil
	}}

// sprayCheck: one password tried against many accounts from many
// networks is detected and slowed, and nobody else is slowed with it.
var sprayCheck = Check{Row: RowSignIn, Local: true,
	Name: "password spraying (one password, 30 accounts, 30 networks) is detected and slowed; other users still sign in",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		var victims []*User
		for i := 0; i < 6; i++ {
			u, err := f.SignUp(ctx, fmt.Sprintf("spray%d", i))
			if err != nil {
				return "", err
			}
			victims = append(victims, u)
		}
		first := 0
		var slowed Response
		for i := 0; i < 30; i++ {
			name := f.Name(fmt.Sprintf("nobody-spray%d", i))
			if i < len(victims) {
				name = victims[i].Name
			}
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/sessions", map[string]string{"username": name, "password": "Summer-2026-Spray!"},
				Header{"X-Forwarded-For": fmt.Sprintf("198.19.%d.9", i+1)})
			if err != nil {
				return "", err
			}
			if r.Status == http.StatusTooManyRequests {
				first, slowed = i+1, r
				break
			}
		}
		if err := f.SignIn(ctx, f.Alice, nil); err != nil {
			return "", fmt.Errorf("another user after the spray: %w", err)
		}
		if first == 0 {
			return "30 attempts, never slowed", errors.New("spraying was not detected")
		}
		return fmt.Sprintf("slowed at attempt %d: 429 %s Retry-After=%s; another user still signs in", first, JSONString(slowed.Body, "type"), slowed.Header.Get("Retry-After")), nil
	}}

// reRegisterCheck: a name once taken stays its owner's across a restart.
var reRegisterCheck = Check{Row: RowAuthentication, Local: true, Effect: Restarts,
	Name: "after a restart a username cannot be registered again, and its owner's account stays theirs alone",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		u, err := f.NewCustomer(ctx, "heir")
		if err != nil {
			return "", err
		}
		bal, err := f.Balance(ctx, u)
		if err != nil {
			return "", err
		}
		if err := f.Restart(ctx); err != nil {
			return "", err
		}
		again, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/users", map[string]string{"username": u.Name, "password": testPassword + "thief"}, nil)
		if err != nil {
			return "", err
		}
		thief := &User{Name: u.Name, Password: testPassword + "thief", Account: u.Account}
		thiefErr := f.SignIn(ctx, thief, nil)
		if err := f.SignIn(ctx, u, nil); err != nil {
			return "", fmt.Errorf("the owner after the restart: %w", err)
		}
		after, err := f.Balance(ctx, u)
		if err != nil {
			return "", err
		}
		obs := fmt.Sprintf("re-registering %s after a restart → %d %s; the newcomer's password signs in: %v; the owner signs in and sees %d (was %d)",
			u.Name, again.Status, JSONString(again.Body, "type"), thiefErr == nil, after, bal)
		switch {
		case again.Status < 400 || again.Status >= 500 || thiefErr == nil:
			return obs, errors.New("the name passed to someone else")
		case after != bal:
			return obs, errors.New("the owner's balance changed across the restart")
		}
		return obs, nil
	}}
