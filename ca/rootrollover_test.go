package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
)

// chainOf parses every certificate in a PEM bundle.
func chainOf(p []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, p = pem.Decode(p); b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// verifiesUnder reports whether a PEM chain verifies for client auth under
// exactly these roots, as an agent or server holding only them would check.
func verifiesUnder(chainPEM []byte, roots ...*x509.Certificate) error {
	certs := chainOf(chainPEM)
	pool, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range certs[1:] {
		inters.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestRotateRoot(t *testing.T) {
	ctx := context.Background()
	a := newCA(t)
	before, _ := issueOne(t, a)
	old, next, err := a.RotateRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old.Equal(next) || !a.cur.Load().root.Equal(next) {
		t.Fatal("root not replaced")
	}
	after, uid := issueOne(t, a)
	// Agents that still trust only the old root accept new chains (through
	// the bridge); agents that already have the new root do too.
	if err := verifiesUnder(after.CertPEM, old); err != nil {
		t.Fatalf("new chain under the old root only: %v", err)
	}
	if err := verifiesUnder(after.CertPEM, next); err != nil {
		t.Fatalf("new chain under the new root only: %v", err)
	}
	if err := verifiesUnder(before.CertPEM, old); err != nil {
		t.Fatalf("pre-rollover chain: %v", err)
	}
	if got, err := a.VerifyAgent(chainOf(after.CertPEM)); err != nil || got != uid {
		t.Fatalf("server verification of a new certificate: %v", err)
	}
	if _, err := a.VerifyAgent([]*x509.Certificate{before.Leaf}); err != nil {
		t.Fatalf("server verification of a pre-rollover certificate: %v", err)
	}
	// The bundle agents are given holds both roots during the overlap.
	if roots := chainOf(a.RootPEM()); len(roots) != 2 || !roots[0].Equal(next) || !roots[1].Equal(old) {
		t.Fatalf("root bundle has %d certificates, want new then old", len(roots))
	}
	// An intermediate rollover during the overlap keeps old-root agents
	// working: the new intermediate is cross-signed too.
	if _, _, err := a.RotateIntermediate(ctx); err != nil {
		t.Fatal(err)
	}
	during, _ := issueOne(t, a)
	if err := verifiesUnder(during.CertPEM, old); err != nil {
		t.Fatalf("intermediate rolled during the overlap, under the old root: %v", err)
	}
	// A second rollover during the overlap is refused.
	if _, _, err := a.RotateRoot(ctx); err == nil {
		t.Fatal("second root rollover started during the overlap")
	}
	// Restart keeps the overlap.
	again, err := New(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(chainOf(again.RootPEM())) != 2 {
		t.Fatal("restart lost the overlap")
	}
	// Finishing drops the old root and the bridge.
	if err := again.FinishRootRollover(ctx); err != nil {
		t.Fatal(err)
	}
	if roots := chainOf(again.RootPEM()); len(roots) != 1 || !roots[0].Equal(next) {
		t.Fatal("finished rollover still sends the old root")
	}
	latest, _ := issueOne(t, again)
	if len(chainOf(latest.CertPEM)) != 2 {
		t.Fatal("bridge still sent after the rollover finished")
	}
	if err := verifiesUnder(latest.CertPEM, old); err == nil {
		t.Fatal("after finishing, new chains still verify under the retired root")
	}
	if _, err := again.VerifyAgent([]*x509.Certificate{before.Leaf}); err == nil {
		t.Fatal("certificate chaining only to the retired root still verifies")
	}
}

// TestRotateRootResumes: interrupted after the roots swapped (the new
// intermediate not yet in place), the server still starts and issues, and a
// rerun finishes the rollover.
func TestRotateRootResumes(t *testing.T) {
	ctx := context.Background()
	a := newCA(t)
	f := a.cfg.Files
	old := a.cur.Load().root
	next, err := a.makeRoot(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	nextKey, _ := a.rootKey(ctx, next)
	if _, err := a.makeIntermediateUnder(ctx, next, nextKey); err != nil {
		t.Fatal(err)
	}
	oldPEM, _ := os.ReadFile(f.Root())
	os.WriteFile(f.RootPrevious(), oldPEM, 0o644)
	if err := os.Rename(f.RootNext(), f.Root()); err != nil {
		t.Fatal(err)
	}
	// "Crash" here. A restart must still load and issue.
	restarted, err := New(ctx, a.cfg)
	if err != nil {
		t.Fatalf("restart in the middle of a root rollover: %v", err)
	}
	issueOne(t, restarted)
	if _, _, err := restarted.RotateRoot(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if err := restarted.Intermediate().CheckSignatureFrom(next); err != nil {
		t.Fatal("resumed rollover did not install the new intermediate")
	}
	after, _ := issueOne(t, restarted)
	if err := verifiesUnder(after.CertPEM, old); err != nil {
		t.Fatalf("after resume, new chain under the old root: %v", err)
	}
}
