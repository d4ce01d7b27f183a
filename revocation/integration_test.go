package revocation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/revocation"
	"github.com/trustamp/trustamp/tokens"
)

// fleet is a running server with helpers to enroll and connect agents.
type fleet struct {
	t    *testing.T
	env  *servertest.Env
	ctx  context.Context
	http *http.Client
}

func newFleet(t *testing.T) *fleet {
	env := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &fleet{t: t, env: env, ctx: ctx, http: newFleetHTTP(env)}
}

func newFleetHTTP(env *servertest.Env) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CAPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func (f *fleet) token(labels map[string]string) string {
	f.t.Helper()
	tok, err := f.env.Admin.CreateToken(f.ctx, api.TokenRequest{Uses: 1, Labels: labels})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// agent enrolls a simulated opamp-go agent and connects it over mTLS.
func (f *fleet) agent(labels map[string]string) *loadgen.Agent {
	f.t.Helper()
	a, err := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: f.env.URL("websocket"), CAPEM: f.env.CAPEM})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := a.Enroll(f.ctx, f.token(labels)); err != nil {
		f.t.Fatal(err)
	}
	if err := a.Connect(f.ctx, a.UID, nil); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { a.Stop(context.Background()) })
	f.eventually("agent registered", func() bool { return f.env.Server.OpAMP.Connected(a.UID.String()) == 1 })
	return a
}

func (f *fleet) eventually(what string, cond func() bool) {
	f.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	f.t.Fatalf("timed out waiting for: %s", what)
}

// reconnect stops a's client and connects again with the same certificate.
func (f *fleet) reconnect(a *loadgen.Agent) error {
	a.Stop(f.ctx)
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	return a.Connect(ctx, a.UID, nil)
}

func leaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fleet) intermediate() *x509.Certificate {
	f.t.Helper()
	b, err := os.ReadFile(f.env.Dir.Layout.CAFiles().Intermediate())
	if err != nil {
		f.t.Fatal(err)
	}
	return leaf(f.t, b)
}

func (f *fleet) get(path string) []byte {
	f.t.Helper()
	resp, err := f.http.Get("https://" + f.env.OpAMPAddr + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body
}

func (f *fleet) crl() *x509.RevocationList {
	f.t.Helper()
	crl, err := x509.ParseRevocationList(f.get("/v1/crl"))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(f.intermediate()); err != nil {
		f.t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

func crlEntry(crl *x509.RevocationList, serial *big.Int) (x509.RevocationListEntry, bool) {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return e, true
		}
	}
	return x509.RevocationListEntry{}, false
}

func (f *fleet) ocsp(cert *x509.Certificate) *ocsp.Response {
	f.t.Helper()
	issuer := f.intermediate()
	req, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.http.Post("https://"+f.env.OpAMPAddr+"/v1/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r, err := ocsp.ParseResponse(body, issuer)
	if err != nil {
		f.t.Fatalf("OCSP response: %v", err)
	}
	if r.NextUpdate.IsZero() || !r.NextUpdate.After(r.ThisUpdate) {
		f.t.Fatalf("OCSP response without a usable nextUpdate: %v .. %v", r.ThisUpdate, r.NextUpdate)
	}
	return r
}

func isRefused(err error) bool {
	return errors.Is(err, loadgen.ErrConnectFailed) && strings.Contains(err.Error(), "401")
}

// TestRevokeConnectedAgent is the main path: a connected agent is
// revoked, its WebSocket closes at once, a reconnect with the same
// certificate is refused with 401, the others stay connected, the CRL and
// OCSP say revoked, the identity is quarantined until a security officer
// releases it, and the compliance report shows exactly this revocation.
func TestRevokeConnectedAgent(t *testing.T) {
	f := newFleet(t)
	start := f.env.Clock.Now()
	victim := f.agent(map[string]string{"site": "fra"})
	bystander := f.agent(map[string]string{"site": "fra"})
	victimCert := leaf(t, victim.Cert())
	if len(victimCert.CRLDistributionPoints) != 1 || !strings.HasSuffix(victimCert.CRLDistributionPoints[0], "/v1/crl") ||
		len(victimCert.OCSPServer) != 1 || !strings.HasSuffix(victimCert.OCSPServer[0], "/v1/ocsp") {
		t.Fatalf("agent certificate lacks CRL DP / OCSP URL: %v %v", victimCert.CRLDistributionPoints, victimCert.OCSPServer)
	}
	if r := f.ocsp(victimCert); r.Status != ocsp.Good {
		t.Fatalf("OCSP before revocation: status %d, want good", r.Status)
	}
	crlBefore := f.crl()

	res, err := f.env.Admin.Revoke(f.ctx, api.RevocationRequest{UIDs: []string{victim.UID.String()}, Reason: "keyCompromise", Note: "host breached"})
	if err != nil {
		t.Fatal(err)
	}
	// The connection is gone when Revoke returns, not eventually.
	if n := f.env.Server.OpAMP.Connected(victim.UID.String()); n != 0 {
		t.Fatalf("victim still has %d live connections after revoke returned", n)
	}
	if res.ClosedConnections != 1 || res.DisconnectedAt == nil || len(res.Revoked) != 1 ||
		len(res.Quarantined) != 1 || res.Quarantined[0] != victim.UID.String() {
		t.Fatalf("revoke result %+v", res)
	}
	if n := f.env.Server.OpAMP.Connected(bystander.UID.String()); n != 1 {
		t.Fatalf("bystander has %d connections after another agent's revocation, want 1", n)
	}
	if err := f.reconnect(victim); !isRefused(err) {
		t.Fatalf("reconnect with the revoked certificate: %v, want a 401 refusal", err)
	}

	crl := f.crl()
	e, ok := crlEntry(crl, victimCert.SerialNumber)
	if !ok || e.ReasonCode != 1 || e.RevocationTime.IsZero() {
		t.Fatalf("CRL entry for %x: %+v (found %v), want reason keyCompromise (1)", victimCert.SerialNumber, e, ok)
	}
	if crl.Number.Cmp(crlBefore.Number) <= 0 || crl.Number.Int64() != res.CRLNumber {
		t.Fatalf("CRL number %v after %v (revoke said %d): must increase", crl.Number, crlBefore.Number, res.CRLNumber)
	}
	if _, ok := crlEntry(crl, leaf(t, bystander.Cert()).SerialNumber); ok {
		t.Fatal("bystander's certificate is on the CRL")
	}
	pemCRL := f.get("/v1/crl.pem")
	if b, _ := pem.Decode(pemCRL); b == nil || b.Type != "X509 CRL" || !bytes.Equal(b.Bytes, crl.Raw) {
		t.Fatal("/v1/crl.pem is not the PEM form of /v1/crl")
	}
	r := f.ocsp(victimCert)
	if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
		t.Fatalf("OCSP after revocation: status %d reason %d, want revoked/keyCompromise", r.Status, r.RevocationReason)
	}
	if r := f.ocsp(leaf(t, bystander.Cert())); r.Status != ocsp.Good {
		t.Fatalf("OCSP for the bystander: %d, want good", r.Status)
	}
	if r := f.ocsp(&x509.Certificate{SerialNumber: big.NewInt(424242)}); r.Status != ocsp.Unknown {
		t.Fatalf("OCSP for a serial never issued: %d, want unknown", r.Status)
	}
	// The GET form (RFC 6960 appendix A.1), as caching clients send it.
	req, err := ocsp.CreateRequest(victimCert, f.intermediate(), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := f.get("/v1/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(req)))
	if r, err := ocsp.ParseResponse(body, f.intermediate()); err != nil || r.Status != ocsp.Revoked {
		t.Fatalf("OCSP GET: %v, %+v", err, r)
	}

	// Quarantined: a fresh token does not bring the identity back.
	err = victim.Enroll(f.ctx, f.token(nil))
	var se *loadgen.ServerError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "quarantined") {
		t.Fatalf("re-enrolling a quarantined uid: %v, want a refusal naming the quarantine", err)
	}
	ag, err := f.env.Admin.Agent(f.ctx, victim.UID.String())
	if err != nil || ag.Quarantine == nil || ag.Quarantine.Reason != "keyCompromise" {
		t.Fatalf("agent show: %+v %v, want quarantined", ag.Quarantine, err)
	}

	// Only role security may release it.
	if err := f.env.Admin.Release(f.ctx, victim.UID.String(), "reimaged"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("release with an admin token: %v, want 403", err)
	}
	sec := f.client("security")
	if err := sec.Release(f.ctx, victim.UID.String(), ""); err == nil || !strings.Contains(err.Error(), "note") {
		t.Fatalf("release without a note: %v", err)
	}
	if err := sec.Release(f.ctx, victim.UID.String(), "host reimaged"); err != nil {
		t.Fatal(err)
	}
	if err := victim.Enroll(f.ctx, f.token(nil)); err != nil {
		t.Fatalf("re-enroll after release: %v", err)
	}
	if err := f.reconnect(victim); err != nil {
		t.Fatalf("connect with the new certificate: %v", err)
	}

	// The report lists exactly this revocation, with its latency and the
	// refused reconnect, and a checkpoint that covers it.
	auditor := f.client("auditor")
	rep := waitReport(t, f, auditor, start, func(rep revocation.Report) bool {
		return len(rep.Revocations) == 1 && rep.Revocations[0].PresentedAfter >= 1
	})
	row := rep.Revocations[0]
	if row.UID != victim.UID.String() || row.Reason != "keyCompromise" || row.Note != "host breached" ||
		row.PropagationMillis == nil || *row.PropagationMillis < 0 || row.ClosedConnections != 1 ||
		len(row.Serials) != 1 || !strings.HasPrefix(row.Actor, "admin:") || rep.ByReason["keyCompromise"] != 1 {
		t.Fatalf("report row %+v totals %v", row, rep.ByReason)
	}
	if rep.Checkpoint == nil || rep.Checkpoint.Seq < row.AuditSeq {
		t.Fatalf("report checkpoint %+v does not cover audit entry %d", rep.Checkpoint, row.AuditSeq)
	}
	// Metrics: the revocation by reason, the refused presentations, the
	// disconnect latency and the CRL.
	resp, err := f.http.Get(f.env.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`trustamp_revocations_total{reason="keyCompromise"} 1`, "trustamp_revocation_disconnect_seconds_count 1",
		"trustamp_crl_entries 1", "trustamp_revoked_certificates 1", "trustamp_crl_generation_seconds_count"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(string(metrics), "trustamp_revoked_certificates_presented_total") ||
		strings.Contains(string(metrics), "trustamp_revoked_certificates_presented_total 0\n") {
		t.Error("/metrics does not count the refused presentation")
	}
	pub, err := f.env.Dir.AuditPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	vr, err := audit.VerifyStore(f.ctx, f.env.Dir.Store, pub)
	if err != nil || vr.LastCheckpointSeq < rep.Checkpoint.Seq {
		t.Fatalf("audit verify: %v (report %+v)", err, vr)
	}
}

func waitReport(t *testing.T, f *fleet, c *api.Client, from time.Time, ok func(revocation.Report) bool) revocation.Report {
	t.Helper()
	var rep revocation.Report
	f.eventually("report", func() bool {
		var err error
		if rep, err = c.RevocationReport(f.ctx, from, f.env.Clock.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		return ok(rep)
	})
	return rep
}

// client returns an admin API client holding a fresh token with role.
// A security token is bootstrapped on the host, as an operator would: the
// admin role may not mint one.
func (f *fleet) client(role string) *api.Client {
	f.t.Helper()
	if role == api.RoleSecurity {
		tok, _, err := tokens.NewService(tokens.ServiceConfig{Store: f.env.Dir.Store, Audit: audit.New(audit.Config{})}).
			BootstrapSecurity(f.ctx, "test-security", "local:test")
		if err != nil {
			f.t.Fatal(err)
		}
		return f.env.Admin.WithToken(tok.Secret)
	}
	tok, err := f.env.Admin.CreateAdminToken(f.ctx, api.AdminTokenRequest{Name: "test-" + role, Role: role})
	if err != nil {
		f.t.Fatal(err)
	}
	return f.env.Admin.WithToken(tok.Token)
}

// TestHoldAndUndo: a certificateHold on one serial cuts that certificate
// off without quarantining the agent; undoing it restores access and takes
// it off the CRL. A hold on a whole agent quarantines it, and undoing its
// last held certificate lifts the quarantine. Final reasons cannot be
// undone.
func TestHoldAndUndo(t *testing.T) {
	f := newFleet(t)
	a := f.agent(map[string]string{"env": "staging"})
	serial := leaf(t, a.Cert()).SerialNumber

	res, err := f.env.Admin.Revoke(f.ctx, api.RevocationRequest{Serials: []string{serial.Text(16)}, Reason: "certificateHold"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Quarantined) != 0 || res.ClosedConnections != 1 {
		t.Fatalf("serial hold: %+v, want one connection closed and no quarantine", res)
	}
	if _, ok := crlEntry(f.crl(), serial); !ok {
		t.Fatal("held certificate not on the CRL")
	}
	if err := f.reconnect(a); !isRefused(err) {
		t.Fatalf("reconnect while held: %v, want 401", err)
	}
	// Colons and upper case are accepted, as openssl prints serials.
	colon := strings.ToUpper(serial.Text(16))
	if len(colon)%2 == 1 {
		colon = "0" + colon
	}
	var parts []string
	for i := 0; i < len(colon); i += 2 {
		parts = append(parts, colon[i:i+2])
	}
	if _, err := f.env.Admin.UndoRevocation(f.ctx, api.UndoRequest{Serial: strings.Join(parts, ":"), Note: "false alarm"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := crlEntry(f.crl(), serial); ok {
		t.Fatal("undone hold still on the CRL")
	}
	if err := f.reconnect(a); err != nil {
		t.Fatalf("reconnect after undo: %v", err)
	}
	f.eventually("registered again", func() bool { return f.env.Server.OpAMP.Connected(a.UID.String()) == 1 })

	// A hold on the agent (by label) quarantines it; the undo lifts both.
	res, err = f.env.Admin.Revoke(f.ctx, api.RevocationRequest{Labels: map[string]string{"env": "staging"}, Reason: "certificateHold"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Quarantined) != 1 || len(res.Revoked) != 1 || res.Revoked[0].Serial != hex.EncodeToString(serial.Bytes()) {
		t.Fatalf("agent hold by label: %+v", res)
	}
	if _, err := f.env.Admin.UndoRevocation(f.ctx, api.UndoRequest{Serial: serial.Text(16)}); err != nil {
		t.Fatal(err)
	}
	if ag, err := f.env.Admin.Agent(f.ctx, a.UID.String()); err != nil || ag.Quarantine != nil {
		t.Fatalf("after undoing the agent's only hold: quarantine %+v, %v", ag.Quarantine, err)
	}
	if err := f.reconnect(a); err != nil {
		t.Fatalf("reconnect after the agent hold was undone: %v", err)
	}

	// Final reasons are final; bad requests name what is wrong.
	if _, err := f.env.Admin.Revoke(f.ctx, api.RevocationRequest{Serials: []string{serial.Text(16)}, Reason: "superseded"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.env.Admin.UndoRevocation(f.ctx, api.UndoRequest{Serial: serial.Text(16)}); err == nil || !strings.Contains(err.Error(), "final") {
		t.Fatalf("undo of superseded: %v, want refused as final", err)
	}
	for _, tc := range []struct {
		req  api.RevocationRequest
		want string
	}{
		{api.RevocationRequest{Serials: []string{serial.Text(16)}}, "reason"},
		{api.RevocationRequest{Serials: []string{serial.Text(16)}, Reason: "stolen"}, "keyCompromise"},
		{api.RevocationRequest{Serials: []string{serial.Text(16)}, Reason: "keyCompromise"}, "already revoked"},
		{api.RevocationRequest{Serials: []string{"zz"}, Reason: "keyCompromise"}, "hexadecimal"},
		{api.RevocationRequest{Serials: []string{"abcdef"}, Reason: "keyCompromise"}, "404"},
		{api.RevocationRequest{UIDs: []string{"0190c0de-0000-7000-8000-000000000000"}, Reason: "keyCompromise"}, "not enrolled"},
		{api.RevocationRequest{Labels: map[string]string{"env": "nowhere"}, Reason: "keyCompromise"}, "no agent matches"},
		{api.RevocationRequest{Reason: "keyCompromise"}, "name an agent"},
	} {
		if _, err := f.env.Admin.Revoke(f.ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("revoke %+v: %v, want an error mentioning %q", tc.req, err, tc.want)
		}
	}
	// The auditor role reads reports but cannot revoke.
	if _, err := f.client("auditor").Revoke(f.ctx, api.RevocationRequest{UIDs: []string{a.UID.String()}, Reason: "keyCompromise"}); err == nil ||
		!strings.Contains(err.Error(), "403") {
		t.Fatalf("auditor revoking: %v, want 403", err)
	}
}
