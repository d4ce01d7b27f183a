package opamp

import (
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
)

// readerConn is a net.Conn that reads from r.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// frame builds a masked client frame header (zero mask) and payload.
func frame(op byte, fin bool, n int) []byte {
	b := op
	if fin {
		b |= 0x80
	}
	var h []byte
	switch {
	case n < 126:
		h = []byte{b, 0x80 | byte(n)}
	case n < 1<<16:
		h = []byte{b, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		h = []byte{b, 0x80 | 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	h = append(h, 0, 0, 0, 0)
	return append(h, make([]byte, n)...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestFrameLimiter: the limit is per message (across continuation frames,
// control frames not counted), a message of exactly the limit passes, and
// the read fails at the header of the frame that passes it, before its
// payload, however the bytes are split across reads.
func TestFrameLimiter(t *testing.T) {
	const limit = 1000
	cases := []struct {
		name    string
		in      []byte
		tooBig  bool
		readMax int // bytes read before the failure, at most
	}{
		{"one frame at the limit", frame(2, true, limit), false, 0},
		{"two messages each at the limit", cat(frame(2, true, limit), frame(2, true, limit)), false, 0},
		{"one frame over", cat(frame(2, true, 70000)), true, 14},
		{"fragments over", cat(frame(2, false, 600), frame(9, true, 100), frame(0, false, 300), frame(0, true, 200)), true, 608 + 106 + 308 + 8}, // up to the header of the last frame
		{"fragments at the limit with pings", cat(frame(2, false, 600), frame(9, true, 125), frame(0, true, 400)), false, 0},
		{"huge length", cat([]byte{0x82, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}), true, 14},
	}
	for _, tc := range cases {
		for _, split := range []string{"whole", "bytewise"} {
			t.Run(tc.name+"/"+split, func(t *testing.T) {
				var r io.Reader = &byteCounter{data: tc.in}
				if split == "bytewise" {
					r = iotest.OneByteReader(r)
				}
				fl := &frameLimiter{Conn: readerConn{r: r}, limit: limit}
				got, err := io.ReadAll(fl)
				if tc.tooBig != errors.Is(err, errMessageTooLarge) || tc.tooBig != fl.tooLarge() {
					t.Fatalf("err = %v, want too large: %v", err, tc.tooBig)
				}
				if tc.tooBig && len(got) > tc.readMax {
					t.Fatalf("%d bytes handed on before the failure, want at most %d (no payload of the oversized frame)", len(got), tc.readMax)
				}
				if !tc.tooBig && len(got) != len(tc.in) {
					t.Fatalf("read %d of %d bytes", len(got), len(tc.in))
				}
			})
		}
	}
}

type byteCounter struct {
	data []byte
}

func (b *byteCounter) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}
