package opamp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
)

func benchServer(b testing.TB) *Server {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	idFile := filepath.Join(dir, "id.txt")
	if err := keys.GenerateIdentity(idFile, time.Now()); err != nil {
		b.Fatal(err)
	}
	ks, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: idFile})
	if err != nil {
		b.Fatal(err)
	}
	files := ca.Files{Dir: filepath.Join(dir, "ca")}
	if _, err := ca.Bootstrap(ctx, ks, files, "bench.local", time.Now()); err != nil {
		b.Fatal(err)
	}
	authority, err := ca.New(ctx, ca.Config{Keys: ks, Files: files, TrustDomain: "bench.local"})
	if err != nil {
		b.Fatal(err)
	}
	store, err := state.Open(ctx, state.Config{SQLitePath: filepath.Join(dir, "state.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	s, err := New(Config{Store: store, CA: authority, Audit: audit.New(audit.Config{}),
		AgentCSRInterval: time.Nanosecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkIssueFromCSR is one agent-initiated issuance as the server does
// it: parse and check an ECDSA P-256 CSR, sign through the embedded
// authority, and record the certificate, the agent's rotation and the audit
// entry in one SQLite transaction. Run in parallel, as connections are.
func BenchmarkIssueFromCSR(b *testing.B) {
	s := benchServer(b)
	const agents = 256
	csrs := make([][]byte, agents)
	for i := range csrs {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		csrs[i] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	uids := make([]uuid.UUID, agents)
	for i := range uids {
		uids[i] = uuid.Must(uuid.NewV7())
	}
	var next atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) % agents
			c := &conn{s: s, kind: kindAgent, uid: uids[i], uidSet: true}
			if _, err := c.issue(ctx, OpAMPDestination, csrs[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}
