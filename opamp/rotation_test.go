package opamp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/storage/state"
)

// rotatingAgent enrolls and connects an agent that follows rotations, and
// returns it with a channel of the serials it rotated to.
func (e *env) rotatingAgent(t *testing.T, cfg loadgen.AgentConfig) (*loadgen.Agent, string, <-chan string) {
	t.Helper()
	rotated := make(chan string, 4)
	cfg.ServerURL, cfg.CAPEM, cfg.Heartbeat = e.url("websocket"), e.CAPEM, time.Second
	cfg.OnRotated = func(serial string) { rotated <- serial }
	a, err := loadgen.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })
	ctx := ctx10(t)
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatal(err)
	}
	first := e.waitAgent(a.UID, func(g api.Agent) bool { return g.CertSerial != "" && len(g.Description) > 0 }).CertSerial
	return a, first, rotated
}

func (e *env) cert(serial string) state.Certificate {
	e.t.Helper()
	var c state.Certificate
	err := e.dir.Store.View(context.Background(), func(tx *state.Tx) (err error) {
		c, err = tx.CertificateBySerial(context.Background(), serial)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func waitSerial(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("agent never rotated")
		return ""
	}
}

func (e *env) waitRotation(id string, ok func(api.RotationStatus) bool) api.RotationStatus {
	e.t.Helper()
	var st api.RotationStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if st, err = e.Admin.Rotation(context.Background(), id); err == nil && ok(st) {
			return st
		}
	}
	e.t.Fatalf("rotation %s never reached the expected state: %+v", id, st)
	return st
}

// TestCSRRotationEndToEnd: an operator rotates an agent that declares
// io.trustamp.csr; it is asked for a CSR, gets the new certificate, and
// reconnects with it; the new certificate is confirmed, the old retired, and
// the old one still works until it expires.
func TestCSRRotationEndToEnd(t *testing.T) {
	e := start(t, "")
	a, oldSerial, rotated := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true})
	oldCert, oldKey := a.Cert(), a.KeyPEM()
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil || st.Total != 1 {
		t.Fatalf("rotate: %+v %v", st, err)
	}
	newSerial := waitSerial(t, rotated)
	if newSerial == oldSerial {
		t.Fatal("rotated to the same certificate")
	}
	st = e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.Done })
	if st.States["confirmed"] != 1 || st.Rotations[0].Method != "csr-request" || st.Rotations[0].Serial != newSerial {
		t.Fatalf("rotation status %+v", st)
	}
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.CertSerial == newSerial && g.Connected })
	if c := e.cert(newSerial); c.Status != state.CertConfirmed || c.ServerMadeKey {
		t.Fatalf("new certificate %+v", c)
	}
	if c := e.cert(oldSerial); c.Status != state.CertRetired || c.RetiredAt.IsZero() {
		t.Fatalf("old certificate %+v, want retired", c)
	}
	// A retired certificate is still valid: a rollback never strands an agent.
	got := e.mtlsPostWith(t, oldCert, oldKey, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 100})
	if got.ErrorResponse != nil {
		t.Fatalf("retired certificate refused: %v", got.ErrorResponse)
	}
	if !e.hasAudit("cert.confirm", newSerial) || !e.hasAudit("cert.rotation_request", st.ID) {
		t.Fatal("rotation not audited")
	}
}

func TestServerMadeKeyRotation(t *testing.T) {
	e := start(t, "certificates:\n  profiles:\n    default:\n      server_made_keys: true\n")
	a, oldSerial, rotated := e.rotatingAgent(t, loadgen.AgentConfig{AcceptServerKeys: true})
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	newSerial := waitSerial(t, rotated)
	st = e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.Done })
	if st.States["confirmed"] != 1 || st.Rotations[0].Method != "server-key" || newSerial == oldSerial {
		t.Fatalf("rotation %+v", st)
	}
	if c := e.cert(newSerial); !c.ServerMadeKey || c.Status != state.CertConfirmed {
		t.Fatalf("new certificate %+v", c)
	}
	// The server kept no private key: nothing in the store or data dir holds one unencrypted.
	if strings.Contains(e.cert(newSerial).PEM, "PRIVATE KEY") {
		t.Fatal("private key stored with the certificate")
	}
}

// TestRotationAwaitsAgentWithoutMeans: no CSR capability and no server-made
// keys: the rotation waits for the agent, which completes it by sending a
// CSR on its own.
func TestRotationAwaitsAgentWithoutMeans(t *testing.T) {
	e := start(t, "")
	a, _, rotated := e.rotatingAgent(t, loadgen.AgentConfig{})
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["awaiting-agent-renewal"] == 1 })
	if err := a.RequestRotation(); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, rotated)
	st = e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["confirmed"] == 1 })
	if st.Rotations[0].Method != "agent-csr" {
		t.Fatalf("rotation %+v", st.Rotations[0])
	}
}

// TestSchedulerRotatesWithoutOperator: once a certificate passes its renew
// point the scheduler rotates it on its own.
func TestSchedulerRotatesWithoutOperator(t *testing.T) {
	e := start(t, "certificates:\n  scan_interval: 100ms\n  profiles:\n    default:\n      lifetime: 1h\n")
	a, oldSerial, rotated := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true})
	if renew := e.cert(oldSerial).RenewAfter; renew.Sub(e.cert(oldSerial).NotBefore) > 41*time.Minute {
		t.Fatalf("renew point %v not at about 2/3 of a 1h life", renew)
	}
	select {
	case s := <-rotated:
		t.Fatalf("rotated to %s before the renew point", s)
	case <-time.After(500 * time.Millisecond):
	}
	e.Clock.Advance(45 * time.Minute)
	if newSerial := waitSerial(t, rotated); newSerial == oldSerial {
		t.Fatal("no new certificate")
	}
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.CertSerial != oldSerial })
}

// TestStalledRotationOldCertKeepsWorking: an agent that never applies the
// offer is marked stalled, is retried, and keeps connecting with its old
// certificate.
func TestStalledRotationOldCertKeepsWorking(t *testing.T) {
	e := start(t, "certificates:\n  offer_timeout: 1m\n  profiles:\n    default:\n      server_made_keys: true\n")
	a := e.agent("http")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	caps := uint64(protobufs.AgentCapabilities_AgentCapabilities_AcceptsOpAMPConnectionSettings | protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus)
	first := e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 1, Capabilities: caps})
	if first.ConnectionSettings != nil {
		t.Fatal("offer before any rotation was asked for")
	}
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	// Plain HTTP: the offer rides on the reply to the next poll.
	offer := e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 2})
	if offer.ConnectionSettings.GetOpamp().GetCertificate().GetPrivateKey() == nil {
		t.Fatalf("no server-made key offer on the next poll: %v", offer)
	}
	// The agent ignores it and keeps polling with its old certificate.
	e.Clock.Advance(2 * time.Minute)
	again := e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 3})
	if again.ErrorResponse != nil {
		t.Fatalf("old certificate refused during a stalled rotation: %v", again.ErrorResponse)
	}
	if again.ConnectionSettings == nil || string(again.ConnectionSettings.Hash) == string(offer.ConnectionSettings.Hash) {
		t.Fatal("stalled rotation not retried with a new offer")
	}
	got := e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["stalled"] == 1 })
	if got.Rotations[0].Attempts != 2 || !strings.Contains(got.Rotations[0].Error, "not confirmed") {
		t.Fatalf("stalled rotation %+v", got.Rotations[0])
	}
}

// TestAgentReportsFailedOffer: ConnectionSettingsStatus FAILED stalls the
// rotation with the agent's reason.
func TestAgentReportsFailedOffer(t *testing.T) {
	e := start(t, "certificates:\n  profiles:\n    default:\n      server_made_keys: true\n")
	a, _, _ := e.rotatingAgent(t, loadgen.AgentConfig{AcceptServerKeys: false})
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["stalled"] == 1 })
	if !strings.Contains(got.Rotations[0].Error, "does not accept server-made keys") {
		t.Fatalf("stalled without the agent's reason: %+v", got.Rotations[0])
	}
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.Connected })
}

func TestForbiddenKeyTypeRefusedWithReason(t *testing.T) {
	e := start(t, "certificates:\n  profiles:\n    default:\n      key_types: [ecdsa-p384]\n")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	got := decode(t, e.post(t, e.token(1, "10m", nil), &protobufs.AgentToServer{InstanceUid: uuidBytes(), ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}}}}))
	if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest ||
		!strings.Contains(got.ErrorResponse.GetErrorMessage(), "ecdsa-p256 is not allowed by certificate profile default") {
		t.Fatalf("P-256 CSR under a P-384-only profile: %v", got)
	}
}

func TestAgentCSRsAreRateLimited(t *testing.T) {
	e := start(t, "certificates:\n  agent_csr_interval: 1h\n")
	a := e.agent("http")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	var limited *protobufs.ServerErrorResponse
	for i := 0; i < 5 && limited == nil; i++ {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		got := e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: uint64(i + 1), ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
			Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}}}})
		if got.ErrorResponse != nil {
			if i < 3 {
				t.Fatalf("CSR %d refused within the burst: %v", i+1, got.ErrorResponse)
			}
			limited = got.ErrorResponse
		}
	}
	if limited.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_Unavailable || limited.GetRetryInfo() == nil {
		t.Fatalf("4th CSR within the interval: %v, want Unavailable with retry_info", limited)
	}
}
