package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// logsCmd decrypts and verifies the encrypted log streams under -data:
// every component's, or those named.
func logsCmd(args []string) error {
	fs := flag.NewFlagSet("logs", flag.ExitOnError)
	usage(fs, "logs [-data DIR] [-summary] [gateway|identity|ledger|worker ...]",
		"Decrypts and verifies every log stream under -data/logs (one per component\nstart), or those of the components named, and writes their JSON lines to\nstandard output in stream order. Standard error gets one line per stream:\ncomplete, live (its process still writes it: read to its current end), or\ncut (its process died before closing it: every record before the cut is\nverified and printed). It works while the system runs. It exits 1 only when\na stream fails verification (altered, reordered or removed records, an\nunknown key); the other streams are still read.")
	dataDir := fs.String("data", "malai-data", "data directory")
	summary := fs.Bool("summary", false, "report the streams only, without their lines")
	fs.Parse(args)
	out := io.Writer(os.Stdout)
	if *summary {
		out = io.Discard
	}
	return readLogs(*dataDir, fs.Args(), out, os.Stderr)
}

// streamReport is what reading one log stream found.
type streamReport struct {
	Name    string
	Records int
	// State is "complete", "live" or "cut"; Err a verification failure
	// (State is then "") or a read error.
	State string
	At    int64 // byte offset where a live or cut stream ends
	Err   error
}

func (r streamReport) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("%s: %d records, then FAILED: %v", r.Name, r.Records, r.Err)
	case r.State == "live":
		return fmt.Sprintf("%s: %d records so far, live (its process is still writing it; read to byte %d)", r.Name, r.Records, r.At)
	case r.State == "cut":
		return fmt.Sprintf("%s: %d records, cut at byte %d (its process died before closing it; every record before is verified)", r.Name, r.Records, r.At)
	}
	return fmt.Sprintf("%s: %d records, complete", r.Name, r.Records)
}

// readLogs writes every verified line of the streams of components (all
// when empty) under dataDir to out, reports each stream to report, and
// fails only when a stream does not verify.
func readLogs(dataDir string, components []string, out, report io.Writer) error {
	keys, err := platform.LoadKeys(dataDir)
	if err != nil {
		return err
	}
	ring, err := keys.Ring()
	if err != nil {
		return err
	}
	patterns := []string{"*-*.log.enc"}
	if len(components) > 0 {
		patterns = patterns[:0]
		for _, c := range components {
			if c == "" || strings.ContainsAny(c, `/\*?[`) {
				return fmt.Errorf("logs: invalid component name %q", c)
			}
			patterns = append(patterns, c+"-*.log.enc")
		}
	}
	var files []string
	for _, p := range patterns {
		m, err := filepath.Glob(filepath.Join(dataDir, "logs", p))
		if err != nil {
			return err
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		return fmt.Errorf("logs: no log streams under %s", filepath.Join(dataDir, "logs"))
	}
	failed := 0
	for _, name := range files {
		r := readStream(name, ring, out)
		fmt.Fprintln(report, "logs:", r)
		if r.Err != nil {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d log streams failed verification", failed, len(files))
	}
	return nil
}

// readStream reads one stream file.
func readStream(name string, ring *correlation.KeyRing, out io.Writer) streamReport {
	r := streamReport{Name: filepath.Base(name)}
	f, err := os.Open(name)
	if err != nil {
		r.Err = err
		return r
	}
	defer f.Close()
	// Asked before reading: a writer that closes meanwhile leaves a
	// complete stream, which reads as one.
	live := platform.StreamLive(f)
	rd := correlation.NewEncryptedReader(f, ring)
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			r.State = "complete"
			return r
		}
		var se *correlation.StreamError
		if errors.Is(err, correlation.ErrTruncated) && errors.As(err, &se) {
			r.State, r.At = "cut", se.Offset
			if live {
				r.State = "live"
			}
			return r
		}
		if err != nil {
			r.Err = err
			return r
		}
		if _, err := out.Write(rec.Data); err != nil {
			r.Err = err
			return r
		}
		r.Records++
	}
}

// decryptLog writes the verified records of the stream in r to w.
func decryptLog(r io.Reader, ring *correlation.KeyRing, w io.Writer) error {
	rd := correlation.NewEncryptedReader(r, ring)
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(rec.Data); err != nil {
			return err
		}
	}
}
