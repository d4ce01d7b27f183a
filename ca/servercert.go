package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/storage/keys"
)

// serverCertLifetime is a year; the certificate is renewed on start when a
// third of that is left, or when the configured names change.
const serverCertLifetime = 365 * 24 * time.Hour

// ServerCertificate returns the OpAMP listener's certificate for names (DNS
// names or IP addresses), issuing or renewing it from the intermediate when
// needed. The key is made once and kept in the key store.
func (a *Authority) ServerCertificate(ctx context.Context, names []string) (tls.Certificate, error) {
	key, err := a.cfg.Keys.Get(ctx, ServerKeyName)
	if errors.Is(err, keys.ErrNotFound) {
		k, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return tls.Certificate{}, fmt.Errorf("ca: server key: %w", gerr)
		}
		if err = a.cfg.Keys.Put(ctx, ServerKeyName, k); err == nil {
			key = k
		}
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: server key: %w", err)
	}
	now := a.cfg.Clock()
	iss := a.cur.Load()
	if leaf, pemBytes, err := readCert(a.cfg.Files.Server()); err == nil && serverCertFits(iss.intermediate, leaf, key, names, now) {
		return tls.X509KeyPair(pemBytes, mustMarshalKey(key))
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(serverCertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	// The issuer's key is the intermediate's, loaded with it (from the key
	// store or the KMS).
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.intermediate, key.Public(), iss.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: issue server certificate: %w", err)
	}
	chain := append(pemCert(der), iss.chainPEM...)
	if err := atomicfile.Write(a.cfg.Files.Server(), chain, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: %w", err)
	}
	return tls.X509KeyPair(chain, mustMarshalKey(key))
}

func serverCertFits(intermediate, leaf *x509.Certificate, key crypto.Signer, names []string, now time.Time) bool {
	if leaf.NotAfter.Sub(now) < serverCertLifetime/3 || leaf.CheckSignatureFrom(intermediate) != nil {
		return false
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return false
	}
	var have []string
	have = append(have, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		have = append(have, ip.String())
	}
	want := slices.Clone(names)
	for i, n := range want {
		if ip := net.ParseIP(n); ip != nil {
			want[i] = ip.String()
		}
	}
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, want)
}

func mustMarshalKey(key crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(fmt.Sprintf("ca: marshal server key: %v", err))
	}
	return pemBlock("PRIVATE KEY", der)
}
