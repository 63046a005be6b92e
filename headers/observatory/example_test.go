package observatory_test

import (
	"fmt"
	"net/http"

	"github.com/malai-sec/malai/headers/observatory"
)

func ExampleScore() {
	h := http.Header{}
	h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains; preload")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Type", "application/json")
	res := observatory.Score(h, true)
	fmt.Println(res.Score, res.Grade)
	for _, t := range res.Tests {
		if t.Modifier != 0 {
			fmt.Printf("%s %+d\n", t.Result, t.Modifier)
		}
	}
	// Output:
	// 115 A+
	// csp-implemented-with-no-unsafe-default-src-none +10
	// x-frame-options-implemented-via-csp +5
}
