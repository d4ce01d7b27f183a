package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/trustamp/trustamp/internal/atomicfile"
)

// Key names in the key store.
const (
	RootKeyName         = "root-ca"
	IntermediateKeyName = "intermediate-ca"
	ServerKeyName       = "server-tls"
)

// KeyStore keeps CA private keys at rest; storage/keys.AgeStore is one.
type KeyStore interface {
	Get(ctx context.Context, name string) (crypto.Signer, error)
	Put(ctx context.Context, name string, key crypto.Signer) error
}

// Files names the PEM files a CA keeps in its directory.
type Files struct{ Dir string }

// Root is the root certificate: what agents and the server trust.
func (f Files) Root() string { return filepath.Join(f.Dir, "root.pem") }

// Intermediate is the issuing certificate.
func (f Files) Intermediate() string { return filepath.Join(f.Dir, "intermediate.pem") }

// Previous is the intermediate replaced by the last rollover, still trusted
// for the certificates it issued.
func (f Files) Previous() string { return filepath.Join(f.Dir, "intermediate-previous.pem") }

// Next is a rollover's new intermediate before it takes over; its presence
// means a rollover was interrupted and is resumed.
func (f Files) Next() string { return filepath.Join(f.Dir, "intermediate-next.pem") }

// RootPrevious is the root replaced by a root rollover, trusted until the
// rollover is finished.
func (f Files) RootPrevious() string { return filepath.Join(f.Dir, "root-previous.pem") }

// RootNext is a root rollover's new root before it takes over.
func (f Files) RootNext() string { return filepath.Join(f.Dir, "root-next.pem") }

// Bridge is the new root certified by the previous one, sent in chains
// during a root rollover.
func (f Files) Bridge() string { return filepath.Join(f.Dir, "bridge.pem") }

// Server is the OpAMP listener's certificate chain.
func (f Files) Server() string { return filepath.Join(f.Dir, "server.pem") }

// Lifetimes of the CA certificates made at init.
const (
	rootLifetime         = 10 * 365 * 24 * time.Hour
	intermediateLifetime = 5 * 365 * 24 * time.Hour
)

// Bootstrap creates the root and intermediate (ECDSA P-256) when they do not
// exist yet, and reports whether it did. Keys go to the key store first, then
// certificates to disk, so an interrupted bootstrap leaves keys without
// certificates (which Bootstrap then refuses to paper over) rather than
// certificates without keys.
func Bootstrap(ctx context.Context, keys KeyStore, files Files, trustDomain string, now time.Time) (bool, error) {
	_, rootErr := os.Stat(files.Root())
	_, intErr := os.Stat(files.Intermediate())
	if rootErr == nil && intErr == nil {
		return false, nil
	}
	if rootErr == nil || intErr == nil {
		return false, fmt.Errorf("ca: %s holds only one of root.pem and intermediate.pem: restore the other from backup", files.Dir)
	}
	if err := os.MkdirAll(files.Dir, 0o700); err != nil {
		return false, fmt.Errorf("ca: %w", err)
	}
	rootKey, err := newCAKey(ctx, keys, RootKeyName)
	if err != nil {
		return false, err
	}
	intKey, err := newCAKey(ctx, keys, IntermediateKeyName)
	if err != nil {
		return false, err
	}
	rootTmpl := caTemplate(pkix.Name{CommonName: "trustamp root CA", Organization: []string{trustDomain}}, now, rootLifetime, 1)
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return false, fmt.Errorf("ca: create root: %w", err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	intTmpl := caTemplate(pkix.Name{CommonName: "trustamp intermediate CA", Organization: []string{trustDomain}}, now, intermediateLifetime, 0)
	intDER, err := x509.CreateCertificate(rand.Reader, intTmpl, root, intKey.Public(), rootKey)
	if err != nil {
		return false, fmt.Errorf("ca: create intermediate: %w", err)
	}
	if err := atomicfile.Write(files.Intermediate(), pemCert(intDER), 0o644); err != nil {
		return false, fmt.Errorf("ca: %w", err)
	}
	if err := atomicfile.Write(files.Root(), pemCert(rootDER), 0o644); err != nil {
		return false, fmt.Errorf("ca: %w", err)
	}
	return true, nil
}

func newCAKey(ctx context.Context, keys KeyStore, name string) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", name, err)
	}
	if err := keys.Put(ctx, name, k); err != nil {
		return nil, fmt.Errorf("ca: store %s key (a previous bootstrap may have been interrupted): %w", name, err)
	}
	return k, nil
}

func caTemplate(subject pkix.Name, now time.Time, lifetime time.Duration, maxPathLen int) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               subject,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
}

// randomSerial returns a positive 128-bit serial (CA/B Forum asks for at
// least 64 bits of entropy).
func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(fmt.Sprintf("ca: crypto/rand failed: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func readCert(path string) (*x509.Certificate, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("ca: %s: not a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return c, b, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
