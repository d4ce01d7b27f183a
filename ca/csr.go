package ca

import (
	"crypto/x509"
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
// identity other than its own. The certificate's subject and SANs are set by
// the server regardless; this check refuses requests that ask for more, so a
// confused or malicious agent learns it cannot have them.
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
	return nil
}
