package strictjson

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    error
		user    string
		pass    string
		wantSet bool
	}{
		{"ok", `{"username":"alice","password":"pw"}`, nil, "alice", "pw", true},
		{"ok whitespace", " {\n\"password\" : \"p\\u00e9\" } \n", nil, "", "pé", true},
		{"empty object", `{}`, nil, "", "", true},
		{"escaped replacement char is kept", `{"password":"\ufffd"}`, nil, "", "\ufffd", true},
		{"unknown member", `{"username":"a","admin":"true"}`, ErrUnknown, "", "", false},
		{"case variant is unknown", `{"Username":"a"}`, ErrUnknown, "", "", false},
		{"duplicate", `{"username":"a","username":"b"}`, ErrDuplicate, "", "", false},
		{"number", `{"username":1}`, ErrNotString, "", "", false},
		{"null", `{"username":null}`, ErrNotString, "", "", false},
		{"object value", `{"username":{"a":"b"}}`, ErrNotString, "", "", false},
		{"array body", `["a"]`, ErrNotObject, "", "", false},
		{"string body", `"a"`, ErrNotObject, "", "", false},
		{"empty body", ``, ErrSyntax, "", "", false},
		{"truncated", `{"username":"a"`, ErrSyntax, "", "", false},
		{"trailing object", `{"username":"a"}{"username":"b"}`, ErrTrailing, "", "", false},
		{"trailing garbage", `{"username":"a"} x`, ErrSyntax, "", "", false},
		{"invalid utf8", "{\"password\":\"a\xffb\"}", ErrInvalidText, "", "", false},
		{"lone surrogate", `{"password":"a\ud800b"}`, ErrInvalidText, "", "", false},
		{"trailing comma", `{"username":"a",}`, ErrSyntax, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var user, pass string
			err := Decode(strings.NewReader(tt.body), map[string]*string{"username": &user, "password": &pass})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(%q) error = %v, want %v", tt.body, err, tt.want)
			}
			if tt.wantSet && (user != tt.user || pass != tt.pass) {
				t.Fatalf("Decode(%q) = %q, %q", tt.body, user, pass)
			}
		})
	}
}

func TestDecodeBodyLimit(t *testing.T) {
	w := httptest.NewRecorder()
	r := http.MaxBytesReader(w, nopCloser{strings.NewReader(`{"username":"` + strings.Repeat("a", 100) + `"}`)}, 32)
	var u string
	err := Decode(r, map[string]*string{"username": &u})
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) {
		t.Fatalf("want *http.MaxBytesError, got %v", err)
	}
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }
