package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// state is what the watcher knows after some bytes: whether a header
// block is open, and where in the stream it is.
func (c *headerWatch) state() (open bool, preface, hn int, skip uint32, ends bool) {
	c.mu.Lock()
	open = c.timer != nil
	c.mu.Unlock()
	return open, c.preface, c.hn, c.skip, c.ends
}

func quietWatch() *headerWatch {
	return watchHeaderBlocks(nil, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// frames is a client preface followed by the frames write writes.
func frames(write func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	write(http2.NewFramer(&b, nil))
	return b.Bytes()
}

func TestHeaderWatchTracksBlocks(t *testing.T) {
	block := headerBlock(getHealthz...)
	for _, tc := range []struct {
		name string
		data []byte
		open bool
	}{
		{"HEADERS with END_HEADERS", frames(func(fr *http2.Framer) {
			_ = fr.WriteSettings()
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
		}), false},
		{"HEADERS without END_HEADERS", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
		}), true},
		{"HEADERS, CONTINUATION without END_HEADERS", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
			_ = fr.WriteContinuation(1, false, block[4:8])
		}), true},
		{"HEADERS, CONTINUATION with END_HEADERS, DATA", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
			_ = fr.WriteContinuation(1, true, block[4:])
			_ = fr.WriteData(1, true, []byte("xyz"))
		}), false},
		{"payload of an ending HEADERS not all in", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
		})[:len(http2.ClientPreface)+9+2], true},
	} {
		for split := range len(tc.data) + 1 {
			w := quietWatch()
			w.scan(tc.data[:split])
			w.scan(tc.data[split:])
			if open, _, _, _, _ := w.state(); open != tc.open {
				t.Fatalf("%s, split at %d: open %v, want %v", tc.name, split, open, tc.open)
			}
			w.stop()
		}
	}
}

// FuzzHeaderWatch: the watcher reads any byte stream a client sends
// without panicking, and what it concludes does not depend on how the
// stream was cut into reads.
func FuzzHeaderWatch(f *testing.F) {
	block := headerBlock(getHealthz...)
	f.Add(frames(func(fr *http2.Framer) {
		_ = fr.WriteSettings()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
		_ = fr.WriteContinuation(1, true, block[4:])
		_ = fr.WriteData(1, true, []byte("xyz"))
	}), uint16(30), uint16(41))
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x00\x01\x00\x00\x00\x00\x01"), uint16(0), uint16(24))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16) {
		whole := quietWatch()
		whole.scan(data)
		i, j := int(a)%(len(data)+1), int(b)%(len(data)+1)
		if i > j {
			i, j = j, i
		}
		parts := quietWatch()
		parts.scan(data[:i])
		parts.scan(data[i:j])
		parts.scan(data[j:])
		o1, p1, h1, s1, e1 := whole.state()
		o2, p2, h2, s2, e2 := parts.state()
		if o1 != o2 || p1 != p2 || h1 != h2 || s1 != s2 || e1 != e2 {
			t.Fatalf("cut at %d and %d: %v %d %d %d %v, whole: %v %d %d %d %v", i, j, o2, p2, h2, s2, e2, o1, p1, h1, s1, e1)
		}
		whole.stop()
		parts.stop()
	})
}
