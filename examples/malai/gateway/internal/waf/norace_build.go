//go:build !race

package waf

import "time"

// defaultInspectionRate is Config.InspectionRate's default: a quarter of
// a core per client address.
const defaultInspectionRate = 250 * time.Millisecond
