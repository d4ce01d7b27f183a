package ca

import (
	"context"
	"crypto/x509"
	"os"
	"testing"

	"github.com/google/uuid"
)

func issueOne(t *testing.T, a *Authority) (*Issued, uuid.UUID) {
	t.Helper()
	uid := uuid.Must(uuid.NewV7())
	csr, _ := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	iss, err := a.IssueAgent(context.Background(), csr, uid, Profile{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return iss, uid
}

func TestRotateIntermediate(t *testing.T) {
	ctx := context.Background()
	a := newCA(t)
	before, beforeUID := issueOne(t, a)
	old, next, err := a.RotateIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old.Equal(next) || !a.Intermediate().Equal(next) {
		t.Fatal("intermediate not replaced")
	}
	after, afterUID := issueOne(t, a)
	if err := after.Leaf.CheckSignatureFrom(next); err != nil {
		t.Fatalf("new certificate not issued by the new intermediate: %v", err)
	}
	// Both verify: the old one through the previous intermediate.
	if uid, err := a.VerifyAgent([]*x509.Certificate{before.Leaf}); err != nil || uid != beforeUID {
		t.Fatalf("certificate from before the rollover: %v", err)
	}
	if uid, err := a.VerifyAgent([]*x509.Certificate{after.Leaf}); err != nil || uid != afterUID {
		t.Fatalf("certificate from after the rollover: %v", err)
	}
	// A restart loads the new intermediate and its key.
	again, err := New(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Intermediate().Equal(next) {
		t.Fatal("restart did not load the new intermediate")
	}
	if _, err := again.VerifyAgent([]*x509.Certificate{before.Leaf}); err != nil {
		t.Fatalf("after restart, pre-rollover certificate: %v", err)
	}
	// The server certificate is reissued under the new intermediate.
	cert, err := again.ServerCertificate(ctx, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if leaf.CheckSignatureFrom(next) != nil {
		t.Fatal("server certificate not reissued under the new intermediate")
	}
}

// TestRotateIntermediateResumes: a rollover interrupted after writing the
// new intermediate is finished by the next run, with that same certificate.
func TestRotateIntermediateResumes(t *testing.T) {
	ctx := context.Background()
	a := newCA(t)
	made, err := a.makeIntermediate(ctx) // then "crash"
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := New(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if restarted.Intermediate().Equal(made) {
		t.Fatal("half-done rollover took effect on restart")
	}
	_, next, err := restarted.RotateIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Equal(made) {
		t.Fatal("resumed rollover made another intermediate")
	}
	if _, err := os.Stat(a.cfg.Files.Next()); !os.IsNotExist(err) {
		t.Fatal("intermediate-next.pem left behind")
	}
}
