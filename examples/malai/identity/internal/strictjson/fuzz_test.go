package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode: never panics; whatever it accepts, encoding/json accepts as
// an object of strings with the same values; decoded strings are valid
// UTF-8.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"username":"alice","password":"pw"}`,
		`{"username":"a","username":"b"}`,
		`{"Username":"a"}`,
		`{"password":"\ud83d\ude00"}`,
		`{"password":"a\ud800b"}`,
		"{\"password\":\"a\xffb\"}",
		`{"username":"a"} {"username":"b"}`,
		`{"username":1}`,
		`[{"username":"a"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var user, pass string
		if err := Decode(strings.NewReader(string(body)), map[string]*string{"username": &user, "password": &pass}); err != nil {
			return
		}
		var plain map[string]string
		if err := json.Unmarshal(body, &plain); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		for k, v := range plain {
			want := map[string]string{"username": user, "password": pass}[k]
			if k != "username" && k != "password" || v != want {
				t.Fatalf("member %q = %q, decoded %q", k, v, want)
			}
		}
		if !utf8.ValidString(user) || !utf8.ValidString(pass) {
			t.Fatal("invalid UTF-8 decoded")
		}
	})
}
