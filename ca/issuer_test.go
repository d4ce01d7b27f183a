package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeIssuer signs with its own root exactly as asked, then lets a test
// spoil the template: an issuer that ignores what trustamp asked for.
type fakeIssuer struct {
	root    *x509.Certificate
	key     crypto.Signer
	pinned  *x509.Certificate // the root configured for it, when not root
	spoil   func(*x509.Certificate, *crypto.PublicKey)
	revoked []string
	err     error
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	k := p256(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(1000 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &fakeIssuer{root: root, key: k}
}

func (f *fakeIssuer) Roots() []*x509.Certificate {
	if f.pinned != nil {
		return []*x509.Certificate{f.pinned}
	}
	return []*x509.Certificate{f.root}
}

func (f *fakeIssuer) Revoke(_ context.Context, serial string) error {
	f.revoked = append(f.revoked, serial)
	return nil
}

func (f *fakeIssuer) Sign(_ context.Context, req SignRequest) ([]*x509.Certificate, error) {
	if f.err != nil {
		return nil, f.err
	}
	csr, err := ParseCSR(req.CSRPEM)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: req.CommonName},
		URIs: req.URIs, DNSNames: req.DNSNames, NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(req.Lifetime),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	var pub crypto.PublicKey = csr.PublicKey
	if f.spoil != nil {
		f.spoil(tmpl, &pub)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, pub, f.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{leaf, f.root}, nil
}

// What an external issuer returns is checked against what trustamp asked
// for; anything else is refused and never becomes an Issued certificate.
func TestExternalIssuerResultChecked(t *testing.T) {
	a := newCA(t)
	f := newFakeIssuer(t)
	a.cfg.Issuers = map[string]Issuer{"fake": f}
	if err := a.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	uid := uuid.Must(uuid.NewV7())
	profile := Profile{Name: "ext", Issuer: "fake", Lifetime: time.Hour}
	issue := func() (*Issued, error) {
		csr, err := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return a.IssueAgent(context.Background(), csr, uid, profile, nil)
	}
	iss, err := issue()
	if err != nil {
		t.Fatal(err)
	}
	if iss.Leaf.Issuer.CommonName != "fake root" || strings.Count(string(iss.CertPEM), "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("issued by %q with %d certificates in the chain (the root is not sent)", iss.Leaf.Issuer.CommonName,
			strings.Count(string(iss.CertPEM), "BEGIN CERTIFICATE"))
	}
	if got, err := a.VerifyAgent([]*x509.Certificate{iss.Leaf}); err != nil || got != uid {
		t.Fatalf("an agent certificate from the external issuer is not accepted for mTLS: %v", err)
	}
	for _, tc := range spoilCases(t) {
		f.spoil = tc.spoil
		if iss, err := issue(); err == nil || !errors.Is(err, ErrIssuedCertRejected) || !strings.Contains(err.Error(), "did not ask for") ||
			!strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: issued=%v, err %v; want ErrIssuedCertRejected naming %q", tc.name, iss != nil, err, tc.reason)
		}
	}
	f.spoil = nil
	f.err = ErrIssuerUnavailable
	if _, err := issue(); !errors.Is(err, ErrIssuerUnavailable) {
		t.Fatalf("an unreachable issuer: %v, want ErrIssuerUnavailable", err)
	}
	if err := a.RevokeWith(context.Background(), "fake", "0abc"); err != nil || len(f.revoked) != 1 {
		t.Fatalf("revocation not forwarded: %v %v", err, f.revoked)
	}
	if err := a.RevokeWith(context.Background(), "embedded", "0abc"); err != nil || len(f.revoked) != 1 {
		t.Fatalf("an embedded certificate's revocation was forwarded: %v", err)
	}
}
