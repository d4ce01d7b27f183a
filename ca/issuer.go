package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"
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

// signExternal has issuer name sign csr under p with trustamp's identity;
// IssueAgent checks the result.
func (a *Authority) signExternal(ctx context.Context, name string, csr *x509.CertificateRequest, p Profile, w issuedWant) ([]*x509.Certificate, issuedRules, func(*x509.Certificate) []byte, error) {
	is, ok := a.cfg.Issuers[name]
	if !ok {
		return nil, issuedRules{}, nil, fmt.Errorf("ca: profile %s names issuer %q, which is not configured", p.Name, name)
	}
	req := SignRequest{CSRPEM: pemBlock("CERTIFICATE REQUEST", csr.Raw), CommonName: w.uid.String(),
		URIs: []*url.URL{SPIFFEID(a.cfg.TrustDomain, w.uid)}, DNSNames: w.dns, Lifetime: p.Lifetime}
	chain, err := is.Sign(ctx, req)
	if err != nil {
		return nil, issuedRules{}, nil, fmt.Errorf("ca: %s: sign csr for %s: %w", name, w.uid, err)
	}
	if len(chain) == 0 {
		return nil, issuedRules{}, nil, fmt.Errorf("%w: %s returned no certificate for %s", ErrIssuedCertRejected, name, w.uid)
	}
	rules := issuedRules{issuer: name, extensions: BaseExtensions}
	if ea, ok := is.(ExtensionAllower); ok {
		rules.extensions = append(slices.Clone(BaseExtensions), ea.AllowedExtensions()...)
	}
	if roots := is.Roots(); len(roots) > 0 {
		rules.roots = x509.NewCertPool()
		for _, r := range roots {
			rules.roots.AddCert(r)
		}
	}
	pemChain := func(*x509.Certificate) []byte {
		var out []byte
		for _, c := range chain {
			if c.IsCA && c.CheckSignatureFrom(c) == nil {
				continue // the root: agents are given it separately
			}
			out = append(out, pemCert(c.Raw)...)
		}
		return out
	}
	return chain, rules, pemChain, nil
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
