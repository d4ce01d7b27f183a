// Package ca is trustamp's certificate authority: the root and intermediate
// made at init, issuance of agent client certificates through smallstep's
// embedded authority, the server's own TLS certificate, and the rules that
// bind a certificate to an agent identity. It knows nothing about OpAMP or
// WebSockets; callers hand it CSRs and uids.
package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"

	"github.com/google/uuid"
)

// ErrNotAgentCert means a certificate does not carry a well-formed agent
// identity for this trust domain.
var ErrNotAgentCert = errors.New("ca: not an agent certificate")

// SPIFFEID is an agent's URI SAN: spiffe://<trust domain>/agent/<uid>.
func SPIFFEID(trustDomain string, uid uuid.UUID) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/agent/" + uid.String()}
}

// AgentID returns the agent uid a certificate speaks for. The CN and the one
// URI SAN must name the same uid in trustDomain, and the certificate must be
// for client authentication; anything else is ErrNotAgentCert.
func AgentID(cert *x509.Certificate, trustDomain string) (uuid.UUID, error) {
	uid, err := uuid.Parse(cert.Subject.CommonName)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: CN %q is not a uid", ErrNotAgentCert, cert.Subject.CommonName)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != SPIFFEID(trustDomain, uid).String() {
		return uuid.Nil, fmt.Errorf("%w: URI SAN does not match CN %s in trust domain %s", ErrNotAgentCert, uid, trustDomain)
	}
	clientAuth := false
	for _, u := range cert.ExtKeyUsage {
		clientAuth = clientAuth || u == x509.ExtKeyUsageClientAuth
	}
	if !clientAuth {
		return uuid.Nil, fmt.Errorf("%w: no clientAuth extended key usage", ErrNotAgentCert)
	}
	return uid, nil
}
