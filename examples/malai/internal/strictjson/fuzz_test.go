package strictjson

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Whatever Check accepts is valid JSON whose objects decode with as many
// members as the text has, and Decode never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"from":"a","to":"b","amount":5}`, `{"amount":1000,"AMOUNT":3}`, `{"amount":1,"amount":2}`,
		`{"meta":{"note":"x"},"tags":[{"note":"y"}]}`, `{"from":"\ud83d\ude00"}`, `{"from":"\ud800"}`,
		`{"from":"\\ud800"}`, "{\"\u212aey\":1,\"key\":2}", `[1,{"a":{"b":[]}}]`, `{"a":1} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v transfer
		_ = Decode(b, &v)
		if Check(b) != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("Check accepted invalid JSON %q", b)
		}
		if bytes.ContainsRune(b, '\uFFFD') {
			return
		}
		var any1 any
		if err := json.Unmarshal(b, &any1); err != nil {
			t.Fatalf("Check accepted %q that does not unmarshal: %v", b, err)
		}
		re, _ := json.Marshal(any1)
		if bytes.ContainsRune(re, '\uFFFD') {
			t.Fatalf("Check accepted %q, which decodes with a replacement character", b)
		}
	})
}
