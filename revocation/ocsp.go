package revocation

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
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

// maxSerialOctets is RFC 5280's bound on a certificate serial number.
const maxSerialOctets = 20

// ServeOCSP is an RFC 6960 responder: GET /v1/ocsp/<base64 request> and POST
// /v1/ocsp with an application/ocsp-request body. It answers good for a
// certificate issued here and not revoked, revoked (with time and reason)
// for one in force in the revocation set or the store, and unknown for a
// serial never issued. Responses are signed by the delegated OCSP signer.
// Requests about another issuer get "unauthorized", as the RFC asks.
func (s *Service) ServeOCSP(w http.ResponseWriter, r *http.Request) {
	raw, err := ocspRequestBytes(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(raw)
	if err != nil {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	ctx := r.Context()
	issuer, signerCert, key, err := s.cfg.CA.OCSPSigner(ctx)
	if err != nil {
		s.log.Error("OCSP signer", "err", err)
		writeOCSP(w, ocsp.InternalErrorErrorResponse, 0)
		return
	}
	if !issuedBy(req, issuer) {
		writeOCSP(w, ocsp.UnauthorizedErrorResponse, 0)
		return
	}
	now := s.cfg.Clock().UTC().Truncate(time.Second)
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber,
		ThisUpdate:   now,
		NextUpdate:   now.Add(s.cfg.OCSPValidity),
		Certificate:  signerCert,
		IssuerHash:   req.HashAlgorithm,
	}
	serial := serialHex(req)
	if serial == "" {
		// Not a serial this CA could have issued (zero, negative or over
		// 20 octets): no lookup, and never the status of the positive
		// serial with the same magnitude.
		tmpl.Status = ocsp.Unknown
	} else if e, ok := s.set.lookup(serial); ok {
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, e.revokedAt.UTC(), mustCode(e.reason)
	} else {
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
			tmpl.Status = ocsp.Unknown
		case err != nil:
			s.log.Error("OCSP lookup", "serial", serial, "err", err)
			writeOCSP(w, ocsp.TryLaterErrorResponse, 0)
			return
		case cert.Status == state.CertRevoked:
			// Revoked on another replica and not synced here yet.
			tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, rev.RevokedAt.UTC(), mustCode(rev.Reason)
		default:
			tmpl.Status = ocsp.Good
		}
	}
	der, err := ocsp.CreateResponse(issuer, signerCert, tmpl, key)
	if err != nil {
		s.log.Error("OCSP sign", "serial", serial, "err", err)
		writeOCSP(w, ocsp.InternalErrorErrorResponse, 0)
		return
	}
	writeOCSP(w, der, s.cfg.OCSPValidity)
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

// issuedBy checks the request's issuer name and key hashes against issuer.
func issuedBy(req *ocsp.Request, issuer *x509.Certificate) bool {
	h, ok := hasher(req.HashAlgorithm)
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
	return bytes.Equal(nameHash, req.IssuerNameHash) && bytes.Equal(keyHash, req.IssuerKeyHash)
}

func hasher(alg crypto.Hash) (hash.Hash, bool) {
	switch alg {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
		return alg.New(), true
	}
	return nil, false
}

// serialHex is the request's serial as the store keys it, or "" for one no
// certificate of this CA can carry.
func serialHex(req *ocsp.Request) string {
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 || len(req.SerialNumber.Bytes()) > maxSerialOctets {
		return ""
	}
	return hex.EncodeToString(req.SerialNumber.Bytes())
}

func mustCode(reason string) int {
	c, _ := ReasonCode(reason)
	return c
}
