package memstore_test

import (
	"testing"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) auditlog.Store { return memstore.New() })
}

func TestTamper(t *testing.T) {
	storetest.RunTamper(t, func(*testing.T) auditlog.Store { return memstore.New() },
		func(t *testing.T, s auditlog.Store, fn func([]auditlog.Record, [][]byte) ([]auditlog.Record, [][]byte)) auditlog.Store {
			s.(*memstore.Store).Tamper(func(rows *[]auditlog.Record, cps *[][]byte) {
				*rows, *cps = fn(*rows, *cps)
			})
			return s
		}, storetest.TamperOptions{})
}
