package opamp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/storage/state"
)

func (e *env) waitCertStatus(serial string, want state.CertStatus) state.Certificate {
	e.t.Helper()
	var c state.Certificate
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		err := e.dir.Store.View(context.Background(), func(tx *state.Tx) (err error) {
			c, err = tx.CertificateBySerial(context.Background(), serial)
			return err
		})
		if err == nil && c.Status == want {
			return c
		}
	}
	e.t.Fatalf("certificate %s never became %s: %+v", serial, want, c)
	return c
}

func (e *env) certsOf(t *testing.T, dest string) []state.Certificate {
	t.Helper()
	var out []state.Certificate
	e.dir.Store.View(context.Background(), func(tx *state.Tx) error {
		all, err := tx.Certificates(context.Background(), state.CertFilter{Statuses: []state.CertStatus{state.CertOffered, state.CertConfirmed, state.CertRetired}})
		for _, c := range all {
			if c.Destination == dest {
				out = append(out, c)
			}
		}
		return err
	})
	return out
}

func waitDest(t *testing.T, ch <-chan loadgen.DestinationCert) loadgen.DestinationCert {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(15 * time.Second):
		t.Fatal("no destination certificate")
		return loadgen.DestinationCert{}
	}
}

// TestOwnMetricsCertificateFromCSR: an agent that reports its own metrics
// gets a certificate of its own for the metrics destination, from a CSR it
// sends when asked, with the configured endpoint and headers; applying it
// confirms it. The OpAMP certificate is untouched.
func TestOwnMetricsCertificateFromCSR(t *testing.T) {
	e := start(t, `destinations:
  own_metrics:
    endpoint: https://metrics.example:4318
    headers: {X-Scope-OrgID: fleet}
`)
	got := make(chan loadgen.DestinationCert, 2)
	a, opampSerial, _ := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true, Destinations: []string{"own_metrics"},
		OnDestinationCert: func(d loadgen.DestinationCert) { got <- d }})
	d := waitDest(t, got)
	if d.Destination != "own_metrics" || d.Endpoint != "https://metrics.example:4318" || d.Headers["X-Scope-OrgID"] != "fleet" {
		t.Fatalf("destination offer %+v", d)
	}
	c := e.waitCertStatus(d.Serial, state.CertConfirmed)
	if c.Destination != "own_metrics" || c.ServerMadeKey || c.UID != a.UID.String() {
		t.Fatalf("destination certificate record %+v", c)
	}
	if e.cert(opampSerial).Status != state.CertConfirmed {
		t.Fatal("OpAMP certificate disturbed by the destination certificate")
	}
	if !e.hasAudit("cert.confirm", "own_metrics") {
		t.Fatal("destination certificate confirmation not audited")
	}
	// An operator can rotate the destination certificate on demand.
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}, Destination: "own_metrics"})
	if err != nil {
		t.Fatal(err)
	}
	next := waitDest(t, got)
	if next.Serial == d.Serial {
		t.Fatal("destination not rotated")
	}
	e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["confirmed"] == 1 })
	e.waitCertStatus(d.Serial, state.CertRetired)
	if e.cert(opampSerial).Status != state.CertConfirmed {
		t.Fatal("rotating the destination touched the OpAMP certificate")
	}
	if _, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{All: true, Destination: "nowhere"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unknown destination: %v", err)
	}
}

// TestOtherConnectionServerMadeKey: a destination whose profile allows
// server-made keys serves an agent without the CSR capability.
func TestOtherConnectionServerMadeKey(t *testing.T) {
	e := start(t, `certificates:
  profiles:
    exporters:
      server_made_keys: true
destinations:
  kafka:
    endpoint: kafka.example:9093
    profile: exporters
`)
	got := make(chan loadgen.DestinationCert, 2)
	a, _, _ := e.rotatingAgent(t, loadgen.AgentConfig{AcceptServerKeys: true, Destinations: []string{"kafka"},
		OnDestinationCert: func(d loadgen.DestinationCert) { got <- d }})
	d := waitDest(t, got)
	if d.Destination != "kafka" || d.Endpoint != "kafka.example:9093" {
		t.Fatalf("destination offer %+v", d)
	}
	c := e.waitCertStatus(d.Serial, state.CertConfirmed)
	if !c.ServerMadeKey || c.Profile != "exporters" || c.Destination != "kafka" || c.UID != a.UID.String() {
		t.Fatalf("destination certificate record %+v", c)
	}
}

// TestDestinationCertificatesAreRotatedOnSchedule: past the renew point the
// scheduler rotates a destination certificate like the OpAMP one, and the
// previous destination certificate is retired once the new one is applied.
func TestDestinationCertificatesAreRotatedOnSchedule(t *testing.T) {
	e := start(t, `certificates:
  scan_interval: 100ms
  profiles:
    hourly:
      lifetime: 1h
destinations:
  own_logs:
    endpoint: https://logs.example:4318
    profile: hourly
`)
	got := make(chan loadgen.DestinationCert, 4)
	e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true, Destinations: []string{"own_logs"},
		OnDestinationCert: func(d loadgen.DestinationCert) { got <- d }})
	first := waitDest(t, got)
	e.waitCertStatus(first.Serial, state.CertConfirmed)
	e.Clock.Advance(45 * time.Minute) // past 2/3 of the destination's 1h lifetime, not the OpAMP certificate's 24h
	second := waitDest(t, got)
	// Only the destination was due: the OpAMP certificate was not rotated.
	if n := len(e.certsOf(t, "opamp")); n != 1 {
		t.Fatalf("%d OpAMP certificates, want 1: the destination's schedule rotated the wrong certificate", n)
	}
	if second.Serial == first.Serial || second.Destination != "own_logs" {
		t.Fatalf("second destination certificate %+v", second)
	}
	e.waitCertStatus(second.Serial, state.CertConfirmed)
	e.waitCertStatus(first.Serial, state.CertRetired)
}

// TestSANTemplateFromAgentDescription: a profile's SAN template is filled
// from the attributes the agent reported; without one, no DNS SAN.
func TestSANTemplateFromAgentDescription(t *testing.T) {
	e := start(t, `certificates:
  profiles:
    default:
      san_templates: ["{service.name}.agents.example.com"]
`)
	a := e.agent("websocket")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, a.Cert())
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "trustamp-loadgen.agents.example.com" {
		t.Fatalf("DNS SANs %v, want the template filled from service.name", leaf.DNSNames)
	}
}
