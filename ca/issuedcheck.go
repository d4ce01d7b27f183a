package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// ErrIssuedCertRejected means an issuer (trustamp's own CA included)
// produced a certificate that is not exactly what trustamp decided: it was
// not recorded and not sent. Retrying does not help; the issuer's
// configuration does (the wrapped error names the rule).
var ErrIssuedCertRejected = errors.New("ca: issued certificate rejected")

// BaseExtensions is the extension allowlist every agent certificate is held
// to: subject and authority key identifiers, key usage, extended key usage,
// basic constraints, subject alternative name, CRL distribution points and
// authority information access. An extension outside it (plus the issuer's
// own, see ExtensionAllower) makes the certificate rejected.
var BaseExtensions = []asn1.ObjectIdentifier{oidSubjectKeyID, oidAuthorityKeyID, oidKeyUsage, oidExtKeyUsage,
	oidBasicConstraints, oidSubjectAltName, oidCRLDistribution, oidAuthorityInfo}

// ExtensionAllower is implemented by an external issuer whose certificates
// carry extensions beyond BaseExtensions by design: step-ca adds its
// provisioner extension (1.3.6.1.4.1.37476.9000.64.1). Nothing else widens
// the list.
type ExtensionAllower interface {
	AllowedExtensions() []asn1.ObjectIdentifier
}

// issuedRules is what one issuer's certificates may carry beyond trustamp's
// identity.
type issuedRules struct {
	issuer string
	// extensions allowed: BaseExtensions and the issuer's own.
	extensions []asn1.ObjectIdentifier
	// pinnedURLs: the CRL distribution point and the OCSP responder must be
	// exactly crlURL and ocspURL (the extension absent where "") and no CA
	// issuers URL: trustamp's own CA writes them itself. External issuers
	// write their own revocation endpoints, which are checked for form only.
	pinnedURLs      bool
	crlURL, ocspURL string
	roots           *x509.CertPool
	intermediates   *x509.CertPool
	// signedBy, when set, is the in-process issuer's certificate (the
	// embedded CA's current intermediate). Its signature on the leaf was
	// verified when the leaf was made (crypto/x509.CreateCertificate refuses a
	// key that is not the parent's and checks the signature it produced), and
	// the intermediate was checked against the root when it was loaded, so
	// the chain rule is the issuer's name, key id and validity: verifying the
	// same ECDSA signature again (and the intermediate's) cost ~110 µs per
	// certificate for nothing. External issuers always get the full chain
	// verification to their pinned roots.
	signedBy *x509.Certificate
}

// issuedWant is what trustamp asked the issuer for.
type issuedWant struct {
	pub      crypto.PublicKey
	uid      uuid.UUID
	spiffe   string
	dns      []string
	lifetime time.Duration
	backdate time.Duration
	now      time.Time
}

// issueSlack absorbs clock differences with external issuers.
const issueSlack = 2 * time.Minute

// checkIssued is the one check every agent certificate passes, from every
// issuer, before it is recorded or offered: the CSR's key; subject exactly
// CN=<uid>; exactly the SPIFFE URI SAN and the profile's DNS names, no other
// SAN of any kind; key usage digitalSignature only; extended key usage
// clientAuth only; not a CA; no extension outside the allowlist and no
// critical extension not understood; validity within the profile's lifetime;
// a chain to the pinned roots (for the embedded issuer: issued by its
// current intermediate, see issuedRules.signedBy).
func checkIssued(chain []*x509.Certificate, w issuedWant, r issuedRules) error {
	if len(chain) == 0 || slices.Contains(chain, nil) {
		return errors.New("no certificate")
	}
	leaf := chain[0]
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(w.pub) {
		return errors.New("its key is not the CSR's")
	}
	if err := checkSubject(leaf, w.uid); err != nil {
		return err
	}
	if n := leaf.SerialNumber; n == nil || n.Sign() <= 0 || len(n.Bytes()) > 20 {
		return errors.New("its serial number is not a positive integer of at most 20 octets")
	}
	if err := checkExtensions(leaf, w, r); err != nil {
		return err
	}
	if err := checkValidity(leaf, w); err != nil {
		return err
	}
	if r.signedBy != nil {
		return checkSignedBy(leaf, r.signedBy, w.now)
	}
	inters := r.intermediates
	if inters == nil {
		inters = x509.NewCertPool()
	} else {
		inters = inters.Clone()
	}
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if r.roots == nil {
		return errors.New("no trust anchor configured for this issuer")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.roots, Intermediates: inters, CurrentTime: w.now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("it does not chain to the issuer's pinned root: %w", err)
	}
	return nil
}

// checkSignedBy checks that leaf names parent as its issuer (subject and key
// id) and that parent is valid now; see issuedRules.signedBy.
func checkSignedBy(leaf, parent *x509.Certificate, now time.Time) error {
	if !bytes.Equal(leaf.RawIssuer, parent.RawSubject) {
		return fmt.Errorf("its issuer %q is not the intermediate %q", leaf.Issuer, parent.Subject)
	}
	if len(parent.SubjectKeyId) > 0 && !bytes.Equal(leaf.AuthorityKeyId, parent.SubjectKeyId) {
		return errors.New("its authority key id is not the intermediate's")
	}
	if now.Before(parent.NotBefore) || now.After(parent.NotAfter) {
		return fmt.Errorf("the intermediate that signed it is not valid at %s", now.Format(time.RFC3339))
	}
	return nil
}

// checkSubject requires a subject of exactly one attribute, CN=<uid>.
func checkSubject(leaf *x509.Certificate, uid uuid.UUID) error {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(leaf.RawSubject, &rdns); err != nil || len(rest) > 0 {
		return errors.New("its subject does not parse")
	}
	if len(rdns) != 1 || len(rdns[0]) != 1 || !rdns[0][0].Type.Equal(oidAttrCommonName) {
		return fmt.Errorf("subject %q, want exactly CN=%s and no other attribute", leaf.Subject.String(), uid)
	}
	if cn, ok := rdns[0][0].Value.(string); !ok || cn != uid.String() {
		return fmt.Errorf("subject CN %q, want %q", leaf.Subject.CommonName, uid)
	}
	return nil
}

// checkExtensions walks every extension: the allowlist, criticality, and
// the content of those trustamp decides.
func checkExtensions(leaf *x509.Certificate, w issuedWant, r issuedRules) error {
	if len(leaf.UnhandledCriticalExtensions) > 0 {
		return fmt.Errorf("it has critical extension %s, which is not understood", extName(leaf.UnhandledCriticalExtensions[0]))
	}
	seen := map[string]bool{}
	for _, e := range leaf.Extensions {
		if seen[e.Id.String()] {
			return fmt.Errorf("extension %s appears twice", extName(e.Id))
		}
		seen[e.Id.String()] = true
		if !slices.ContainsFunc(r.extensions, e.Id.Equal) {
			return fmt.Errorf("extension %s is outside the profile's list", extName(e.Id))
		}
		if e.Critical && !slices.ContainsFunc([]asn1.ObjectIdentifier{oidKeyUsage, oidExtKeyUsage, oidBasicConstraints, oidSubjectAltName}, e.Id.Equal) {
			return fmt.Errorf("extension %s is marked critical", extName(e.Id))
		}
		var err error
		switch {
		case e.Id.Equal(oidSubjectAltName):
			err = checkSAN(e.Value, w)
		case e.Id.Equal(oidCRLDistribution):
			err = checkCDP(e.Value, r)
		case e.Id.Equal(oidAuthorityInfo):
			err = checkAIA(e.Value, r)
		}
		if err != nil {
			return err
		}
	}
	if !seen[oidSubjectAltName.String()] {
		return errors.New("it has no subject alternative name")
	}
	if r.pinnedURLs {
		if (r.crlURL != "") != seen[oidCRLDistribution.String()] {
			return fmt.Errorf("CRL distribution points %v, want exactly %q", leaf.CRLDistributionPoints, r.crlURL)
		}
		if (r.ocspURL != "") != seen[oidAuthorityInfo.String()] {
			return fmt.Errorf("OCSP responders %v, want exactly %q", leaf.OCSPServer, r.ocspURL)
		}
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		var names []string
		if e := findExt(leaf, oidKeyUsage); e != nil {
			names, _ = parseKeyUsageBits(e.Value)
		}
		return fmt.Errorf("key usage [%s], want digitalSignature only", joinNames(names))
	}
	if e := findExt(leaf, oidExtKeyUsage); e == nil {
		return errors.New("it has no extended key usage (want clientAuth)")
	} else if oids, err := parseEKU(e.Value); err != nil {
		return err
	} else if len(oids) != 1 || !oids[0].Equal(oidEKUClientAuth) {
		names := make([]string, len(oids))
		for i, o := range oids {
			names[i] = ekuName(o)
		}
		return fmt.Errorf("extended key usage [%s], want clientAuth only", joinNames(names))
	}
	if leaf.IsCA {
		return errors.New("it is a CA certificate (basic constraints CA:TRUE)")
	}
	return nil
}

func findExt(c *x509.Certificate, oid asn1.ObjectIdentifier) *pkix.Extension {
	for i := range c.Extensions {
		if c.Extensions[i].Id.Equal(oid) {
			return &c.Extensions[i]
		}
	}
	return nil
}

// checkSAN requires exactly the SPIFFE URI and the set of asked DNS names,
// and no GeneralName of any other kind.
func checkSAN(der []byte, w issuedWant) error {
	names, err := parseGeneralNames(der)
	if err != nil {
		return fmt.Errorf("subject alternative name: %w", err)
	}
	var uris, dns []string
	for _, n := range names {
		switch n.tag {
		case gnURI:
			uris = append(uris, string(n.value))
		case gnDNS:
			dns = append(dns, string(n.value))
		default:
			return fmt.Errorf("it carries a SAN of type %s", generalNameKinds[n.tag])
		}
	}
	if len(uris) != 1 || uris[0] != w.spiffe {
		return fmt.Errorf("URI SANs %q, want exactly %s", uris, w.spiffe)
	}
	want := slices.Clone(w.dns)
	slices.Sort(want)
	want = slices.Compact(want)
	slices.Sort(dns)
	dns = slices.Compact(dns)
	if !slices.Equal(dns, want) {
		return fmt.Errorf("DNS SANs %q, want %q (the profile's SAN templates)", dns, want)
	}
	return nil
}

// distributionPoint is RFC 5280's DistributionPoint.
type distributionPoint struct {
	Name      asn1.RawValue  `asn1:"optional,tag:0"`
	Reasons   asn1.BitString `asn1:"optional,tag:1"`
	CRLIssuer asn1.RawValue  `asn1:"optional,tag:2"`
}

// checkCDP requires distribution points that are full names of URIs only
// (no reasons, no CRL issuer: a CRL of someone else's choosing), and for
// trustamp's own CA exactly the configured CRL URL.
func checkCDP(der []byte, r issuedRules) error {
	var dps []distributionPoint
	if rest, err := asn1.Unmarshal(der, &dps); err != nil || len(rest) > 0 || !remarshals(dps, der) {
		return errors.New("CRL distribution points do not parse")
	}
	var urls []string
	for _, dp := range dps {
		if dp.Reasons.BitLength > 0 || len(dp.CRLIssuer.FullBytes) > 0 {
			return errors.New("a CRL distribution point names reasons or a CRL issuer")
		}
		// DistributionPointName: fullName [0] GeneralNames (implicitly tagged).
		var full asn1.RawValue
		if rest, err := asn1.Unmarshal(dp.Name.Bytes, &full); err != nil || len(rest) > 0 || full.Class != asn1.ClassContextSpecific || full.Tag != 0 {
			return errors.New("a CRL distribution point is not a full name")
		}
		names, err := parseGeneralNameList(full.Bytes)
		if err != nil {
			return fmt.Errorf("CRL distribution point: %w", err)
		}
		for _, n := range names {
			if n.tag != gnURI {
				return fmt.Errorf("a CRL distribution point is a %s, not a URI", generalNameKinds[n.tag])
			}
			urls = append(urls, string(n.value))
		}
	}
	if r.pinnedURLs && (len(urls) != 1 || urls[0] != r.crlURL) {
		return fmt.Errorf("CRL distribution points %q, want exactly %q", urls, r.crlURL)
	}
	return nil
}

// remarshals reports whether v encodes back to exactly der: Go's decoder
// skips elements a struct does not name (a CRL issuer under another tag,
// a third field), so what it did not read is caught here.
func remarshals(v any, der []byte) bool {
	b, err := asn1.Marshal(v)
	return err == nil && bytes.Equal(b, der)
}

// accessDescription is RFC 5280's AccessDescription.
type accessDescription struct {
	Method   asn1.ObjectIdentifier
	Location asn1.RawValue
}

// checkAIA requires OCSP and CA-issuers URIs only, and for trustamp's own
// CA exactly the configured OCSP URL and nothing else.
func checkAIA(der []byte, r issuedRules) error {
	var ads []accessDescription
	if rest, err := asn1.Unmarshal(der, &ads); err != nil || len(rest) > 0 || !remarshals(ads, der) {
		return errors.New("authority information access does not parse")
	}
	var ocsp []string
	for _, ad := range ads {
		if ad.Location.Class != asn1.ClassContextSpecific || ad.Location.Tag != gnURI {
			return errors.New("an authority information access location is not a URI")
		}
		switch {
		case ad.Method.Equal(oidAccessOCSP):
			ocsp = append(ocsp, string(ad.Location.Bytes))
		case ad.Method.Equal(oidAccessCAIssuers):
			if r.pinnedURLs {
				return errors.New("it names a CA issuers URL trustamp did not set")
			}
		default:
			return fmt.Errorf("authority information access method %s is not OCSP or CA issuers", ad.Method)
		}
	}
	if r.pinnedURLs && (len(ocsp) != 1 || ocsp[0] != r.ocspURL) {
		return fmt.Errorf("OCSP responders %q, want exactly %q", ocsp, r.ocspURL)
	}
	return nil
}

// checkValidity requires a certificate valid now, not backdated beyond the
// profile, and living no longer than the profile's lifetime.
func checkValidity(leaf *x509.Certificate, w issuedWant) error {
	switch {
	case !leaf.NotAfter.After(w.now):
		return errors.New("it is already expired")
	case leaf.NotAfter.After(w.now.Add(w.lifetime + issueSlack)):
		return fmt.Errorf("it lives until %s, longer than the profile's %s", leaf.NotAfter.Format(time.RFC3339), w.lifetime)
	case leaf.NotBefore.After(w.now.Add(issueSlack)):
		return fmt.Errorf("it is not valid before %s, in the future", leaf.NotBefore.Format(time.RFC3339))
	case leaf.NotBefore.Before(w.now.Add(-w.backdate - issueSlack)):
		return fmt.Errorf("it is valid from %s, backdated more than the profile's %s", leaf.NotBefore.Format(time.RFC3339), w.backdate)
	}
	return nil
}
