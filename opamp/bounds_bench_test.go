package opamp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// benchCSRs makes n PEM CSRs for ECDSA P-256 keys.
func benchCSRs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		out[i] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	return out
}

// benchDescription is a collector-sized agent description.
func benchDescription() *protobufs.AgentDescription {
	kv := func(k, v string) *protobufs.KeyValue {
		return &protobufs.KeyValue{Key: k, Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}}}
	}
	d := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{kv("service.name", "otelcol"), kv("service.version", "0.149.0")}}
	for _, k := range []string{"os.type", "os.description", "host.name", "host.arch", "process.pid", "process.runtime.version"} {
		d.NonIdentifyingAttributes = append(d.NonIdentifyingAttributes, kv(k, "some value of a usual length"))
	}
	return d
}

// BenchmarkEnrollOverHTTP is one token enrollment through the plain-HTTP
// transport: body read (bounded), token check, enrollment slot, message
// limits, CSR issuance and the enrollment transaction.
func BenchmarkEnrollOverHTTP(b *testing.B) {
	s := benchServer(b)
	ctx := context.Background()
	secret := "tse_bench-token"
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		return tx.InsertEnrollmentToken(ctx, state.EnrollmentToken{ID: "bench", Hash: tokens.Hash(secret), MaxUses: 1 << 30,
			ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()})
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.Config.ConnContext = s.ConnContext
	srv.Start()
	defer srv.Close()
	csrs := benchCSRs(64)
	desc := benchDescription()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		uid := uuid.Must(uuid.NewV7())
		body, _ := proto.Marshal(&protobufs.AgentToServer{InstanceUid: uid[:], SequenceNum: 1, AgentDescription: desc,
			ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{Opamp: &protobufs.OpAMPConnectionSettingsRequest{
				CertificateRequest: &protobufs.CertificateRequest{Csr: csrs[i%len(csrs)]}}}})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		var out protobufs.ServerToAgent
		if resp.StatusCode != http.StatusOK || proto.Unmarshal(buf.Bytes(), &out) != nil || out.ConnectionSettings == nil {
			b.Fatalf("enrollment: HTTP %d %v", resp.StatusCode, out.ErrorResponse)
		}
	}
}

// BenchmarkRotateMessage is one agent-initiated rotation as the message
// handler does it on an mTLS connection: message limits, registry update,
// CSR issuance and the rotation transaction.
func BenchmarkRotateMessage(b *testing.B) {
	s := benchServer(b)
	ctx := context.Background()
	csrs := benchCSRs(64)
	desc := benchDescription()
	uid := uuid.Must(uuid.NewV7())
	c := &conn{s: s, kind: kindAgent, uid: uid, uidSet: true, connInfo: connInfo{transport: transportHTTP, since: time.Now()}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := c.onMessage(ctx, nil, &protobufs.AgentToServer{InstanceUid: uid[:], SequenceNum: uint64(i + 1), AgentDescription: desc,
			ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{Opamp: &protobufs.OpAMPConnectionSettingsRequest{
				CertificateRequest: &protobufs.CertificateRequest{Csr: csrs[i%len(csrs)]}}}})
		if out.ConnectionSettings == nil {
			b.Fatalf("rotation: %v", out.ErrorResponse)
		}
	}
}

// BenchmarkLimitsCheck is the per-message bounds check alone, on a message
// with a collector-sized description, health and package statuses.
func BenchmarkLimitsCheck(b *testing.B) {
	l := Limits{}.withDefaults()
	msg := &protobufs.AgentToServer{AgentDescription: benchDescription(),
		Health: &protobufs.ComponentHealth{Healthy: true, ComponentHealthMap: map[string]*protobufs.ComponentHealth{
			"pipeline:traces": {Healthy: true, ComponentHealthMap: map[string]*protobufs.ComponentHealth{"receiver:otlp": {Healthy: true}}}}},
		PackageStatuses: &protobufs.PackageStatuses{Packages: map[string]*protobufs.PackageStatus{"": {Name: "", AgentHasVersion: "1.2.3"}}}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := l.check(msg); err != nil {
			b.Fatal(err)
		}
	}
}
