package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/ca/catest"
)

type spoilCase struct {
	name   string
	spoil  func(*x509.Certificate, *crypto.PublicKey)
	reason string // what the rejection must name
}

func rawExt(oid asn1.ObjectIdentifier, critical bool, v any) pkix.Extension {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return pkix.Extension{Id: oid, Critical: critical, Value: b}
}

func mustDER(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func gn(tag int, compound bool, b []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: compound, Bytes: b}
}

// spoilCases are certificates an issuer might return that are not what
// trustamp asked for: one per rule of checkIssued.
func spoilCases(t *testing.T) []spoilCase {
	other := p256(t)
	ext := func(e pkix.Extension) func(*x509.Certificate, *crypto.PublicKey) {
		return func(c *x509.Certificate, _ *crypto.PublicKey) { c.ExtraExtensions = append(c.ExtraExtensions, e) }
	}
	ownURI := func(c *x509.Certificate) asn1.RawValue { return gn(6, false, []byte(c.URIs[0].String())) }
	dirName, _ := asn1.Marshal(pkix.Name{CommonName: "admin"}.ToRDNSequence())
	type dp struct {
		Name      asn1.RawValue `asn1:"optional,tag:0"`
		CRLIssuer asn1.RawValue `asn1:"optional,tag:2"`
	}
	fullName := func(names ...asn1.RawValue) asn1.RawValue {
		inner, _ := asn1.Marshal(names)
		var seq asn1.RawValue
		asn1.Unmarshal(inner, &seq)
		b, _ := asn1.Marshal(gn(0, true, seq.Bytes))
		return asn1.RawValue{FullBytes: nil, Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: b}
	}
	type ad struct {
		Method   asn1.ObjectIdentifier
		Location asn1.RawValue
	}
	return []spoilCase{
		{"another key", func(_ *x509.Certificate, pub *crypto.PublicKey) { *pub = other.Public() }, "key is not the CSR's"},
		{"another CN", func(c *x509.Certificate, _ *crypto.PublicKey) { c.Subject.CommonName = "someone-else" }, "subject CN"},
		{"subject O", func(c *x509.Certificate, _ *crypto.PublicKey) { c.Subject.Organization = []string{"evil"} }, "no other attribute"},
		{"subject OU", func(c *x509.Certificate, _ *crypto.PublicKey) { c.Subject.OrganizationalUnit = []string{"evil"} }, "no other attribute"},
		{"subject C", func(c *x509.Certificate, _ *crypto.PublicKey) { c.Subject.Country = []string{"EV"} }, "no other attribute"},
		{"another identity", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: "evil", Path: "/x"}}
		}, "URI SANs"},
		{"a second URI", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "evil", Path: "/x"})
		}, "URI SANs"},
		{"no SAN", func(c *x509.Certificate, _ *crypto.PublicKey) { c.URIs = nil }, "no subject alternative name"},
		{"DNS SAN not asked for", func(c *x509.Certificate, _ *crypto.PublicKey) { c.DNSNames = []string{"admin.example.com"} }, "DNS SANs"},
		{"IP SAN", func(c *x509.Certificate, _ *crypto.PublicKey) { c.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }, "iPAddress"},
		{"email SAN", func(c *x509.Certificate, _ *crypto.PublicKey) { c.EmailAddresses = []string{"a@evil.example"} }, "rfc822Name"},
		{"otherName SAN", func(c *x509.Certificate, pub *crypto.PublicKey) {
			upn, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
			val, _ := asn1.Marshal(gn(0, true, []byte{0x0c, 0x01, 'a'}))
			ext(rawExt(oidSubjectAltName, false, []asn1.RawValue{ownURI(c), gn(0, true, append(upn, val...))}))(c, pub)
		}, "otherName"},
		{"directoryName SAN", func(c *x509.Certificate, pub *crypto.PublicKey) {
			ext(rawExt(oidSubjectAltName, false, []asn1.RawValue{ownURI(c), gn(4, true, dirName)}))(c, pub)
		}, "directoryName"},
		{"EKU serverAuth too", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
		}, "serverAuth"},
		{"EKU OCSPSigning", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageOCSPSigning}
		}, "OCSPSigning"},
		{"EKU codeSigning", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning}
		}, "codeSigning"},
		{"unknown EKU", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 99999, 2}}
		}, "1.3.6.1.4.1.99999.2"},
		{"no EKU", func(c *x509.Certificate, _ *crypto.PublicKey) { c.ExtKeyUsage = nil }, "no extended key usage"},
		{"key usage certSign", func(c *x509.Certificate, _ *crypto.PublicKey) { c.KeyUsage |= x509.KeyUsageCertSign }, "keyCertSign"},
		{"key usage cRLSign", func(c *x509.Certificate, _ *crypto.PublicKey) { c.KeyUsage |= x509.KeyUsageCRLSign }, "cRLSign"},
		{"key usage keyEncipherment", func(c *x509.Certificate, _ *crypto.PublicKey) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }, "keyEncipherment"},
		{"no key usage", func(c *x509.Certificate, _ *crypto.PublicKey) { c.KeyUsage = 0 }, "key usage []"},
		{"a CA certificate", func(c *x509.Certificate, _ *crypto.PublicKey) { c.IsCA, c.BasicConstraintsValid = true, true }, "CA certificate"},
		{"name constraints", func(c *x509.Certificate, _ *crypto.PublicKey) { c.PermittedDNSDomains = []string{"evil.example"} }, "name constraints"},
		{"OCSP no-check", ext(pkix.Extension{Id: oidOCSPNoCheck, Value: []byte{5, 0}}), "OCSP no-check"},
		{"certificate policies", ext(rawExt(oidCertPolicies, false, []struct{ ID asn1.ObjectIdentifier }{{asn1.ObjectIdentifier{2, 5, 29, 32, 0}}})), "certificate policies"},
		{"unknown non-critical extension", ext(pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{5, 0}}), "outside the profile's list"},
		{"unknown critical extension", ext(pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}), "not understood"},
		{"step-ca provisioner extension from an issuer that does not declare it", ext(pkix.Extension{Id: oidStepCAProvisioner, Value: []byte{5, 0}}), "step-ca provisioner"},
		{"CRL distribution points marked critical", ext(rawExt(oidCRLDistribution, true, []dp{{Name: fullName(gn(6, false, []byte("http://x/crl")))}})), "marked critical"},
		{"AIA with another access method", ext(rawExt(oidAuthorityInfo, false, []ad{{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 5}, gn(6, false, []byte("http://x"))}})), "not OCSP or CA issuers"},
		{"AIA location not a URI", ext(rawExt(oidAuthorityInfo, false, []ad{{oidAccessOCSP, gn(4, true, dirName)}})), "not a URI"},
		{"CRL distribution point naming a CRL issuer", ext(rawExt(oidCRLDistribution, false, []dp{{Name: fullName(gn(6, false, []byte("http://x/crl"))), CRLIssuer: gn(2, true, mustDER(gn(4, true, dirName)))}})), "CRL issuer"},
		{"CRL distribution point with an element of another tag", ext(rawExt(oidCRLDistribution, false, []struct {
			Name  asn1.RawValue
			Other asn1.RawValue
		}{{fullName(gn(6, false, []byte("http://x/crl"))), gn(4, true, dirName)}})), "do not parse"},
		{"CRL distribution point not a URI", ext(rawExt(oidCRLDistribution, false, []dp{{Name: fullName(gn(4, true, dirName))}})), "not a URI"},
		{"longer life", func(c *x509.Certificate, _ *crypto.PublicKey) { c.NotAfter = t0.Add(48 * time.Hour) }, "longer than"},
		{"backdated", func(c *x509.Certificate, _ *crypto.PublicKey) { c.NotBefore = t0.Add(-48 * time.Hour) }, "backdated"},
		{"not yet valid", func(c *x509.Certificate, _ *crypto.PublicKey) { c.NotBefore = t0.Add(time.Hour) }, "in the future"},
		{"expired", func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.NotBefore, c.NotAfter = t0.Add(-2*time.Hour), t0.Add(-time.Second)
		}, "already expired"},
	}
}

// allowingIssuer is a fake issuer that declares step-ca's extension.
type allowingIssuer struct{ *fakeIssuer }

func (allowingIssuer) AllowedExtensions() []asn1.ObjectIdentifier {
	return []asn1.ObjectIdentifier{oidStepCAProvisioner}
}

// An issuer's own extension is accepted only from an issuer that declares
// it; a certificate that does not chain to the pinned root is rejected.
func TestIssuedCheckIssuerExtensionsAndChain(t *testing.T) {
	a := newCA(t)
	f := newFakeIssuer(t)
	a.cfg.Issuers = map[string]Issuer{"plain": f, "step": allowingIssuer{f}}
	if err := a.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	uid := uuid.Must(uuid.NewV7())
	issue := func(issuer string) (*Issued, error) {
		csr, err := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return a.IssueAgent(context.Background(), csr, uid, Profile{Name: "ext", Issuer: issuer, Lifetime: time.Hour}, nil)
	}
	f.spoil = func(c *x509.Certificate, _ *crypto.PublicKey) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: oidStepCAProvisioner, Value: []byte{5, 0}})
	}
	if _, err := issue("step"); err != nil {
		t.Fatalf("the step-ca extension from an issuer that declares it: %v", err)
	}
	if _, err := issue("plain"); !errors.Is(err, ErrIssuedCertRejected) {
		t.Fatalf("the step-ca extension from an issuer that does not declare it: %v", err)
	}
	f.spoil = nil
	f.pinned = f.root
	g := newFakeIssuer(t) // signs with another root, of the same name
	f.root, f.key = g.root, g.key
	if _, err := issue("plain"); !errors.Is(err, ErrIssuedCertRejected) || !strings.Contains(err.Error(), "pinned root") {
		t.Fatalf("a certificate that does not chain to the pinned root: %v", err)
	}
}

// trustamp's own CA writes the CRL and OCSP URLs itself: anything else in
// those extensions, or a CA issuers URL, is rejected.
func TestIssuedCheckPinsEmbeddedRevocationURLs(t *testing.T) {
	f := newFakeIssuer(t)
	key := p256(t)
	uid := uuid.Must(uuid.NewV7())
	csr, _ := ParseCSR(csrPEM(t, key, &x509.CertificateRequest{}))
	req := SignRequest{CSRPEM: pemBlock("CERTIFICATE REQUEST", csr.Raw), CommonName: uid.String(),
		URIs: []*url.URL{SPIFFEID("example.test", uid)}, Lifetime: time.Hour}
	roots := x509.NewCertPool()
	roots.AddCert(f.root)
	const crl, ocsp = "https://trustamp.test/v1/crl", "https://trustamp.test/v1/ocsp"
	rules := issuedRules{issuer: "embedded", extensions: BaseExtensions, pinnedURLs: true, crlURL: crl, ocspURL: ocsp, roots: roots}
	want := issuedWant{pub: key.Public(), uid: uid, spiffe: req.URIs[0].String(), lifetime: time.Hour, backdate: time.Minute, now: t0}
	for _, tc := range []struct {
		name      string
		cdp, ocsp []string
		issuers   []string
		ok        bool
	}{
		{"exactly the server's", []string{crl}, []string{ocsp}, nil, true},
		{"another CRL URL", []string{"http://evil.example/crl"}, []string{ocsp}, nil, false},
		{"a second CRL URL", []string{crl, "http://evil.example/crl"}, []string{ocsp}, nil, false},
		{"no CRL URL", nil, []string{ocsp}, nil, false},
		{"another OCSP URL", []string{crl}, []string{"http://evil.example/ocsp"}, nil, false},
		{"no OCSP URL", []string{crl}, nil, nil, false},
		{"a CA issuers URL", []string{crl}, []string{ocsp}, []string{"http://evil.example/ca"}, false},
	} {
		f.spoil = func(c *x509.Certificate, _ *crypto.PublicKey) {
			c.CRLDistributionPoints, c.OCSPServer, c.IssuingCertificateURL = tc.cdp, tc.ocsp, tc.issuers
		}
		chain, err := f.Sign(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkIssued(chain, want, rules); (err == nil) != tc.ok {
			t.Errorf("%s: check = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Without configured URLs, the extensions must be absent.
	rules.crlURL, rules.ocspURL = "", ""
	f.spoil = func(c *x509.Certificate, _ *crypto.PublicKey) { c.CRLDistributionPoints = []string{crl} }
	chain, _ := f.Sign(context.Background(), req)
	if err := checkIssued(chain, want, rules); err == nil {
		t.Error("a CRL URL in a certificate of a CA configured without one was accepted")
	}
}

// Every hostile CSR of issue 14, through trustamp's own CA: refused with
// the reason, or signed into a certificate that carries nothing of it.
func TestHostileCSRsEmbedded(t *testing.T) {
	a := newCA(t)
	a.cfg.CRLURL, a.cfg.OCSPURL = "https://trustamp.test/v1/crl", "https://trustamp.test/v1/ocsp"
	for _, c := range catest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			uid := uuid.Must(uuid.NewV7())
			p, err := catest.CSR(c, p256(t), uid, "example.test")
			if err != nil {
				t.Fatal(err)
			}
			csr, err := ParseCSR(p)
			if err != nil {
				t.Fatal(err)
			}
			iss, err := a.IssueAgent(context.Background(), csr, uid, Profile{}, nil)
			if c.Refused {
				if !errors.Is(err, ErrCSRRefused) || !strings.Contains(err.Error(), c.Reason) {
					t.Fatalf("issued %v, err %v; want ErrCSRRefused naming %q", iss != nil, err, c.Reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v (the request should be ignored, not refused)", err)
			}
			if err := catest.Lacks(c, iss.Leaf, catest.Want{UID: uid, TrustDomain: "example.test", CRLURL: a.cfg.CRLURL, OCSPURL: a.cfg.OCSPURL}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Two SAN templates that render the same name do not make the certificate
// rejected (the DNS names are compared as sets).
func TestIssuedCheckDuplicateTemplateNames(t *testing.T) {
	a := newCA(t)
	uid := uuid.Must(uuid.NewV7())
	csr, _ := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	p := Profile{SANTemplates: []string{"{host}.agents.example.com", "{host}.agents.example.com"}}
	iss, err := a.IssueAgent(context.Background(), csr, uid, p, map[string]string{"host": "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Leaf.DNSNames) == 0 || iss.Leaf.DNSNames[0] != "web-1.agents.example.com" {
		t.Fatalf("DNS names %v", iss.Leaf.DNSNames)
	}
}

// A server-made key goes through the same template and check.
func TestServerMadeKeyCertificateIsProfileOnly(t *testing.T) {
	a := newCA(t)
	uid := uuid.Must(uuid.NewV7())
	iss, _, err := a.IssueAgentServerKey(context.Background(), uid, Profile{ServerMadeKeys: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := catest.ProfileOnly(iss.Leaf, catest.Want{UID: uid, TrustDomain: "example.test"}); err != nil {
		t.Fatal(err)
	}
}

// The embedded issuer's chain rule (its signature was checked when it was
// made): a leaf naming another issuer, or the intermediate's name with
// another key id, or an intermediate not valid now, is rejected.
func TestIssuedCheckSignedByIntermediate(t *testing.T) {
	a := newCA(t)
	inter := a.Intermediate()
	uid := uuid.Must(uuid.NewV7())
	csr, err := ParseCSR(csrPEM(t, p256(t), &x509.CertificateRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.IssueAgent(context.Background(), csr, uid, Profile{Lifetime: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSignedBy(iss.Leaf, inter, t0); err != nil {
		t.Fatalf("a certificate of the intermediate: %v", err)
	}
	f := newFakeIssuer(t)
	if err := checkSignedBy(iss.Leaf, f.root, t0); err == nil || !strings.Contains(err.Error(), "issuer") {
		t.Fatalf("against another issuer: %v, want its issuer named", err)
	}
	other := *iss.Leaf
	other.AuthorityKeyId = []byte{1, 2, 3}
	if err := checkSignedBy(&other, inter, t0); err == nil || !strings.Contains(err.Error(), "key id") {
		t.Fatalf("another authority key id: %v", err)
	}
	if err := checkSignedBy(iss.Leaf, inter, inter.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("an expired intermediate: %v", err)
	}
}
