package ca

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestProfileRefusesKeyTypesItDoesNotAllow(t *testing.T) {
	a := newCA(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	csr, _ := ParseCSR(csrPEM(t, ed, &x509.CertificateRequest{}))
	p := Profile{Name: "ecdsa-only", KeyTypes: []string{KeyECDSAP256}}
	_, err := a.IssueAgent(context.Background(), csr, uuid.Must(uuid.NewV7()), p, nil)
	if !errors.Is(err, ErrCSRRefused) || !strings.Contains(err.Error(), "ed25519 is not allowed by certificate profile ecdsa-only") {
		t.Fatalf("err = %v", err)
	}
}

func TestProfileLifetimeAndRenewPoint(t *testing.T) {
	a := newCA(t)
	p := Profile{Name: "short", Lifetime: 30 * time.Second, RenewAt: 0.5, Jitter: 0.1, Backdate: time.Second}
	csr, _ := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	iss, err := a.IssueAgent(context.Background(), csr, uuid.Must(uuid.NewV7()), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := iss.Leaf.NotAfter.Sub(iss.Leaf.NotBefore); got != 31*time.Second {
		t.Fatalf("validity %s, want 30s + 1s backdate", got)
	}
	life := 31 * time.Second
	earliest, latest := iss.Leaf.NotBefore.Add(time.Duration(float64(life)*0.4)), iss.Leaf.NotBefore.Add(life/2)
	if iss.RenewAfter.Before(earliest) || iss.RenewAfter.After(latest) || iss.Profile != "short" {
		t.Fatalf("renew after %v, want within [%v, %v]", iss.RenewAfter, earliest, latest)
	}
}

func TestRenewJitterSpreadsAndIsStable(t *testing.T) {
	p := Profile{}
	nb := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	na := nb.Add(24 * time.Hour)
	seen := map[time.Time]bool{}
	for i := 0; i < 100; i++ {
		serial := fmt.Sprintf("%032x", i)
		r := p.RenewAfter(nb, na, serial)
		if r != p.RenewAfter(nb, na, serial) {
			t.Fatal("renew point not stable for a serial")
		}
		if r.Before(nb.Add(time.Duration(float64(24*time.Hour)*(2.0/3-0.05)))) || r.After(nb.Add(16*time.Hour)) {
			t.Fatalf("renew point %v outside 2/3 of life minus up to 5%%", r)
		}
		seen[r] = true
	}
	if len(seen) < 90 {
		t.Fatalf("only %d distinct renew points for 100 certificates: no spread", len(seen))
	}
}

func TestServerMadeKeys(t *testing.T) {
	a := newCA(t)
	uid := uuid.Must(uuid.NewV7())
	if _, _, err := a.IssueAgentServerKey(context.Background(), uid, Profile{}, nil); !errors.Is(err, ErrServerKeysForbidden) {
		t.Fatalf("server-made key under a profile that forbids it: %v", err)
	}
	iss, keyPEM, err := a.IssueAgentServerKey(context.Background(), uid, Profile{ServerMadeKeys: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(iss.Leaf.PublicKey) {
		t.Fatal("returned key does not match the certificate")
	}
}

func TestProfileValidate(t *testing.T) {
	for name, p := range map[string]Profile{
		"renew_at 1":     {RenewAt: 1},
		"jitter too big": {RenewAt: 0.5, Jitter: 0.6},
		"weak rsa":       {RSAMinBits: 1024},
		"unknown key":    {KeyTypes: []string{"dsa"}},
		"tiny lifetime":  {Lifetime: time.Millisecond},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (Profile{}).Validate(); err != nil {
		t.Errorf("default profile: %v", err)
	}
}

func TestSANTemplates(t *testing.T) {
	a := newCA(t)
	p := Profile{Name: "edge", SANTemplates: []string{"{host.name}.agents.example.com"}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	csr, _ := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	uid := uuid.Must(uuid.NewV7())
	iss, err := a.IssueAgent(context.Background(), csr, uid, p, map[string]string{"host.name": "Node-7"})
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Leaf.DNSNames) != 1 || iss.Leaf.DNSNames[0] != "node-7.agents.example.com" {
		t.Fatalf("DNS SANs %v", iss.Leaf.DNSNames)
	}
	for name, attrs := range map[string]map[string]string{
		"missing attribute":  {},
		"dots (adds labels)": {"host.name": "bank.com.evil"},
		"wildcard":           {"host.name": "*"},
		"empty":              {"host.name": ""},
	} {
		if _, err := a.IssueAgent(context.Background(), csr, uid, p, attrs); !errors.Is(err, ErrCSRRefused) {
			t.Errorf("%s: %v, want refusal", name, err)
		}
	}
	// Without templates, agents get no DNS SAN whatever they report.
	plain, _ := a.IssueAgent(context.Background(), csr, uid, Profile{}, map[string]string{"host.name": "x"})
	if len(plain.Leaf.DNSNames) != 0 {
		t.Fatal("DNS SAN without a template")
	}
	for _, bad := range []string{"fixed.example.com", "{host.name}..example.com", "{a}_{b}.example.com"} {
		if err := (Profile{SANTemplates: []string{bad}}).Validate(); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
}
