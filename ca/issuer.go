package ca

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Issuer signs agent certificates outside trustamp's own CA: Vault PKI, a
// remote step-ca. The Authority keeps every decision (CSR checks, subject,
// SANs, usages, lifetime) and checks what comes back before anything is
// recorded; an issuer only signs.
type Issuer interface {
	// Sign returns the leaf first, then whatever chain the issuer gives.
	Sign(ctx context.Context, req SignRequest) ([]*x509.Certificate, error)
	// Revoke tells the issuer that a certificate it signed is revoked, so
	// its own CRL lists it.
	Revoke(ctx context.Context, serial string) error
	// Roots are the trust anchors its certificates chain to (pinned in
	// configuration, never fetched from the issuer it vouches for).
	Roots() []*x509.Certificate
}

// SignRequest is what trustamp decided an agent's certificate must say.
type SignRequest struct {
	CSRPEM     []byte
	CommonName string
	URIs       []*url.URL
	DNSNames   []string
	Lifetime   time.Duration
}

// ErrIssuerUnavailable wraps failures to reach an external issuer: the
// caller answers Unavailable with a retry, nothing was recorded.
var ErrIssuerUnavailable = errors.New("ca: certificate issuer unavailable")

// issueExternal has issuer name sign csr for uid under p and checks the
// result against what trustamp asked for.
func (a *Authority) issueExternal(ctx context.Context, name string, csr *x509.CertificateRequest, uid uuid.UUID, p Profile, extraDNS []string) (*Issued, error) {
	is, ok := a.cfg.Issuers[name]
	if !ok {
		return nil, fmt.Errorf("ca: profile %s names issuer %q, which is not configured", p.Name, name)
	}
	spiffe := SPIFFEID(a.cfg.TrustDomain, uid)
	req := SignRequest{CSRPEM: pemBlock("CERTIFICATE REQUEST", csr.Raw), CommonName: uid.String(),
		URIs: []*url.URL{spiffe}, DNSNames: extraDNS, Lifetime: p.Lifetime}
	now := a.cfg.Clock()
	chain, err := is.Sign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: sign csr for %s: %w", name, uid, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("ca: %s returned no certificate for %s", name, uid)
	}
	leaf := chain[0]
	if err := checkExternal(leaf, chain[1:], is.Roots(), csr, req, now); err != nil {
		return nil, fmt.Errorf("ca: %s returned a certificate trustamp did not ask for (not recorded, not sent): %w", name, err)
	}
	var pemChain []byte
	for _, c := range chain {
		if c.IsCA && c.CheckSignatureFrom(c) == nil {
			continue // the root: agents are given it separately
		}
		pemChain = append(pemChain, pemCert(c.Raw)...)
	}
	sum := sha256.Sum256(leaf.Raw)
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	return &Issued{Leaf: leaf, CertPEM: pemChain, Serial: serial, Fingerprint: hex.EncodeToString(sum[:]),
		Profile: p.Name, RenewAfter: p.RenewAfter(leaf.NotBefore, leaf.NotAfter, serial)}, nil
}

// checkExternal verifies an externally signed leaf: trustamp's identity,
// the CSR's key, client auth only, no longer than asked, and a chain to the
// issuer's pinned roots.
func checkExternal(leaf *x509.Certificate, inters, roots []*x509.Certificate, csr *x509.CertificateRequest, req SignRequest, now time.Time) error {
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
		return errors.New("its key is not the CSR's")
	}
	if leaf.Subject.CommonName != req.CommonName {
		return fmt.Errorf("subject CN %q, want %q", leaf.Subject.CommonName, req.CommonName)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != req.URIs[0].String() {
		return fmt.Errorf("URI SANs %v, want exactly %s", leaf.URIs, req.URIs[0])
	}
	for _, d := range leaf.DNSNames {
		if !slices.Contains(req.DNSNames, d) {
			return fmt.Errorf("DNS SAN %q was not asked for", d)
		}
	}
	if len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 {
		return errors.New("it carries IP or email SANs")
	}
	if leaf.IsCA || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return errors.New("it is not a client-auth end-entity certificate")
	}
	if leaf.NotAfter.After(now.Add(req.Lifetime + 2*time.Minute)) {
		return fmt.Errorf("it lives until %s, longer than the profile's %s", leaf.NotAfter.Format(time.RFC3339), req.Lifetime)
	}
	if !leaf.NotAfter.After(now) {
		return errors.New("it is already expired")
	}
	if len(roots) == 0 {
		return errors.New("no trust anchor configured for this issuer")
	}
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rp.AddCert(r)
	}
	for _, c := range inters {
		ip.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("it does not chain to the issuer's configured root: %w", err)
	}
	return nil
}

// RevokeWith forwards a revocation to the external issuer that signed
// serial (name: the profile's issuer). The embedded CA needs nothing: its
// CRL and OCSP come from trustamp's own revocation records.
func (a *Authority) RevokeWith(ctx context.Context, name, serial string) error {
	if name == "" || name == "embedded" {
		return nil
	}
	is, ok := a.cfg.Issuers[name]
	if !ok {
		return fmt.Errorf("ca: issuer %q is not configured", name)
	}
	if err := is.Revoke(ctx, serial); err != nil {
		return fmt.Errorf("ca: %s: revoke %s: %w", name, serial, err)
	}
	return nil
}

// ParseCertificates reads every CERTIFICATE block of a PEM bundle.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return out, nil
}
