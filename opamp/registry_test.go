package opamp

import (
	"context"
	"net"
	"testing"

	"github.com/open-telemetry/opamp-go/protobufs"
)

// fakeLive is a live connection that records Disconnect.
type fakeLive struct{ closed bool }

func (f *fakeLive) Connection() net.Conn                                 { return nil }
func (f *fakeLive) Send(context.Context, *protobufs.ServerToAgent) error { return nil }
func (f *fakeLive) Disconnect() error                                    { f.closed = true; return nil }

// TestDisconnectCerts: revoking one certificate closes only the
// connections that authenticated with it, not the agent's others.
func TestDisconnectCerts(t *testing.T) {
	r := newRegistry()
	mk := func(uid, serial string) (*conn, *fakeLive) {
		l := &fakeLive{}
		c := &conn{certSerial: serial, live: l}
		r.add(uid, c)
		return c, l
	}
	_, oldConn := mk("a", "s1")
	_, newConn := mk("a", "s2")
	_, other := mk("b", "s3")
	closed := r.disconnectCerts(map[string][]string{"a": {"s1"}, "b": {"s9"}})
	if closed["s1"] != 1 || closed["s9"] != 0 || len(closed) != 2 {
		t.Fatalf("closed %v", closed)
	}
	if !oldConn.closed || newConn.closed || other.closed {
		t.Fatalf("closed: s1 %v, s2 %v, s3 %v; want only s1", oldConn.closed, newConn.closed, other.closed)
	}
	if r.count("a") != 1 || r.count("b") != 1 {
		t.Fatalf("registry counts a=%d b=%d, want 1 and 1", r.count("a"), r.count("b"))
	}
}
