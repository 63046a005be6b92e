package waf

import (
	"strconv"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
)

// The logging phase (5), run only when it has something to report.
//
// The gateway's audit engine is off, so what phase 5 does is what its
// rules do, and its only rules are the CRS's reporting ones
// (RESPONSE-980-CORRELATION). They add the anomaly scores up (980099)
// and report them (980170) only when the detection score is above zero
// or the reporting level is 5; otherwise they skip to their end (980043)
// and match nothing that logs. The gateway has decided and logged before
// phase 5 in any case. So on a transaction that scored nothing at
// reporting levels below 5, phase 5 is skipped: about a tenth of a clean
// API call's allocations. TestSkippedLoggingPhaseWouldNotHaveActed runs
// it on such transactions and finds nothing it would have reported.

// reportable reports whether phase 5 could report on tx: the CRS's
// detection scores are not both zero, or its reporting level is 5 or
// more, or tx's variables cannot be read.
func reportable(tx types.Transaction) bool {
	st, ok := tx.(plugintypes.TransactionState)
	if !ok {
		return true
	}
	vars := st.Variables().TX()
	for _, k := range []string{"detection_inbound_anomaly_score", "detection_outbound_anomaly_score"} {
		if v := vars.Get(k); len(v) > 0 && v[0] != "0" {
			return true
		}
	}
	if v := vars.Get("reporting_level"); len(v) > 0 {
		n, err := strconv.Atoi(v[0])
		return err != nil || n >= 5
	}
	return false
}
