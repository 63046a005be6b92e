//go:build race

package waf

// The race detector makes every inspection about twenty times slower, so
// a budget of inspection time sized for a normal build would refuse an
// ordinary client: there the default is off.
const defaultInspectionRate = -1
