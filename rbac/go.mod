module github.com/malai-sec/malai/rbac

go 1.26.0

require (
	github.com/casbin/casbin/v2 v2.135.0
	github.com/google/go-cmp v0.7.0
	github.com/malai-sec/malai v0.1.0
)

require (
	github.com/bmatcuk/doublestar/v4 v4.6.1 // indirect
	github.com/casbin/govaluate v1.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
)

replace github.com/malai-sec/malai => ../
