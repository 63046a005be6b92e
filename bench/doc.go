// Package bench holds benchmarks that compare Malai with peer libraries in
// the same run. It is a separate module so that Malai's users never
// download the peers. Each subpackage benchmarks one Malai package; the
// tables in BENCHMARKS.md at the repository root say which command
// produced them.
package bench
