package opamp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"testing"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/loadgen"
)

func rootPool(p []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p)
	return pool
}

func leafOf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIntermediateRolloverKeepsFleetConnected: rolling the intermediate over
// with agents connected cuts none of them off; new certificates chain to the
// new intermediate, old ones keep working for new connections.
func TestIntermediateRolloverKeepsFleetConnected(t *testing.T) {
	e := start(t, "")
	ctx := ctx10(t)
	var fleet []*loadgen.Agent
	var rotated []<-chan string
	for i := 0; i < 3; i++ {
		a, _, ch := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true})
		fleet, rotated = append(fleet, a), append(rotated, ch)
	}
	oldCert, oldKey := fleet[0].Cert(), fleet[0].KeyPEM()

	roll, err := e.Admin.RotateIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if roll.Current.Serial == roll.Previous.Serial {
		t.Fatal("intermediate not replaced")
	}
	// Nobody was disconnected (a rollover that reset connections would have
	// done so before the API answered).
	for _, a := range fleet {
		if n := e.srv.OpAMP.Connected(a.UID.String()); n != 1 {
			t.Fatalf("agent %s has %d live connections after the rollover, want 1", a.UID, n)
		}
	}
	// A pre-rollover certificate still opens new connections.
	if got := e.mtlsPostWith(t, oldCert, oldKey, &protobufs.AgentToServer{InstanceUid: fleet[0].UID[:], SequenceNum: 1000}); got.ErrorResponse != nil {
		t.Fatalf("pre-rollover certificate refused: %v", got.ErrorResponse)
	}
	// New certificates (enrollment and rotation) chain to the new intermediate.
	fresh := e.agent("http")
	if err := fresh.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	st, err := e.Admin.Rotate(ctx, api.RotationRequest{UIDs: []string{fleet[1].UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	waitSerial(t, rotated[1])
	e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["confirmed"] == 1 })
	for name, c := range map[string][]byte{"enrolled": fresh.Cert(), "rotated": fleet[1].Cert()} {
		chain := c[len(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafOf(t, c).Raw})):]
		if inter := leafOf(t, chain); hexOf(inter.SerialNumber.Bytes()) != roll.Current.Serial {
			t.Fatalf("%s certificate chains to intermediate %x, want the new %s", name, inter.SerialNumber.Bytes(), roll.Current.Serial)
		}
	}
	// The listener presents a certificate from the new intermediate at once.
	conn, err := tls.Dial("tcp", e.OpAMPAddr, &tls.Config{RootCAs: rootPool(e.CAPEM), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	chain := conn.ConnectionState().PeerCertificates
	conn.Close()
	if len(chain) < 2 || hexOf(chain[1].SerialNumber.Bytes()) != roll.Current.Serial {
		t.Fatal("listener still presents the previous intermediate's chain")
	}
	if !e.hasAudit("ca.rotate_intermediate", roll.Current.Serial) {
		t.Fatal("rollover not audited")
	}
}

func countCerts(p []byte) int {
	n := 0
	for {
		var b *pem.Block
		if b, p = pem.Decode(p); b == nil {
			return n
		}
		n++
	}
}

// TestRootRolloverKeepsFleetConnected: agents that trust only the old root
// stay connected, can still enroll and rotate (new chains carry the
// cross-signed intermediate), and are sent both roots during the overlap.
func TestRootRolloverKeepsFleetConnected(t *testing.T) {
	e := start(t, "")
	ctx := ctx10(t)
	oldRootPEM := e.CAPEM // what every agent here was configured with
	a, oldSerial, rotated := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true})

	roll, err := e.Admin.RotateRoot(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if roll.Current.Serial == roll.Previous.Serial {
		t.Fatal("root not replaced")
	}
	if n := e.srv.OpAMP.Connected(a.UID.String()); n != 1 {
		t.Fatalf("agent has %d live connections after the root rollover, want 1", n)
	}
	// /v1/ca.pem serves both roots during the overlap.
	resp, err := e.httpClient().Get("https://" + e.OpAMPAddr + "/v1/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if countCerts(bundle) != 2 {
		t.Fatalf("/v1/ca.pem has %d certificates during the overlap, want 2", countCerts(bundle))
	}
	// An agent that knows only the old root enrolls and reconnects.
	fresh, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.url("websocket"), CAPEM: oldRootPEM, Heartbeat: time.Second})
	t.Cleanup(func() { fresh.Stop(context.Background()) })
	if err := fresh.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatalf("old-root agent enrolling after the root rollover: %v", err)
	}
	if err := fresh.Connect(ctx, fresh.UID, nil); err != nil {
		t.Fatalf("old-root agent connecting with a new-chain certificate: %v", err)
	}
	// An existing agent rotates onto the new hierarchy and reconnects.
	st, err := e.Admin.Rotate(ctx, api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if waitSerial(t, rotated) == oldSerial {
		t.Fatal("not rotated")
	}
	e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["confirmed"] == 1 })
	if !e.hasAudit("ca.rotate_root", roll.Current.Serial) {
		t.Fatal("root rollover not audited")
	}
	// Finishing drops the old root from what is served.
	if _, err := e.Admin.RotateRoot(ctx, true); err != nil {
		t.Fatal(err)
	}
	resp, err = e.httpClient().Get("https://" + e.OpAMPAddr + "/v1/ca.pem")
	if err == nil {
		bundle, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if countCerts(bundle) != 1 {
		t.Fatalf("/v1/ca.pem has %d certificates after finishing, want 1", countCerts(bundle))
	}
}
