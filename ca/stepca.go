package ca

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/certificates/api"
	stepca "github.com/smallstep/certificates/ca"
)

// StepCAConfig configures the step-ca issuer: a remote step-ca signing
// through a JWK provisioner.
type StepCAConfig struct {
	// URL is the step-ca's https address. Required.
	URL string
	// RootFile is step-ca's root: it verifies the TLS connection to it and
	// is the trust anchor for agents it signs. Required.
	RootFile string
	// Provisioner is the JWK provisioner's name; Password decrypts its key
	// (fetched from the CA). Required.
	Provisioner string
	Password    []byte
	// Timeout bounds each request. Zero means 10s.
	Timeout time.Duration
}

// StepCA signs with a remote step-ca: trustamp makes the provisioner's
// one-time token carry exactly the identity it decided (subject = uid,
// SANs = the SPIFFE URI and template DNS names) and the lifetime, and
// revokes there (passively) so step-ca's CRL lists what trustamp revokes.
// The provisioner is loaded at first use, so a step-ca that is down at
// start only fails issuance through it (Unavailable), not the server.
type StepCA struct {
	cfg   StepCAConfig
	roots []*x509.Certificate

	mu     sync.Mutex
	sign   *stepca.Provisioner
	revoke *stepca.Provisioner
}

// NewStepCA checks cfg and reads the root.
func NewStepCA(cfg StepCAConfig, rootPEM []byte) (*StepCA, error) {
	if cfg.URL == "" || cfg.RootFile == "" || cfg.Provisioner == "" || len(cfg.Password) == 0 {
		return nil, errors.New("ca: step-ca: url, root file, provisioner and its password are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	roots, err := ParseCertificates(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca root: %w", err)
	}
	return &StepCA{cfg: cfg, roots: roots}, nil
}

// AllowedExtensions is step-ca's provisioner extension, which it adds to
// every certificate (it names the provisioner that authorised it).
func (s *StepCA) AllowedExtensions() []asn1.ObjectIdentifier {
	return []asn1.ObjectIdentifier{oidStepCAProvisioner}
}

// Roots is step-ca's root.
func (s *StepCA) Roots() []*x509.Certificate { return s.roots }

// provisioners loads the JWK provisioner once, for sign and revoke tokens
// (they differ only in audience).
func (s *StepCA) provisioners() (sign, revoke *stepca.Provisioner, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sign != nil {
		return s.sign, s.revoke, nil
	}
	opts := []stepca.ClientOption{stepca.WithRootFile(s.cfg.RootFile), stepca.WithTimeout(s.cfg.Timeout)}
	sp, err := stepca.NewProvisioner(s.cfg.Provisioner, "", s.cfg.URL, s.cfg.Password, opts...)
	if err != nil {
		return nil, nil, s.wrap("load provisioner "+s.cfg.Provisioner, err)
	}
	base, err := url.Parse(s.cfg.URL)
	if err != nil {
		return nil, nil, err
	}
	// The same key and client; revocation tokens only name another audience.
	rp := *sp
	rp.SetAudience(base.ResolveReference(&url.URL{Path: "/1.0/revoke"}).String())
	s.sign, s.revoke = sp, &rp
	return sp, &rp, nil
}

// wrap marks transport failures as ErrIssuerUnavailable; step-ca's
// refusals stay what they are.
func (s *StepCA) wrap(what string, err error) error {
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) || strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "Client.Timeout") || strings.Contains(err.Error(), "EOF") {
		return fmt.Errorf("%w: step-ca %s: %s", ErrIssuerUnavailable, what, err)
	}
	return fmt.Errorf("step-ca %s: %w", what, err)
}

// Sign has step-ca sign the CSR under a token for exactly trustamp's
// identity and lifetime.
func (s *StepCA) Sign(ctx context.Context, req SignRequest) ([]*x509.Certificate, error) {
	sp, _, err := s.provisioners()
	if err != nil {
		return nil, err
	}
	sans := make([]string, 0, len(req.URIs)+len(req.DNSNames))
	for _, u := range req.URIs {
		sans = append(sans, u.String())
	}
	sans = append(sans, req.DNSNames...)
	tok, err := sp.Token(req.CommonName, sans...)
	if err != nil {
		return nil, fmt.Errorf("step-ca token: %w", err)
	}
	csr, err := ParseCSR(req.CSRPEM)
	if err != nil {
		return nil, err
	}
	resp, err := sp.Client.SignWithContext(ctx, &api.SignRequest{
		CsrPEM: api.CertificateRequest{CertificateRequest: csr}, OTT: tok,
		NotAfter: api.NewTimeDuration(time.Now().Add(req.Lifetime)),
	})
	if err != nil {
		return nil, s.wrap("sign", err)
	}
	var out []*x509.Certificate
	for _, c := range resp.CertChainPEM {
		out = append(out, c.Certificate)
	}
	if len(out) == 0 && resp.ServerPEM.Certificate != nil {
		out = append(out, resp.ServerPEM.Certificate)
		if resp.CaPEM.Certificate != nil {
			out = append(out, resp.CaPEM.Certificate)
		}
	}
	return out, nil
}

// Revoke revokes serial (hex) in step-ca, passively (step-ca records it
// and lists it on its CRL; trustamp already refuses it).
func (s *StepCA) Revoke(ctx context.Context, serial string) error {
	_, rp, err := s.provisioners()
	if err != nil {
		return err
	}
	n, ok := new(big.Int).SetString(serial, 16)
	if !ok {
		return fmt.Errorf("serial %q is not hex", serial)
	}
	dec := n.String()
	tok, err := rp.Token(dec)
	if err != nil {
		return fmt.Errorf("step-ca revoke token: %w", err)
	}
	if _, err := rp.Client.RevokeWithContext(ctx, &api.RevokeRequest{Serial: dec, OTT: tok, ReasonCode: 1,
		Reason: "revoked in trustamp", Passive: true}, nil); err != nil {
		return s.wrap("revoke", err)
	}
	return nil
}
