package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/storage/keys"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func newCA(t *testing.T) *Authority {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	idFile := filepath.Join(dir, "id.txt")
	if err := keys.GenerateIdentity(idFile, t0); err != nil {
		t.Fatal(err)
	}
	ks, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: idFile})
	if err != nil {
		t.Fatal(err)
	}
	files := Files{Dir: filepath.Join(dir, "ca")}
	made, err := Bootstrap(ctx, ks, files, "example.test", t0)
	if err != nil || !made {
		t.Fatalf("bootstrap: %v %v", made, err)
	}
	if made, err := Bootstrap(ctx, ks, files, "example.test", t0); err != nil || made {
		t.Fatalf("second bootstrap: made=%v err=%v", made, err)
	}
	a, err := New(ctx, Config{Keys: ks, Files: files, TrustDomain: "example.test", Clock: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func csrPEM(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueAgent(t *testing.T) {
	a := newCA(t)
	uid := uuid.Must(uuid.NewV7())
	// The CSR asks for its own uid; the server sets everything anyway.
	csr, err := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: uid.String(), Organization: []string{"evil"}}}))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.IssueAgent(context.Background(), csr, uid, Profile{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := iss.Leaf
	if leaf.Subject.CommonName != uid.String() || len(leaf.Subject.Organization) != 0 {
		t.Errorf("subject %v", leaf.Subject)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.test/agent/"+uid.String() {
		t.Errorf("URIs %v", leaf.URIs)
	}
	if !leaf.NotBefore.Equal(t0.Add(-time.Minute)) || !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %v - %v, want backdated 1m and 24h", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("IsCA %v EKU %v", leaf.IsCA, leaf.ExtKeyUsage)
	}
	// The PEM chain parses and verifies to the root, and binds to uid.
	var chain []*x509.Certificate
	rest := iss.CertPEM
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, _ := x509.ParseCertificate(b.Bytes)
		chain = append(chain, c)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certs, want leaf + intermediate", len(chain))
	}
	got, err := a.VerifyAgent(chain)
	if err != nil || got != uid {
		t.Fatalf("VerifyAgent = %v, %v; want %v", got, err, uid)
	}
	if len(iss.Serial) < 16 || len(iss.Fingerprint) != 64 {
		t.Errorf("serial %q fingerprint %q", iss.Serial, iss.Fingerprint)
	}
}

func TestCSRRefusals(t *testing.T) {
	a := newCA(t)
	uid := uuid.Must(uuid.NewV7())
	other := uuid.Must(uuid.NewV7())
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name   string
		pem    []byte
		reason string
	}{
		{"not PEM", []byte("hello"), "not PEM"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "CERTIFICATE"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "does not parse"},
		{"other agent's CN", csrPEM(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: other.String()}}), "not this agent's uid"},
		{"DNS SAN", csrPEM(t, p256(t), &x509.CertificateRequest{DNSNames: []string{"bank.example"}}), "DNS"},
		{"IP SAN", csrPEM(t, p256(t), &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), "IP"},
		{"other SPIFFE ID", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{SPIFFEID("example.test", other)}}), "URI SAN"},
		{"RSA 1024", csrPEM(t, rsa1024, &x509.CertificateRequest{}), "1024 bits"},
		{"P-224", csrPEM(t, p224, &x509.CertificateRequest{}), "P-224"},
		{"too big", append([]byte("-----BEGIN CERTIFICATE REQUEST-----\n"), make([]byte, 20000)...), "bytes"},
		{"bad signature", tamperSignature(csrPEM(t, p256(t), &x509.CertificateRequest{})), "signature does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.pem)
			if err == nil {
				_, err = a.IssueAgent(context.Background(), csr, uid, Profile{}, nil)
			}
			if !errors.Is(err, ErrCSRRefused) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want ErrCSRRefused mentioning %q", err, tt.reason)
			}
		})
	}
	// Ed25519 and a matching SPIFFE URI are fine.
	csr, err := ParseCSR(csrPEM(t, ed, &x509.CertificateRequest{URIs: []*url.URL{SPIFFEID("example.test", uid)}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.IssueAgent(context.Background(), csr, uid, Profile{}, nil); err != nil {
		t.Fatalf("ed25519 CSR refused: %v", err)
	}
}

// tamperSignature flips a bit in the last byte of a CSR: the signature.
func tamperSignature(p []byte) []byte {
	block, _ := pem.Decode(p)
	block.Bytes[len(block.Bytes)-1] ^= 1
	return pem.EncodeToMemory(block)
}

func TestVerifyAgentRejectsForeignCA(t *testing.T) {
	a, b := newCA(t), newCA(t)
	uid := uuid.Must(uuid.NewV7())
	csr, _ := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	iss, err := b.IssueAgent(context.Background(), csr, uid, Profile{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyAgent([]*x509.Certificate{iss.Leaf, b.Intermediate()}); !errors.Is(err, ErrNotAgentCert) {
		t.Fatalf("foreign certificate accepted: %v", err)
	}
}

func TestServerCertificateReusedAndRenewedOnNameChange(t *testing.T) {
	a := newCA(t)
	ctx := context.Background()
	c1, err := a.ServerCertificate(ctx, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := a.ServerCertificate(ctx, []string{"127.0.0.1", "localhost"})
	if string(c1.Certificate[0]) != string(c2.Certificate[0]) {
		t.Fatal("server certificate reissued although names did not change")
	}
	c3, _ := a.ServerCertificate(ctx, []string{"localhost", "opamp.example"})
	if string(c1.Certificate[0]) == string(c3.Certificate[0]) {
		t.Fatal("server certificate not reissued for new names")
	}
	leaf, _ := x509.ParseCertificate(c3.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "opamp.example", Roots: a.Roots(), Intermediates: a.cur.Load().intermediates, CurrentTime: t0}); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
}
