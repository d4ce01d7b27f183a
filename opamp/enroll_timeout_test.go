package opamp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
)

// manualTimers is an AfterFunc whose timers fire when the test says.
type manualTimers struct {
	delays []time.Duration
	fns    []func()
}

func (m *manualTimers) afterFunc(d time.Duration, f func()) func() bool {
	m.delays, m.fns = append(m.delays, d), append(m.fns, f)
	return func() bool { return true }
}

// TestEnrollTimeoutWithInjectedTimer: an enrolling WebSocket arms one
// enroll_timeout timer; when it fires, an idle connection is closed, and a
// connection whose CSR is in hand is left to its handler, which does not
// start issuing after the deadline.
func TestEnrollTimeoutWithInjectedTimer(t *testing.T) {
	s := benchServer(t)
	timers := &manualTimers{}
	s.cfg.AfterFunc, s.cfg.EnrollTimeout = timers.afterFunc, 7*time.Second
	ctx := context.Background()
	newConn := func() (*conn, *fakeLive) {
		c := &conn{s: s, kind: kindEnrolling, connInfo: connInfo{transport: transportWebSocket}}
		l := &fakeLive{}
		c.onConnected(ctx, l)
		return c, l
	}

	_, idle := newConn()
	if len(timers.fns) != 1 || timers.delays[0] != 7*time.Second {
		t.Fatalf("timers armed: %v, want one of enroll_timeout (7s)", timers.delays)
	}
	timers.fns[0]()
	if !idle.closed {
		t.Fatal("idle enrolling connection not closed at enroll_timeout")
	}

	busy, busyLive := newConn()
	busy.handling.Store(true) // a CSR in hand
	timers.fns[1]()
	if busyLive.closed {
		t.Fatal("connection closed under a CSR being handled")
	}
	busy.handling.Store(false)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	uid := uuid.Must(uuid.NewV7())
	out := busy.onMessage(ctx, busyLive, &protobufs.AgentToServer{InstanceUid: uid[:], ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{
			Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}}}})
	if out != nil || busy.issued.Load() {
		t.Fatalf("a CSR arriving after enroll_timeout was handled: %v", out)
	}
}
