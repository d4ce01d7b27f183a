package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// ErrCSRRefused means a certificate request was refused; the wrapped message
// says why, in words the agent's operator can act on. OpAMP turns it into a
// BadRequest ServerErrorResponse.
var ErrCSRRefused = errors.New("certificate request refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCSRRefused}, args...)...)
}

// maxCSRBytes bounds what is parsed: a real CSR is well under 4 KiB.
const maxCSRBytes = 16 << 10

// ParseCSR decodes one PEM CERTIFICATE REQUEST. Its signature (proof of
// possession) is checked when it is signed: IssueAgent refuses a CSR whose
// signature does not verify, so the check costs one verification, not two.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	if len(pemBytes) > maxCSRBytes {
		return nil, refuse("CSR is %d bytes, more than the %d allowed", len(pemBytes), maxCSRBytes)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, refuse("CSR is not PEM")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, refuse("PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, refuse("CSR does not parse: %v", err)
	}
	return csr, nil
}

// CheckAgentCSR enforces what an agent may ask for: an allowed key, and no
// identity or authority other than its own. The certificate is built by the
// server from the profile regardless, and only the CSR's public key reaches
// it (see IssueAgent); this check refuses requests that ask for more, so a
// confused or malicious agent learns it cannot have them (and a refusal is a
// csr_refused event auto_revoke policies can act on).
//
// Refused: a CN other than the agent's uid; any SAN other than the agent's
// own SPIFFE URI (DNS, IP, email, otherName, directoryName, registeredID...);
// basic constraints CA:TRUE; key usage keyCertSign or cRLSign; an extended
// key usage other than clientAuth (serverAuth, codeSigning, OCSPSigning,
// any...); name constraints; any critical extension trustamp does not
// understand. Ignored (never copied): other subject attributes (O, OU,
// C...), other key usage bits (the certificate gets digitalSignature only),
// and other non-critical extension requests (AIA, CRL distribution points,
// OCSP no-check, policies, unknown ones).
func CheckAgentCSR(csr *x509.CertificateRequest, uid uuid.UUID, trustDomain string, p Profile) error {
	if err := p.WithDefaults().checkKey(csr.PublicKey); err != nil {
		return err
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != uid.String() {
		return refuse("subject CN %q is not this agent's uid %s", cn, uid)
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return refuse("DNS, IP and email SANs are not allowed in agent certificates")
	}
	want := SPIFFEID(trustDomain, uid).String()
	for _, u := range csr.URIs {
		if u.String() != want {
			return refuse("URI SAN %q is not this agent's identity %s", u, want)
		}
	}
	for _, e := range csr.Extensions {
		if err := checkCSRExtension(e); err != nil {
			return err
		}
	}
	return nil
}

// checkCSRExtension refuses one extension request that asks for an identity
// or an authority an agent cannot have; see CheckAgentCSR.
func checkCSRExtension(e pkix.Extension) error {
	switch {
	case e.Id.Equal(oidSubjectAltName):
		names, err := parseGeneralNames(e.Value)
		if err != nil {
			return refuse("subject alternative name request: %v", err)
		}
		for _, n := range names {
			if n.tag != gnURI {
				return refuse("SAN of type %s is not allowed in agent certificates (only the agent's SPIFFE URI)", generalNameKinds[n.tag])
			}
		}
	case e.Id.Equal(oidBasicConstraints):
		var bc basicConstraints
		if rest, err := asn1.Unmarshal(e.Value, &bc); err != nil || len(rest) > 0 {
			return refuse("basic constraints request does not parse")
		}
		if bc.IsCA {
			return refuse("basic constraints CA:TRUE requested: an agent certificate is never a CA")
		}
	case e.Id.Equal(oidKeyUsage):
		bits, err := parseKeyUsageBits(e.Value)
		if err != nil {
			return refuse("key usage request: %v", err)
		}
		var bad []string
		for _, b := range bits {
			if b == "keyCertSign" || b == "cRLSign" {
				bad = append(bad, b)
			}
		}
		if len(bad) > 0 {
			return refuse("key usage %s requested: an agent certificate never signs certificates or CRLs", joinNames(bad))
		}
	case e.Id.Equal(oidExtKeyUsage):
		oids, err := parseEKU(e.Value)
		if err != nil {
			return refuse("extended key usage request: %v", err)
		}
		for _, o := range oids {
			if !o.Equal(oidEKUClientAuth) {
				return refuse("extended key usage %s requested: agent certificates are for client authentication only", ekuName(o))
			}
		}
	case e.Id.Equal(oidNameConstraints):
		return refuse("name constraints requested: an agent certificate is never a CA")
	case e.Critical && !e.Id.Equal(oidSubjectKeyID):
		return refuse("critical extension %s is not understood", extName(e.Id))
	}
	return nil
}
