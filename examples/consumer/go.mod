module example.com/malai-consumer

go 1.26.0

require (
	github.com/go-chi/chi/v5 v5.5.0
	github.com/malai-sec/malai v0.1.0
	github.com/redis/go-redis/v9 v9.23.0
	golang.org/x/mod v0.43.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/transparency-dev/merkle v0.0.2 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/malai-sec/malai => ../..
