package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
)

// Config configures an Authority.
type Config struct {
	// Keys holds the CA keys. Required.
	Keys KeyStore
	// Files locates the CA certificates. Required.
	Files Files
	// TrustDomain is the SPIFFE trust domain of agent identities. Required.
	TrustDomain string
	// CRLURL and OCSPURL, when set, are written into every agent
	// certificate (CRL distribution point, OCSP responder in the authority
	// information access), so relying parties that are not trustamp can
	// check revocation.
	CRLURL, OCSPURL string
	// IntermediateKMS, when set (hashivault://KEY), is where the key of
	// every intermediate made from now on lives: the next
	// `ca rotate-intermediate` certifies that KMS key, and from then on
	// issuance, CRLs and the OCSP signer are signed by the KMS; the private
	// key never enters this process. An intermediate whose key is in Keys
	// (made before) keeps being used until that rollover. OpenKMS opens it.
	IntermediateKMS string
	OpenKMS         func(ctx context.Context, uri string) (crypto.Signer, error)
	// Issuers are the external issuers profiles may name (Profile.Issuer),
	// by name ("vault-pki"). Their roots are trusted for client auth.
	Issuers map[string]Issuer
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Authority issues agent certificates from the intermediate, through
// smallstep's embedded authority. It is safe for concurrent use; an
// intermediate or root rollover swaps the issuer without stopping issuance.
type Authority struct {
	cfg Config
	cur atomic.Pointer[issuer]

	ocspMu sync.Mutex
	ocsp   *ocspSigner

	kmsMu sync.Mutex
	kms   crypto.Signer // the IntermediateKMS key, once opened
}

// issuer is what signs and what is trusted today: replaced as a whole on
// rollover.
type issuer struct {
	step          *authority.Authority
	root          *x509.Certificate // the current root, which issued intermediate
	roots         *x509.CertPool    // current root, and the previous one during a root rollover
	clientRoots   *x509.CertPool    // roots, and the external issuers' roots: what agent chains may end at
	rootsPEM      []byte            // the same, PEM: what agents are told to trust
	intermediate  *x509.Certificate
	key           crypto.Signer  // the intermediate's key: signs CRLs and the OCSP signer's certificate
	chainPEM      []byte         // intermediate (and the bridge during a root rollover), after every leaf
	intermediates *x509.CertPool // current and previous intermediates, and the bridge
}

// New loads the bootstrapped CA.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Keys == nil || cfg.Files.Dir == "" || cfg.TrustDomain == "" {
		return nil, errors.New("ca: Keys, Files and TrustDomain are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	a := &Authority{cfg: cfg}
	if err := a.load(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// load reads the roots, the intermediate and what a rollover left behind
// (previous root, bridge, previous intermediate), and makes them current.
func (a *Authority) load(ctx context.Context) error {
	f := a.cfg.Files
	root, rootPEM, err := readCert(f.Root())
	if err != nil {
		return err
	}
	iss := &issuer{root: root, roots: x509.NewCertPool(), rootsPEM: append([]byte(nil), rootPEM...), intermediates: x509.NewCertPool()}
	iss.roots.AddCert(root)
	stepRoots := []*x509.Certificate{root}
	prevRoot, prevRootPEM, err := readCert(f.RootPrevious())
	if err == nil {
		iss.roots.AddCert(prevRoot)
		iss.rootsPEM = append(iss.rootsPEM, prevRootPEM...)
		stepRoots = append(stepRoots, prevRoot)
	}
	signedByARoot := func(c *x509.Certificate) bool {
		return c.CheckSignatureFrom(root) == nil || (prevRoot != nil && c.CheckSignatureFrom(prevRoot) == nil)
	}
	inter, interPEM, err := readCert(f.Intermediate())
	if err != nil {
		return err
	}
	if !signedByARoot(inter) {
		return errors.New("ca: intermediate.pem is not signed by the root")
	}
	iss.intermediate, iss.chainPEM = inter, interPEM
	iss.intermediates.AddCert(inter)
	if prev, _, err := readCert(f.Previous()); err == nil && signedByARoot(prev) {
		iss.intermediates.AddCert(prev)
	}
	// During a root rollover the bridge (this intermediate, certified by the
	// previous root) follows it in every chain, so agents that trust only
	// the previous root still verify new certificates.
	if bridge, bridgePEM, err := readCert(f.Bridge()); err == nil && prevRoot != nil &&
		bridge.CheckSignatureFrom(prevRoot) == nil && samePublicKey(bridge, inter) {
		iss.chainPEM = append(append([]byte(nil), interPEM...), bridgePEM...)
		iss.intermediates.AddCert(bridge)
	}
	key, err := a.intermediateKey(ctx, inter)
	if err != nil {
		return err
	}
	iss.key = key
	iss.clientRoots = iss.roots.Clone()
	for _, is := range a.cfg.Issuers {
		for _, r := range is.Roots() {
			iss.clientRoots.AddCert(r)
		}
	}
	iss.step, err = authority.NewEmbedded(
		authority.WithX509RootCerts(stepRoots...),
		authority.WithX509Signer(inter, key),
		authority.WithQuietInit(),
	)
	if err != nil {
		return fmt.Errorf("ca: start embedded authority: %w", err)
	}
	a.cur.Store(iss)
	return nil
}

// intermediateKey is the intermediate's key: the KMS key when the
// certificate certifies it, else the key store's.
func (a *Authority) intermediateKey(ctx context.Context, inter *x509.Certificate) (crypto.Signer, error) {
	if a.cfg.IntermediateKMS != "" {
		k, err := a.kmsKey(ctx)
		if err != nil {
			return nil, err
		}
		if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(inter.PublicKey) {
			return k, nil
		}
	}
	return a.caKey(ctx, inter, intermediateKeyPrefix, IntermediateKeyName)
}

// kmsKey opens IntermediateKMS once.
func (a *Authority) kmsKey(ctx context.Context) (crypto.Signer, error) {
	a.kmsMu.Lock()
	defer a.kmsMu.Unlock()
	if a.kms != nil {
		return a.kms, nil
	}
	if a.cfg.OpenKMS == nil {
		return nil, fmt.Errorf("ca: intermediate key %s: no KMS support configured", a.cfg.IntermediateKMS)
	}
	k, err := a.cfg.OpenKMS(ctx, a.cfg.IntermediateKMS)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	a.kms = k
	return k, nil
}

func samePublicKey(a, b *x509.Certificate) bool {
	k, ok := a.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b.PublicKey)
}

// Intermediate is the certificate that issues today.
func (a *Authority) Intermediate() *x509.Certificate { return a.cur.Load().intermediate }

// RootPEM is the CA bundle agents trust (served at /v1/ca.pem and sent as
// ca_cert in offers).
// During a root rollover it holds both roots.
func (a *Authority) RootPEM() []byte { return a.cur.Load().rootsPEM }

// Roots is the pool client certificates chain to: trustamp's roots and
// the external issuers' roots.
func (a *Authority) Roots() *x509.CertPool { return a.cur.Load().clientRoots }

// TrustDomain is the SPIFFE trust domain of issued identities.
func (a *Authority) TrustDomain() string { return a.cfg.TrustDomain }

// Issued is a signed agent certificate and what is recorded about it.
type Issued struct {
	Leaf *x509.Certificate
	// CertPEM is the leaf followed by the intermediate: what the agent
	// presents in its TLS handshake.
	CertPEM     []byte
	Serial      string // lowercase hex
	Fingerprint string // SHA-256 of the leaf DER, lowercase hex
	Profile     string
	RenewAfter  time.Time
}

// IssueAgent signs csr for agent uid under profile p, after CheckAgentCSR.
// The server decides every byte of the certificate: subject (CN = uid, and
// nothing else), SANs (the SPIFFE URI and the profile's SAN templates), key
// usage, extended key usage, basic constraints, validity, CRL and OCSP
// locations; only the CSR's public key is taken from the request. Whatever
// the issuer (embedded, vault-pki, step-ca), the certificate then passes
// checkIssued before anything is recorded or returned; a failure is
// ErrIssuedCertRejected.
// attrs are the agent's description attributes, for the profile's SAN
// templates; nil is fine for profiles without templates.
func (a *Authority) IssueAgent(ctx context.Context, csr *x509.CertificateRequest, uid uuid.UUID, p Profile, attrs map[string]string) (*Issued, error) {
	p = p.WithDefaults()
	if err := CheckAgentCSR(csr, uid, a.cfg.TrustDomain, p); err != nil {
		return nil, err
	}
	extraDNS, err := p.RenderSANs(attrs)
	if err != nil {
		return nil, err
	}
	name := p.Issuer
	if name == "" {
		name = "embedded"
	}
	want := issuedWant{pub: csr.PublicKey, uid: uid, spiffe: SPIFFEID(a.cfg.TrustDomain, uid).String(), dns: extraDNS,
		lifetime: p.Lifetime, backdate: p.Backdate, now: a.cfg.Clock()}
	var (
		chain    []*x509.Certificate
		rules    issuedRules
		pemChain func(leaf *x509.Certificate) []byte
	)
	if name == "embedded" {
		chain, rules, pemChain, err = a.signEmbedded(ctx, csr, want)
	} else {
		chain, rules, pemChain, err = a.signExternal(ctx, name, csr, p, want)
	}
	if err != nil {
		return nil, err
	}
	if err := checkIssued(chain, want, rules); err != nil {
		return nil, fmt.Errorf("%w: %s issued a certificate trustamp did not ask for (not recorded, not sent): %w", ErrIssuedCertRejected, name, err)
	}
	leaf := chain[0]
	sum := sha256.Sum256(leaf.Raw)
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	return &Issued{
		Leaf:        leaf,
		CertPEM:     pemChain(leaf),
		Serial:      serial,
		Fingerprint: hex.EncodeToString(sum[:]),
		Profile:     p.Name,
		RenewAfter:  p.RenewAfter(leaf.NotBefore, leaf.NotAfter, serial),
	}, nil
}

// agentTemplate is an agent certificate as trustamp's profile makes it,
// from nothing but the agent's public key.
func (a *Authority) agentTemplate(csr *x509.CertificateRequest, w issuedWant) *x509.Certificate {
	c := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: w.uid.String()},
		PublicKey:             csr.PublicKey,
		PublicKeyAlgorithm:    csr.PublicKeyAlgorithm,
		NotBefore:             w.now.Add(-w.backdate),
		NotAfter:              w.now.Add(w.lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              slices.Clone(w.dns),
		URIs:                  []*url.URL{SPIFFEID(a.cfg.TrustDomain, w.uid)},
	}
	if a.cfg.CRLURL != "" {
		c.CRLDistributionPoints = []string{a.cfg.CRLURL}
	}
	if a.cfg.OCSPURL != "" {
		c.OCSPServer = []string{a.cfg.OCSPURL}
	}
	return c
}

// signEmbedded signs through smallstep's embedded authority. smallstep
// builds its template from the CSR (subject, SANs and every requested
// extension, as ExtraExtensions that override the fields set after); the
// modifier throws that template away and puts trustamp's in its place, so
// nothing of the request but its public key is signed.
func (a *Authority) signEmbedded(ctx context.Context, csr *x509.CertificateRequest, w issuedWant) ([]*x509.Certificate, issuedRules, func(*x509.Certificate) []byte, error) {
	tmpl := a.agentTemplate(csr, w)
	replace := provisioner.CertificateModifierFunc(func(c *x509.Certificate, _ provisioner.SignOptions) error {
		*c = *tmpl
		return nil
	})
	// smallstep verifies the CSR's signature before signing; only when it
	// refuses is the signature checked again, to say so in our words.
	iss := a.cur.Load()
	chain, err := iss.step.SignWithContext(ctx, csr, provisioner.SignOptions{Backdate: w.backdate}, replace)
	if err != nil {
		if sigErr := csr.CheckSignature(); sigErr != nil {
			return nil, issuedRules{}, nil, refuse("CSR signature does not verify: %v", sigErr)
		}
		return nil, issuedRules{}, nil, fmt.Errorf("ca: sign csr for %s: %w", w.uid, err)
	}
	rules := issuedRules{issuer: "embedded", extensions: BaseExtensions, pinnedURLs: true,
		crlURL: a.cfg.CRLURL, ocspURL: a.cfg.OCSPURL, roots: iss.roots, intermediates: iss.intermediates,
		signedBy: iss.intermediate}
	pemChain := func(leaf *x509.Certificate) []byte { return append(pemCert(leaf.Raw), iss.chainPEM...) }
	// The chain checked is the leaf alone, issued by the intermediate of
	// today, not whatever smallstep appended.
	return chain[:1], rules, pemChain, nil
}

// ErrServerKeysForbidden means the profile does not let the server make an
// agent's key.
var ErrServerKeysForbidden = errors.New("ca: certificate profile does not allow server-made keys")

// IssueAgentServerKey makes an ECDSA P-256 key pair for agent uid and issues
// its certificate, for agents that cannot send a CSR, where p allows it. The
// private key is returned PEM-encoded for the offer and never stored.
func (a *Authority) IssueAgentServerKey(ctx context.Context, uid uuid.UUID, p Profile, attrs map[string]string) (*Issued, []byte, error) {
	if !p.ServerMadeKeys {
		return nil, nil, fmt.Errorf("%w (profile %s)", ErrServerKeysForbidden, p.WithDefaults().Name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: server-made key for %s: %w", uid, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: server-made key for %s: %w", uid, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, err
	}
	iss, err := a.IssueAgent(ctx, csr, uid, p, attrs)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return iss, pemBlock("PRIVATE KEY", keyDER), nil
}

// VerifyAgent checks a presented chain up to the root, for client auth, at
// the Authority's current time, and returns the agent uid it names. It does
// not consult revocation or the store: callers do.
func (a *Authority) VerifyAgent(chain []*x509.Certificate) (uuid.UUID, error) {
	if len(chain) == 0 {
		return uuid.Nil, fmt.Errorf("%w: no certificate", ErrNotAgentCert)
	}
	cur := a.cur.Load()
	inters := cur.intermediates.Clone()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: cur.clientRoots, Intermediates: inters, CurrentTime: a.cfg.Clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %v", ErrNotAgentCert, err)
	}
	return AgentID(chain[0], a.cfg.TrustDomain)
}
