package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/trustamp/trustamp/storage/state"
)

// maxOCSPRequest bounds an OCSP request, POSTed or decoded from a GET
// path; real ones are ~100 bytes (a few hundred with several certificates
// and a nonce).
const maxOCSPRequest = 8 << 10

// maxOCSPCerts bounds the certificates one OCSP request may ask about: each
// costs a lookup and a SingleResponse in the signed answer. Browsers and
// openssl ask about one; a request naming more gets malformedRequest.
const maxOCSPCerts = 16

// maxOCSPNonce is RFC 8954's bound on a nonce (1..32 octets); a request with
// a longer (or empty) nonce gets malformedRequest.
const maxOCSPNonce = 32

// maxSerialOctets is RFC 5280's bound on a certificate serial number.
const maxSerialOctets = 20

// oidOCSPNonce is id-pkix-ocsp-nonce (RFC 6960 4.4.1).
var oidOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}

// ServeOCSP is an RFC 6960 responder: GET /v1/ocsp/<base64 request> and POST
// /v1/ocsp with an application/ocsp-request body. Every certificate the
// request names (at most maxOCSPCerts) gets its own SingleResponse, in the
// request's order and with the request's CertID: good for a certificate
// issued here and not revoked, revoked (with time and reason) for one in
// force in the revocation set or the store, and unknown for a serial never
// issued. A nonce (RFC 8954, 1..32 octets) is echoed in the response's
// extensions. Responses are signed by the delegated OCSP signer.
//
// Requests about another issuer only get "unauthorized", as the RFC asks; in
// a request that also names certificates of this issuer, the other issuer's
// certificates are answered unknown. A request with no certificate, more
// than maxOCSPCerts, an unknown CertID hash, a nonce outside 1..32 octets, two
// nonces, or an unrecognised critical extension gets malformedRequest.
func (s *Service) ServeOCSP(w http.ResponseWriter, r *http.Request) {
	raw, err := ocspRequestBytes(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := parseOCSPRequest(raw)
	if err != nil {
		writeOCSP(w, ocspError(ocsp.Malformed), 0)
		return
	}
	ctx := r.Context()
	issuer, signerCert, key, err := s.cfg.CA.OCSPSigner(ctx)
	if err != nil {
		s.log.Error("OCSP signer", "err", err)
		writeOCSP(w, ocspError(ocsp.InternalError), 0)
		return
	}
	ours := make([]bool, len(req.certs))
	anyOurs := false
	for i, c := range req.certs {
		ours[i] = issuedBy(c, issuer)
		anyOurs = anyOurs || ours[i]
	}
	if !anyOurs {
		writeOCSP(w, ocspError(ocsp.Unauthorized), 0)
		return
	}
	now := s.cfg.Clock().UTC().Truncate(time.Second)
	answers := make([]ocspSingleResponse, len(req.certs))
	for i, c := range req.certs {
		a := &answers[i]
		a.CertID = asn1.RawValue{FullBytes: c.raw}
		a.ThisUpdate, a.NextUpdate = now, now.Add(s.cfg.OCSPValidity)
		if !ours[i] {
			a.Unknown = true
			continue
		}
		if err := s.certStatus(ctx, c.serial, a); err != nil {
			s.log.Error("OCSP lookup", "serial", c.serial, "err", err)
			writeOCSP(w, ocspError(ocsp.TryLater), 0)
			return
		}
	}
	var exts []pkix.Extension
	if req.nonce != nil {
		exts = append(exts, *req.nonce)
	}
	der, err := signOCSP(signerCert, key, now, answers, exts)
	if err != nil {
		s.log.Error("OCSP sign", "err", err)
		writeOCSP(w, ocspError(ocsp.InternalError), 0)
		return
	}
	writeOCSP(w, der, s.cfg.OCSPValidity)
}

// certStatus sets a's status for the certificate with store serial (""
// for one no certificate of this CA can carry).
func (s *Service) certStatus(ctx context.Context, serial string, a *ocspSingleResponse) error {
	if serial == "" {
		// Not a serial this CA could have issued (zero, negative or over
		// 20 octets): no lookup, and never the status of the positive
		// serial with the same magnitude.
		a.Unknown = true
		return nil
	}
	if e, ok := s.set.lookup(serial); ok {
		a.Revoked = ocspRevokedInfo{RevocationTime: e.revokedAt.UTC(), Reason: asn1.Enumerated(mustCode(e.reason))}
		return nil
	}
	var (
		cert state.Certificate
		rev  state.Revocation
	)
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		if cert, err = tx.CertificateBySerial(ctx, serial); err != nil || cert.Status != state.CertRevoked {
			return err
		}
		rev, err = tx.RevocationInForce(ctx, serial)
		return err
	})
	switch {
	case errors.Is(err, state.ErrNotFound) && cert.Serial == "":
		a.Unknown = true
	case err != nil:
		return err
	case cert.Status == state.CertRevoked:
		// Revoked on another replica and not synced here yet.
		a.Revoked = ocspRevokedInfo{RevocationTime: rev.RevokedAt.UTC(), Reason: asn1.Enumerated(mustCode(rev.Reason))}
	default:
		a.Good = true
	}
	return nil
}

// The request's ASN.1 (RFC 6960 4.1.1). x/crypto/ocsp's ParseRequest keeps
// only the first certificate and drops the extensions, hence our own.
type (
	ocspRequestASN1 struct {
		TBSRequest        ocspTBSRequest
		OptionalSignature asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
	ocspTBSRequest struct {
		Version           int           `asn1:"explicit,tag:0,default:0,optional"`
		RequestorName     asn1.RawValue `asn1:"explicit,tag:1,optional"`
		RequestList       []ocspOneRequest
		RequestExtensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
	}
	ocspOneRequest struct {
		Cert             ocspCertID
		SingleExtensions []pkix.Extension `asn1:"explicit,tag:0,optional"`
	}
	ocspCertID struct {
		Raw           asn1.RawContent
		HashAlgorithm pkix.AlgorithmIdentifier
		NameHash      []byte
		IssuerKeyHash []byte
		SerialNumber  *big.Int
	}
)

// ocspCert is one certificate an OCSP request asks about.
type ocspCert struct {
	raw          []byte // the CertID's DER, echoed in the answer
	hash         crypto.Hash
	nameHash     []byte
	keyHash      []byte
	serialNumber *big.Int
	serial       string // as the store keys it; "" for a serial this CA cannot have issued
}

// ocspReq is a parsed OCSP request: its certificates in order, and its
// nonce extension when it has one.
type ocspReq struct {
	certs []ocspCert
	nonce *pkix.Extension
}

// parseOCSPRequest parses and bounds a DER OCSP request (see ServeOCSP for
// what it refuses).
func parseOCSPRequest(der []byte) (*ocspReq, error) {
	var r ocspRequestASN1
	rest, err := asn1.Unmarshal(der, &r)
	if err != nil {
		return nil, fmt.Errorf("revocation: OCSP request: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("revocation: OCSP request: trailing data")
	}
	list := r.TBSRequest.RequestList
	switch {
	case len(list) == 0:
		return nil, errors.New("revocation: OCSP request names no certificate")
	case len(list) > maxOCSPCerts:
		return nil, fmt.Errorf("revocation: OCSP request names %d certificates, more than %d", len(list), maxOCSPCerts)
	}
	out := &ocspReq{certs: make([]ocspCert, 0, len(list))}
	for _, one := range list {
		c := one.Cert
		h := hashFromOID(c.HashAlgorithm.Algorithm)
		if h == 0 {
			return nil, fmt.Errorf("revocation: OCSP request: CertID hash %v not supported", c.HashAlgorithm.Algorithm)
		}
		if err := noCriticalExtensions(one.SingleExtensions); err != nil {
			return nil, err
		}
		out.certs = append(out.certs, ocspCert{raw: c.Raw, hash: h, nameHash: c.NameHash, keyHash: c.IssuerKeyHash,
			serialNumber: c.SerialNumber, serial: serialHex(c.SerialNumber)})
	}
	for i, e := range r.TBSRequest.RequestExtensions {
		if !e.Id.Equal(oidOCSPNonce) {
			if err := noCriticalExtensions(r.TBSRequest.RequestExtensions[i : i+1]); err != nil {
				return nil, err
			}
			continue
		}
		if out.nonce != nil {
			return nil, errors.New("revocation: OCSP request has two nonces")
		}
		var nonce []byte
		if rest, err := asn1.Unmarshal(e.Value, &nonce); err != nil || len(rest) > 0 {
			return nil, errors.New("revocation: OCSP nonce is not an OCTET STRING")
		}
		if len(nonce) < 1 || len(nonce) > maxOCSPNonce {
			return nil, fmt.Errorf("revocation: OCSP nonce of %d octets, want 1..%d", len(nonce), maxOCSPNonce)
		}
		out.nonce = &pkix.Extension{Id: oidOCSPNonce, Value: e.Value}
	}
	return out, nil
}

func noCriticalExtensions(exts []pkix.Extension) error {
	for _, e := range exts {
		if e.Critical {
			return fmt.Errorf("revocation: OCSP request: unrecognised critical extension %v", e.Id)
		}
	}
	return nil
}

// The response's ASN.1 (RFC 6960 4.2.1), as x/crypto/ocsp writes it but
// with several SingleResponses and response extensions.
type (
	ocspResponseASN1 struct {
		Status   asn1.Enumerated
		Response ocspResponseBytes `asn1:"explicit,tag:0,optional"`
	}
	ocspResponseBytes struct {
		ResponseType asn1.ObjectIdentifier
		Response     []byte
	}
	ocspBasicResponse struct {
		TBSResponseData    asn1.RawValue
		SignatureAlgorithm pkix.AlgorithmIdentifier
		Signature          asn1.BitString
		Certificates       []asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
	ocspResponseData struct {
		Version            int `asn1:"optional,default:0,explicit,tag:0"`
		ResponderID        asn1.RawValue
		ProducedAt         time.Time `asn1:"generalized"`
		Responses          []ocspSingleResponse
		ResponseExtensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
	}
	ocspSingleResponse struct {
		CertID     asn1.RawValue
		Good       asn1.Flag       `asn1:"tag:0,optional"`
		Revoked    ocspRevokedInfo `asn1:"tag:1,optional"`
		Unknown    asn1.Flag       `asn1:"tag:2,optional"`
		ThisUpdate time.Time       `asn1:"generalized"`
		NextUpdate time.Time       `asn1:"generalized,explicit,tag:0,optional"`
	}
	ocspRevokedInfo struct {
		RevocationTime time.Time       `asn1:"generalized"`
		Reason         asn1.Enumerated `asn1:"explicit,tag:0,optional"`
	}
)

// idPKIXOCSPBasic is id-pkix-ocsp-basic.
var idPKIXOCSPBasic = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}

// ocspError is the unsigned OCSP response with an error status.
func ocspError(st ocsp.ResponseStatus) []byte {
	switch st {
	case ocsp.Malformed:
		return ocsp.MalformedRequestErrorResponse
	case ocsp.InternalError:
		return ocsp.InternalErrorErrorResponse
	case ocsp.TryLater:
		return ocsp.TryLaterErrorResponse
	default:
		return ocsp.UnauthorizedErrorResponse
	}
}

// signOCSP builds and signs a BasicOCSPResponse with every answer and exts
// as its responseExtensions, embedding the responder certificate.
func signOCSP(responder *x509.Certificate, key crypto.Signer, producedAt time.Time, answers []ocspSingleResponse, exts []pkix.Extension) ([]byte, error) {
	tbs, err := asn1.Marshal(ocspResponseData{
		ResponderID:        asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: responder.RawSubject},
		ProducedAt:         producedAt,
		Responses:          answers,
		ResponseExtensions: exts,
	})
	if err != nil {
		return nil, fmt.Errorf("revocation: OCSP response: %w", err)
	}
	h, alg, err := ocspSigningParams(key.Public())
	if err != nil {
		return nil, err
	}
	d := h.New()
	d.Write(tbs)
	sig, err := key.Sign(rand.Reader, d.Sum(nil), h)
	if err != nil {
		return nil, fmt.Errorf("revocation: OCSP sign: %w", err)
	}
	basic, err := asn1.Marshal(ocspBasicResponse{
		TBSResponseData:    asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: alg,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
		Certificates:       []asn1.RawValue{{FullBytes: responder.Raw}},
	})
	if err != nil {
		return nil, fmt.Errorf("revocation: OCSP response: %w", err)
	}
	return asn1.Marshal(ocspResponseASN1{Status: asn1.Enumerated(ocsp.Success),
		Response: ocspResponseBytes{ResponseType: idPKIXOCSPBasic, Response: basic}})
}

// ocspSigningParams is the digest and signature algorithm for the OCSP
// signer's public key (ECDSA or RSA, as x/crypto/ocsp supports).
func ocspSigningParams(pub crypto.PublicKey) (crypto.Hash, pkix.AlgorithmIdentifier, error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}, nil
		case elliptic.P384():
			return crypto.SHA384, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}}, nil
		case elliptic.P521():
			return crypto.SHA512, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}}, nil
		}
	case *rsa.PublicKey:
		return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11},
			Parameters: asn1.NullRawValue}, nil
	}
	return 0, pkix.AlgorithmIdentifier{}, fmt.Errorf("revocation: OCSP signer key %T not supported", pub)
}

// hashFromOID is the CertID hash for oid, or 0 for one not supported.
func hashFromOID(oid asn1.ObjectIdentifier) crypto.Hash {
	for h, o := range map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA1:   {1, 3, 14, 3, 2, 26},
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	} {
		if oid.Equal(o) {
			return h
		}
	}
	return 0
}

func ocspRequestBytes(r *http.Request) ([]byte, error) {
	switch r.Method {
	case http.MethodPost:
		b, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPRequest+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxOCSPRequest {
			return nil, errors.New("OCSP request too large")
		}
		return b, nil
	case http.MethodGet:
		enc := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/ocsp")
		enc = strings.TrimPrefix(enc, "/")
		if enc == "" {
			return nil, errors.New("GET /v1/ocsp/<base64 DER request>, or POST the DER request")
		}
		if u, err := url.PathUnescape(enc); err == nil {
			enc = u
		}
		if len(enc) > base64.StdEncoding.EncodedLen(maxOCSPRequest) {
			return nil, errors.New("OCSP request too large")
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
		}
		if err != nil {
			return nil, errors.New("OCSP GET request is not base64")
		}
		return b, nil
	default:
		return nil, errors.New("OCSP takes GET or POST")
	}
}

func writeOCSP(w http.ResponseWriter, body []byte, maxAge time.Duration) {
	w.Header().Set("Content-Type", "application/ocsp-response")
	if maxAge > 0 {
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(maxAge.Seconds())))
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Write(body)
}

// issuedBy checks the CertID's issuer name and key hashes against issuer.
func issuedBy(c ocspCert, issuer *x509.Certificate) bool {
	h, ok := hasher(c.hash)
	if !ok {
		return false
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false
	}
	h.Write(issuer.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	h.Write(spki.PublicKey.RightAlign())
	keyHash := h.Sum(nil)
	return bytes.Equal(nameHash, c.nameHash) && bytes.Equal(keyHash, c.keyHash)
}

func hasher(alg crypto.Hash) (hash.Hash, bool) {
	switch alg {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
		return alg.New(), true
	}
	return nil, false
}

// serialHex is a requested serial as the store keys it, or "" for one no
// certificate of this CA can carry.
func serialHex(n *big.Int) string {
	if n == nil || n.Sign() <= 0 || len(n.Bytes()) > maxSerialOctets {
		return ""
	}
	return hex.EncodeToString(n.Bytes())
}

func mustCode(reason string) int {
	c, _ := ReasonCode(reason)
	return c
}
