// Package catest holds what the tests of ca and of its callers share about
// hostile certificate requests: one CSR per extension kind and subject
// attribute an attacker would ask for, what trustamp must do with each
// (refuse it, or issue a certificate without it), and an inspector of agent
// certificates written independently of ca's own post-issuance check, so a
// test does not trust the code it tests.
package catest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/google/uuid"
)

// Marker is in every hostile value a CSR asks for (URLs, names): a
// certificate that contains it anywhere carries something of the request.
const Marker = "evil"

// Case is one hostile CSR.
type Case struct {
	// Name says what the CSR asks for.
	Name string
	// Refused: the CSR must be refused (BadRequest naming Reason); else it is
	// signed and the certificate must not carry what it asked for.
	Refused bool
	Reason  string
	// OID of the extension requested, if any: the certificate must not
	// carry it (the SAN, requested with another kind of name, is excepted).
	OID asn1.ObjectIdentifier
	// Template is the request, without key.
	Template func(uid uuid.UUID, spiffe string) *x509.CertificateRequest
}

// OIDs used below.
var (
	oidSAN       = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBC        = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKU        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidEKU       = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidNC        = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidCDP       = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidPolicies  = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidAIA       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidNoCheck   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	oidOCSP      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}
	oidCAIssuers = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 2}
	oidSKI       = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAKI       = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidUnknown   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	oidUPN       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}

	ekuClient = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	ekuServer = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	ekuCode   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}
	ekuOCSP   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 9}
	ekuAny    = asn1.ObjectIdentifier{2, 5, 29, 37, 0}
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// ctx wraps der in a context-specific tag.
func ctx(tag int, compound bool, content []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: compound, Bytes: content}
}

// sanExt is a SubjectAltName with the agent's own URI and extra names.
func sanExt(spiffe string, extra ...asn1.RawValue) pkix.Extension {
	names := append([]asn1.RawValue{ctx(6, false, []byte(spiffe))}, extra...)
	return pkix.Extension{Id: oidSAN, Value: mustMarshal(names)}
}

func keyUsage(bits ...int) []byte {
	n := slices.Max(bits) + 1
	b := make([]byte, (n+7)/8)
	for _, i := range bits {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return mustMarshal(asn1.BitString{Bytes: b, BitLength: n})
}

func ext(oid asn1.ObjectIdentifier, critical bool, value []byte) func(uuid.UUID, string) *x509.CertificateRequest {
	return func(uuid.UUID, string) *x509.CertificateRequest {
		return &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oid, Critical: critical, Value: value}}}
	}
}

var asn1Null = []byte{0x05, 0x00}

// Cases are the hostile CSRs of issue 14, one per extension kind and
// subject attribute.
func Cases() []Case {
	type ad struct {
		Method   asn1.ObjectIdentifier
		Location asn1.RawValue
	}
	aia := mustMarshal([]ad{{oidOCSP, ctx(6, false, []byte("http://"+Marker+".example/ocsp"))},
		{oidCAIssuers, ctx(6, false, []byte("http://"+Marker+".example/ca.crt"))}})
	type dpName struct {
		FullName []asn1.RawValue `asn1:"optional,tag:0"`
	}
	type dp struct {
		Name dpName `asn1:"optional,tag:0"`
	}
	cdp := mustMarshal([]dp{{Name: dpName{FullName: []asn1.RawValue{ctx(6, false, []byte("http://"+Marker+".example/crl"))}}}})
	upnValue := mustMarshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
		Bytes: mustMarshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("admin@" + Marker + ".example")})})
	otherName := ctx(0, true, append(mustMarshal(oidUPN), upnValue...))
	dirName := ctx(4, true, mustMarshal(pkix.Name{CommonName: Marker + "-admin"}.ToRDNSequence()))
	regID := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: mustMarshal(oidUnknown)[2:]}
	nc := mustMarshal(struct {
		Permitted []struct {
			Base asn1.RawValue
		} `asn1:"optional,tag:0"`
	}{Permitted: []struct{ Base asn1.RawValue }{{ctx(2, false, []byte(Marker+".example"))}}})
	subject := func(n pkix.Name) func(uuid.UUID, string) *x509.CertificateRequest {
		return func(uid uuid.UUID, _ string) *x509.CertificateRequest {
			n.CommonName = uid.String()
			return &x509.CertificateRequest{Subject: n}
		}
	}
	san := func(extra ...asn1.RawValue) func(uuid.UUID, string) *x509.CertificateRequest {
		return func(_ uuid.UUID, spiffe string) *x509.CertificateRequest {
			return &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{sanExt(spiffe, extra...)}}
		}
	}
	return []Case{
		{Name: "basic constraints CA:TRUE", Refused: true, Reason: "CA:TRUE", OID: oidBC,
			Template: ext(oidBC, true, mustMarshal(struct{ IsCA bool }{true}))},
		{Name: "key usage certSign", Refused: true, Reason: "keyCertSign", OID: oidKU, Template: ext(oidKU, true, keyUsage(0, 5))},
		{Name: "key usage cRLSign", Refused: true, Reason: "cRLSign", OID: oidKU, Template: ext(oidKU, true, keyUsage(0, 6))},
		{Name: "key usage nonRepudiation and keyEncipherment (openssl's v3_req)", Template: ext(oidKU, false, keyUsage(0, 1, 2))},
		{Name: "EKU serverAuth", Refused: true, Reason: "serverAuth", OID: oidEKU, Template: ext(oidEKU, false, mustMarshal([]asn1.ObjectIdentifier{ekuClient, ekuServer}))},
		{Name: "EKU codeSigning", Refused: true, Reason: "codeSigning", OID: oidEKU, Template: ext(oidEKU, false, mustMarshal([]asn1.ObjectIdentifier{ekuCode}))},
		{Name: "EKU OCSPSigning", Refused: true, Reason: "OCSPSigning", OID: oidEKU, Template: ext(oidEKU, false, mustMarshal([]asn1.ObjectIdentifier{ekuClient, ekuOCSP}))},
		{Name: "EKU any", Refused: true, Reason: "anyExtendedKeyUsage", OID: oidEKU, Template: ext(oidEKU, false, mustMarshal([]asn1.ObjectIdentifier{ekuAny}))},
		{Name: "OCSP no-check", OID: oidNoCheck, Template: ext(oidNoCheck, false, asn1Null)},
		{Name: "AIA of the requester's choice", OID: oidAIA, Template: ext(oidAIA, false, aia)},
		{Name: "CRL distribution point of the requester's choice", OID: oidCDP, Template: ext(oidCDP, false, cdp)},
		{Name: "SAN otherName (UPN)", Refused: true, Reason: "otherName", Template: san(otherName)},
		{Name: "SAN directoryName", Refused: true, Reason: "directoryName", Template: san(dirName)},
		{Name: "SAN registeredID", Refused: true, Reason: "registeredID", Template: san(regID)},
		{Name: "name constraints", Refused: true, Reason: "name constraints", OID: oidNC, Template: ext(oidNC, true, nc)},
		{Name: "unknown critical extension", Refused: true, Reason: "critical extension 1.3.6.1.4.1.99999.1", OID: oidUnknown, Template: ext(oidUnknown, true, asn1Null)},
		{Name: "unknown non-critical extension", OID: oidUnknown, Template: ext(oidUnknown, false, asn1Null)},
		{Name: "certificate policies", OID: oidPolicies, Template: ext(oidPolicies, false, mustMarshal([]struct{ ID asn1.ObjectIdentifier }{{asn1.ObjectIdentifier{2, 5, 29, 32, 0}}}))},
		{Name: "subject O", Template: subject(pkix.Name{Organization: []string{Marker + " corp"}})},
		{Name: "subject OU", Template: subject(pkix.Name{OrganizationalUnit: []string{Marker + " unit"}})},
		{Name: "subject C", Template: subject(pkix.Name{Country: []string{"EV"}})},
		{Name: "key usage and EKU that are granted anyway", Template: func(uuid.UUID, string) *x509.CertificateRequest {
			return &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
				{Id: oidKU, Critical: true, Value: keyUsage(0, 2)},
				{Id: oidEKU, Value: mustMarshal([]asn1.ObjectIdentifier{ekuClient})},
				{Id: oidBC, Critical: true, Value: mustMarshal(struct{}{})},
			}}
		}},
	}
}

// CSR signs c's template for uid with key, PEM-encoded.
func CSR(c Case, key crypto.Signer, uid uuid.UUID, trustDomain string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, c.Template(uid, SPIFFE(trustDomain, uid)), key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SPIFFE is an agent's URI SAN.
func SPIFFE(trustDomain string, uid uuid.UUID) string {
	return (&url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/agent/" + uid.String()}).String()
}

// Want is what an agent certificate from trustamp's own CA must be.
type Want struct {
	UID         uuid.UUID
	TrustDomain string
	// CRLURL and OCSPURL are the server's; "" means the extension is absent.
	CRLURL, OCSPURL string
}

// ProfileOnly reports anything in leaf that trustamp's profile does not
// put there: a subject other than CN=<uid>, a name other than the SPIFFE
// URI, a usage other than digitalSignature/clientAuth, a CA flag, an
// extension outside SKI, AKI, KU, EKU, BC, SAN, CDP, AIA, revocation URLs
// other than the server's, or the Marker in any extension.
func ProfileOnly(leaf *x509.Certificate, w Want) error {
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(leaf.RawSubject, &rdns); err != nil {
		return err
	}
	if len(rdns) != 1 || len(rdns[0]) != 1 || leaf.Subject.CommonName != w.UID.String() {
		return fmt.Errorf("subject %s, want CN=%s only", leaf.Subject, w.UID)
	}
	allowed := []asn1.ObjectIdentifier{oidSKI, oidAKI, oidKU, oidEKU, oidBC, oidSAN, oidCDP, oidAIA}
	for _, e := range leaf.Extensions {
		if !slices.ContainsFunc(allowed, e.Id.Equal) {
			return fmt.Errorf("extension %s is not the profile's", e.Id)
		}
		if e.Id.Equal(oidSAN) {
			var names []asn1.RawValue
			if _, err := asn1.Unmarshal(e.Value, &names); err != nil {
				return err
			}
			if len(names) != 1 || names[0].Tag != 6 || string(names[0].Bytes) != SPIFFE(w.TrustDomain, w.UID) {
				return fmt.Errorf("SAN has %d names (first tag %d), want only the SPIFFE URI", len(names), names[0].Tag)
			}
		}
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		return fmt.Errorf("key usage %b, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(leaf.UnknownExtKeyUsage) > 0 {
		return fmt.Errorf("EKU %v %v, want clientAuth only", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if leaf.IsCA || len(leaf.PermittedDNSDomains) > 0 || len(leaf.ExcludedDNSDomains) > 0 {
		return errors.New("a CA or name-constrained certificate")
	}
	if !slices.Equal(leaf.CRLDistributionPoints, nonEmpty(w.CRLURL)) || !slices.Equal(leaf.OCSPServer, nonEmpty(w.OCSPURL)) ||
		len(leaf.IssuingCertificateURL) > 0 {
		return fmt.Errorf("revocation URLs CDP %v OCSP %v CA issuers %v, want the server's %q %q",
			leaf.CRLDistributionPoints, leaf.OCSPServer, leaf.IssuingCertificateURL, w.CRLURL, w.OCSPURL)
	}
	for _, e := range leaf.Extensions {
		if bytes.Contains(bytes.ToLower(e.Value), []byte(Marker)) {
			return fmt.Errorf("extension %s contains %q: something of the request reached it", e.Id, Marker)
		}
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// Lacks reports whether leaf lacks what c asked for: ProfileOnly, and the
// requested extension absent.
func Lacks(c Case, leaf *x509.Certificate, w Want) error {
	if err := ProfileOnly(leaf, w); err != nil {
		return err
	}
	if c.OID == nil {
		return nil
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(c.OID) && !slices.ContainsFunc([]asn1.ObjectIdentifier{oidKU, oidEKU, oidBC, oidCDP, oidAIA}, e.Id.Equal) {
			return fmt.Errorf("extension %s reached the certificate", e.Id)
		}
	}
	return nil
}
