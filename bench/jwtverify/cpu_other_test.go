//go:build !linux

package jwtverifybench

func threadCPU() (int64, bool) { return 0, false }
