package opamp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/server"
	"github.com/trustamp/trustamp/storage/state"
)

// env is a running trustamp with the test that owns it.
type env struct {
	*servertest.Env
	t   *testing.T
	dir *datadir.Dir
	srv *server.Server
}

func (e *env) url(transport string) string { return e.URL(transport) }

func start(t *testing.T, configYAML string) *env {
	t.Helper()
	se := servertest.Start(t, configYAML)
	return &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
}

// TestOnPostgres runs enrollment, mTLS and a CSR rotation on a server whose
// state lives in a real PostgreSQL, the backend for several replicas.
func TestOnPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	se := servertest.StartWithEnv(t, "state:\n  driver: postgres\n", map[string]string{"TRUSTAMP_POSTGRES_DSN": pg.NewDatabase(t)})
	if se.Dir.Store.Driver() != "postgres" {
		t.Fatalf("driver %s", se.Dir.Store.Driver())
	}
	e := &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
	a, oldSerial, rotated := e.rotatingAgent(t, loadgen.AgentConfig{CSRCapability: true})
	st, err := e.Admin.Rotate(ctx10(t), api.RotationRequest{UIDs: []string{a.UID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if newSerial := waitSerial(t, rotated); newSerial == oldSerial {
		t.Fatal("not rotated")
	}
	e.waitRotation(st.ID, func(s api.RotationStatus) bool { return s.States["confirmed"] == 1 })
	if e.cert(oldSerial).Status != state.CertRetired {
		t.Fatal("old certificate not retired")
	}
	for _, act := range []string{"agent.enroll", "cert.issue", "cert.confirm", "cert.rotation_request"} {
		if !e.hasAudit(act, "") {
			t.Errorf("no %s audit entry on PostgreSQL", act)
		}
	}
}

func (e *env) token(uses int, ttl string, labels map[string]string) string {
	e.t.Helper()
	resp, err := e.Admin.CreateToken(context.Background(), api.TokenRequest{Uses: uses, TTL: ttl, Labels: labels})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Token
}

func (e *env) agent(transport string) *loadgen.Agent {
	e.t.Helper()
	a, err := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.url(transport), CAPEM: e.CAPEM, Heartbeat: time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

// auditActions returns the actions in the audit log, after verifying it.
func (e *env) auditActions() []string {
	e.t.Helper()
	pub, _ := e.dir.AuditPublicKey()
	if _, err := audit.VerifyStore(context.Background(), e.dir.Store, pub); err != nil {
		e.t.Fatalf("audit log does not verify: %v", err)
	}
	var acts []string
	e.dir.Store.View(context.Background(), func(tx *state.Tx) error {
		return tx.ScanAudit(context.Background(), state.AuditFilter{}, func(r state.AuditRow) error {
			acts = append(acts, r.Action+":"+r.Subject+" "+r.Details)
			return nil
		})
	})
	return acts
}

func (e *env) hasAudit(action, detail string) bool {
	for _, a := range e.auditActions() {
		if strings.HasPrefix(a, action+":") && strings.Contains(a, detail) {
			return true
		}
	}
	return false
}

// waitAgent polls the admin API until the agent's record satisfies ok: the
// registry is updated when the first message is processed, which can be
// after the client's OnConnect.
func (e *env) waitAgent(uid uuid.UUID, ok func(api.Agent) bool) api.Agent {
	e.t.Helper()
	var got api.Agent
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if got, err = e.Admin.Agent(context.Background(), uid.String()); err == nil && ok(got) {
			return got
		}
	}
	e.t.Fatalf("agent %s never reached the expected state; last: %+v", uid, got)
	return got
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var transports = []string{"websocket", "http"}

// want401 asserts that a connection attempt was refused with HTTP 401.
func want401(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, loadgen.ErrConnectFailed) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("%s: %v, want 401", what, err)
	}
}

func TestEnrollHappyPath(t *testing.T) {
	e := start(t, "")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ctx := ctx10(t)
			a := e.agent(tr)
			if err := a.Enroll(ctx, e.token(1, "10m", map[string]string{"env": "prod", "transport": tr})); err != nil {
				t.Fatalf("enroll: %v", err)
			}
			block, _ := pem.Decode(a.CertPEM)
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if leaf.Subject.CommonName != a.UID.String() || leaf.URIs[0].String() != "spiffe://trustamp.local/agent/"+a.UID.String() {
				t.Fatalf("certificate names %s %v, want agent %s", leaf.Subject.CommonName, leaf.URIs, a.UID)
			}
			if err := a.Connect(ctx, a.UID, nil); err != nil {
				t.Fatalf("mTLS connect: %v", err)
			}
			// The registry shows the agent with its token's labels and the
			// certificate it connected with; the certificate is confirmed.
			got := e.waitAgent(a.UID, func(g api.Agent) bool { return g.Connected && g.CertSerial != "" })
			if !got.Connected || got.Labels["env"] != "prod" || got.Transport != tr || got.CertNotAfter == nil || len(got.Description) == 0 {
				t.Fatalf("registry: %+v", got)
			}
			var cert state.Certificate
			e.dir.Store.View(ctx, func(tx *state.Tx) (err error) { cert, err = tx.CertificateBySerial(ctx, got.CertSerial); return err })
			if cert.Status != state.CertConfirmed || cert.UID != a.UID.String() {
				t.Fatalf("certificate record %+v, want confirmed for %s", cert, a.UID)
			}
			for _, act := range []string{"agent.enroll", "cert.issue", "cert.confirm"} {
				if !e.hasAudit(act, a.UID.String()) {
					t.Errorf("no %s audit entry for %s", act, a.UID)
				}
			}
		})
	}
}

func TestSingleUseTokenReuseRefused(t *testing.T) {
	e := start(t, "")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ctx := ctx10(t)
			tok := e.token(1, "10m", nil)
			if err := e.agent(tr).Enroll(ctx, tok); err != nil {
				t.Fatal(err)
			}
			want401(t, "second enrollment with a single-use token", e.agent(tr).Enroll(ctx, tok))
			if !e.hasAudit("agent.connect_refused", "token_used") {
				t.Fatal("refused reuse not audited")
			}
		})
	}
}

func TestExpiredTokenRefused(t *testing.T) {
	e := start(t, "")
	tok := e.token(5, "1m", nil)
	e.Clock.Advance(2 * time.Minute)
	want401(t, "expired token", e.agent("websocket").Enroll(ctx10(t), tok))
	if !e.hasAudit("agent.connect_refused", "token_expired") {
		t.Fatal("expired token not audited")
	}
}

func TestNoCredentials401(t *testing.T) {
	e := start(t, "")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			want401(t, "no credentials", e.agent(tr).Enroll(ctx10(t), ""))
		})
	}
	resp := e.post(t, "", &protobufs.AgentToServer{InstanceUid: uuidBytes()})
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("plain POST without credentials: %d %v", resp.StatusCode, resp.Header)
	}
	if !e.hasAudit("agent.connect_refused", "no_credentials") {
		t.Fatal("refusal not audited")
	}
}

// TestImpersonation: agent A's certificate presented with agent B's uid is
// refused with BadRequest, the connection is closed, and it is audited.
func TestImpersonation(t *testing.T) {
	e := start(t, "")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ctx := ctx10(t)
			tok := e.token(2, "10m", nil)
			a, b := e.agent(tr), e.agent(tr)
			if err := a.Enroll(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if err := b.Enroll(ctx, tok); err != nil {
				t.Fatal(err)
			}
			errs := make(chan *loadgen.ServerError, 4)
			err := a.Connect(ctx, b.UID, func(se *loadgen.ServerError) { errs <- se })
			var se *loadgen.ServerError
			if err != nil && !errors.As(err, &se) {
				t.Fatalf("connect: %v", err)
			}
			if se == nil {
				select {
				case se = <-errs:
				case <-ctx.Done():
					t.Fatal("no ServerErrorResponse for impersonation")
				}
			}
			if se.Type != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest || !strings.Contains(se.Message, "does not match") {
				t.Fatalf("got %v, want BadRequest about the uid", se)
			}
			if tr == "websocket" {
				deadline := time.Now().Add(5 * time.Second)
				for e.srv.OpAMP.Connected(a.UID.String()) != 0 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if n := e.srv.OpAMP.Connected(a.UID.String()); n != 0 {
					t.Fatalf("impersonating connection still open (%d)", n)
				}
			}
			a.Stop(ctx)
			if !e.hasAudit("agent.impersonation", b.UID.String()) {
				t.Fatal("impersonation not audited")
			}
			// B's registry record was not touched by A's messages.
			if got, _ := e.Admin.Agent(ctx, b.UID.String()); got.Connected {
				t.Fatal("impersonated agent shown as connected")
			}
		})
	}
}

// post sends one AgentToServer over plain HTTP and returns the raw response.
func (e *env) post(t *testing.T, token string, msg *protobufs.AgentToServer) *http.Response {
	t.Helper()
	body, _ := proto.Marshal(msg)
	req, _ := http.NewRequest(http.MethodPost, e.url("http"), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (e *env) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func decode(t *testing.T, resp *http.Response) *protobufs.ServerToAgent {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	b, _ := io.ReadAll(resp.Body)
	var out protobufs.ServerToAgent
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func uuidBytes() []byte { u := uuid.Must(uuid.NewV7()); return u[:] }

const wantCaps = uint64(protobufs.ServerCapabilities_ServerCapabilities_AcceptsStatus |
	protobufs.ServerCapabilities_ServerCapabilities_OffersConnectionSettings |
	protobufs.ServerCapabilities_ServerCapabilities_AcceptsConnectionSettingsRequest)

func TestCapabilitiesInFirstResponse(t *testing.T) {
	e := start(t, "")
	tok := e.token(1, "10m", nil)
	// Plain HTTP.
	got := decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uuidBytes(), SequenceNum: 0}))
	if got.Capabilities&wantCaps != wantCaps {
		t.Fatalf("HTTP first response capabilities %b, want %b set", got.Capabilities, wantCaps)
	}
	// WebSocket: the very first frame.
	ws := e.dialWS(t, tok)
	first := wsExchange(t, ws, &protobufs.AgentToServer{InstanceUid: uuidBytes()})
	if first.Capabilities&wantCaps != wantCaps {
		t.Fatalf("WebSocket first response capabilities %b, want %b set", first.Capabilities, wantCaps)
	}
}

func TestRequestInstanceUid(t *testing.T) {
	e := start(t, "")
	tok := e.token(1, "10m", nil)
	flag := uint64(protobufs.AgentToServerFlags_AgentToServerFlags_RequestInstanceUid)
	got := decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uuidBytes(), Flags: flag}))
	newUID, err := uuid.FromBytes(got.GetAgentIdentification().GetNewInstanceUid())
	if err != nil || newUID.Version() != 7 {
		t.Fatalf("enrolling connection asked for a uid, got %v (%v)", got.AgentIdentification, err)
	}
	// On a full connection the uid is bound to the certificate.
	ctx := ctx10(t)
	a := e.agent("http")
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	c := e.mtlsClient(t, a)
	body, _ := proto.Marshal(&protobufs.AgentToServer{InstanceUid: a.UID[:], Flags: flag})
	req, _ := http.NewRequest(http.MethodPost, e.url("http"), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := decode(t, resp)
	if out.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest || out.AgentIdentification != nil {
		t.Fatalf("full connection asking for a new uid: %v", out)
	}
}

func TestCSRRefusedWithReasonTokenKept(t *testing.T) {
	e := start(t, "")
	tok := e.token(1, "10m", nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"bank.example"}}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	got := decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uuidBytes(), ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: csr}}}}))
	if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest ||
		!strings.Contains(got.ErrorResponse.GetErrorMessage(), "DNS") || got.ConnectionSettings != nil {
		t.Fatalf("bad CSR: %v", got)
	}
	// The refusal did not spend the single-use token.
	if err := e.agent("http").Enroll(ctx10(t), tok); err != nil {
		t.Fatalf("token spent by a refused CSR: %v", err)
	}
}

func TestEnrollingConnectionCannotTakeOverEnrolledUID(t *testing.T) {
	e := start(t, "")
	ctx := ctx10(t)
	a := e.agent("http")
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	got := decode(t, e.post(t, e.token(1, "10m", nil), &protobufs.AgentToServer{InstanceUid: a.UID[:], ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}}}}))
	if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest || got.ConnectionSettings != nil {
		t.Fatalf("second enrollment of an existing uid: %v", got)
	}
}

func TestOverloadedEnrollmentsAreToldToRetry(t *testing.T) {
	e := start(t, "opamp:\n  max_concurrent_enrollments: 2\n")
	tok := e.token(10, "10m", nil)
	defer e.srv.OpAMP.HoldEnrollSlots()() // as two CSRs in progress would
	resp := e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uuidBytes()})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP over the limit: %d Retry-After=%q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	ws := e.dialWS(t, tok)
	uid := uuidBytes()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	got := wsExchange(t, ws, &protobufs.AgentToServer{InstanceUid: uid, ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
		Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}}}})
	if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_Unavailable ||
		got.ErrorResponse.GetRetryInfo().GetRetryAfterNanoseconds() == 0 || got.ConnectionSettings != nil {
		t.Fatalf("WebSocket CSR over the limit: %v, want Unavailable with retry_info", got)
	}
}

func TestAdminAPIRolesAndFilters(t *testing.T) {
	e := start(t, "")
	ctx := ctx10(t)
	a := e.agent("websocket")
	if err := a.Enroll(ctx, e.token(1, "10m", map[string]string{"site": "fra"})); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatal(err)
	}
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.CertNotAfter != nil })
	list := func(q string) int {
		vals, _ := urlValues(q)
		as, err := e.Admin.Agents(ctx, vals)
		if err != nil {
			t.Fatal(err)
		}
		return len(as)
	}
	if list("label=site=fra") != 1 || list("label=site=nyc") != 0 || list("expiring_within=25h") != 1 || list("expiring_within=1h") != 0 {
		t.Fatal("agent filters do not select as expected")
	}
	if _, err := e.Admin.Agent(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("unknown agent: %v", err)
	}
	// An auditor can read but not mint enrollment tokens.
	auditorToken := "tsa_auditor-test-token-0000000000000000000000"
	e.dir.Store.Update(ctx, func(tx *state.Tx) error {
		return tx.InsertAdminToken(ctx, state.AdminToken{ID: "aud1", Name: "auditor", Role: api.RoleAuditor, Hash: hashOf(auditorToken), CreatedAt: time.Now()})
	})
	cred, _ := datadir.ReadLocalCredential(e.dir.Layout)
	auditor, _ := api.NewClient(api.ClientConfig{Server: cred.Server, Token: auditorToken, CAPEM: e.CAPEM})
	if _, err := auditor.Agents(ctx, nil); err != nil {
		t.Fatalf("auditor cannot list agents: %v", err)
	}
	if _, err := auditor.CreateToken(ctx, api.TokenRequest{}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("auditor minted a token: %v", err)
	}
	bad, _ := api.NewClient(api.ClientConfig{Server: cred.Server, Token: "tsa_wrong", CAPEM: e.CAPEM})
	if _, err := bad.Agents(ctx, nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong admin token: %v", err)
	}
}

// mtlsPost sends one AgentToServer over plain HTTP with an agent's
// certificate.
func (e *env) mtlsPost(t *testing.T, a *loadgen.Agent, msg *protobufs.AgentToServer) *protobufs.ServerToAgent {
	t.Helper()
	return e.mtlsPostWith(t, a.Cert(), a.KeyPEM(), msg)
}

func (e *env) mtlsPostWith(t *testing.T, certPEM, keyPEM []byte, msg *protobufs.AgentToServer) *protobufs.ServerToAgent {
	t.Helper()
	body, _ := proto.Marshal(msg)
	req, _ := http.NewRequest(http.MethodPost, e.url("http"), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := e.tlsClient(t, certPEM, keyPEM).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return decode(t, resp)
}

func TestReportFullStateOnMissingRecordOrGap(t *testing.T) {
	e := start(t, "")
	a := e.agent("http")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	full := uint64(protobufs.ServerToAgentFlags_ServerToAgentFlags_ReportFullState)
	desc := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{{Key: "service.name",
		Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: "otelcol"}}}}}
	steps := []struct {
		name     string
		msg      *protobufs.AgentToServer
		wantFull bool
	}{
		{"no description on record", &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 1}, true},
		{"full state sent", &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 2, AgentDescription: desc}, false},
		{"next in sequence", &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 3}, false},
		{"sequence jumps", &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 9}, true},
	}
	for _, st := range steps {
		got := e.mtlsPost(t, a, st.msg)
		if (got.Flags&full != 0) != st.wantFull {
			t.Fatalf("%s: ReportFullState=%v, want %v", st.name, got.Flags&full != 0, st.wantFull)
		}
	}
}

func TestMetricsCountAgentsByTransport(t *testing.T) {
	e := start(t, "")
	a := e.agent("http")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 1})
	e.post(t, "", &protobufs.AgentToServer{InstanceUid: uuidBytes()}) // one refusal
	cred, _ := datadir.ReadLocalCredential(e.dir.Layout)
	resp, err := e.httpClient().Get(cred.Server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`trustamp_agents{connected="true",transport="http"} 1`,
		`trustamp_certificates{state="confirmed"} 1`,
		`trustamp_opamp_rejected_connections_total{reason="no_credentials"} 1`,
		`trustamp_certificate_soonest_expiry_seconds`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestAgentDisconnectHonoured(t *testing.T) {
	e := start(t, "")
	a := e.agent("http")
	if err := a.Enroll(ctx10(t), e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 1})
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.Connected })
	e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: a.UID[:], SequenceNum: 2, AgentDisconnect: &protobufs.AgentDisconnect{}})
	e.waitAgent(a.UID, func(g api.Agent) bool { return !g.Connected })
}

func TestWebSocketCloseMarksDisconnected(t *testing.T) {
	e := start(t, "")
	ctx := ctx10(t)
	a := e.agent("websocket")
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatal(err)
	}
	e.waitAgent(a.UID, func(g api.Agent) bool { return g.Connected })
	if n := e.srv.OpAMP.Connected(a.UID.String()); n != 1 {
		t.Fatalf("live connections %d, want 1", n)
	}
	a.Stop(ctx)
	e.waitAgent(a.UID, func(g api.Agent) bool { return !g.Connected })
}
