//go:build !linux

package jwtverify

func threadCPU() (int64, bool) { return 0, false }
