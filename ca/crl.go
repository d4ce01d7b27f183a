package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/trustamp/trustamp/storage/keys"
)

// IssuerKeyID names the current intermediate by its subject key id (hex):
// CRLs are stored per issuer under it.
func (a *Authority) IssuerKeyID() string { return issuerKeyID(a.cur.Load().intermediate) }

func issuerKeyID(c *x509.Certificate) string {
	if len(c.SubjectKeyId) > 0 {
		return hex.EncodeToString(c.SubjectKeyId)
	}
	sum := sha1.Sum(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// SignCRL signs an X.509 v2 CRL with the current intermediate: the CA that
// issues agent certificates, so relying parties find the CRL's issuer in the
// chain they already hold. It returns the DER and the issuer's key id.
func (a *Authority) SignCRL(entries []x509.RevocationListEntry, number int64, thisUpdate, nextUpdate time.Time) ([]byte, string, error) {
	iss := a.cur.Load()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, iss.intermediate, iss.key)
	if err != nil {
		return nil, "", fmt.Errorf("ca: sign CRL %d: %w", number, err)
	}
	return der, issuerKeyID(iss.intermediate), nil
}

// OCSP signer: a delegated responder certificate (RFC 6960 section 4.2.2.2)
// issued by the intermediate, so OCSP responses are not signed with the CA
// key on every request. Its key is kept in the key store, one per
// intermediate; the certificate is short-lived, made in memory and replaced
// when a third of its life is left or the intermediate changes. It carries
// id-pkix-ocsp-nocheck: relying parties do not check its own revocation, which
// is why it lives only days.
const ocspSignerLifetime = 7 * 24 * time.Hour

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

type ocspSigner struct {
	issuer *x509.Certificate
	cert   *x509.Certificate
	key    crypto.Signer
}

// OCSPSigner returns the intermediate that issues today, the delegated OCSP
// responder certificate and its key.
func (a *Authority) OCSPSigner(ctx context.Context) (issuer, cert *x509.Certificate, key crypto.Signer, err error) {
	iss := a.cur.Load()
	now := a.cfg.Clock()
	a.ocspMu.Lock()
	defer a.ocspMu.Unlock()
	if s := a.ocsp; s != nil && s.issuer.Equal(iss.intermediate) && s.cert.NotAfter.Sub(now) > ocspSignerLifetime/3 {
		return s.issuer, s.cert, s.key, nil
	}
	name := serialKeyName("ocsp-signer", iss.intermediate.SerialNumber)
	key, err = a.cfg.Keys.Get(ctx, name)
	if errors.Is(err, keys.ErrNotFound) {
		k, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return nil, nil, nil, fmt.Errorf("ca: OCSP signer key: %w", gerr)
		}
		if err = a.cfg.Keys.Put(ctx, name, k); err == nil {
			key = k
		}
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: OCSP signer key: %w", err)
	}
	noCheck, _ := asn1.Marshal(asn1.NullRawValue)
	tmpl := &x509.Certificate{
		SerialNumber:    randomSerial(),
		Subject:         pkix.Name{CommonName: "trustamp OCSP responder"},
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        now.Add(ocspSignerLifetime),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: noCheck}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.intermediate, key.Public(), iss.key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: issue OCSP signer certificate: %w", err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	a.ocsp = &ocspSigner{issuer: iss.intermediate, cert: cert, key: key}
	return iss.intermediate, cert, key, nil
}
