package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"

	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/storage/keys"
)

// Key name prefixes of CA certificates made by a rollover; their keys are
// stored as PREFIX-<first 16 hex digits of the serial>.
const (
	rootKeyPrefix         = "root-ca"
	intermediateKeyPrefix = "intermediate-ca"
)

// serialKeyName names a rolled-over CA certificate's key by its serial.
func serialKeyName(prefix string, serial *big.Int) string {
	h := hex.EncodeToString(serial.Bytes())
	if len(h) > 16 {
		h = h[:16]
	}
	return prefix + "-" + h
}

// caKey finds a CA certificate's key, by serial for certificates a
// rollover made, else under the name used at init, and checks that it is
// the certificate's key.
func (a *Authority) caKey(ctx context.Context, cert *x509.Certificate, prefix, initName string) (crypto.Signer, error) {
	key, err := a.cfg.Keys.Get(ctx, serialKeyName(prefix, cert.SerialNumber))
	if errors.Is(err, keys.ErrNotFound) {
		key, err = a.cfg.Keys.Get(ctx, initName)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %s key: %w", prefix, err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("ca: the stored %s key does not match its certificate", prefix)
	}
	return key, nil
}

// mintCA makes an ECDSA P-256 key, stores it first (so a crash leaves a key
// without a certificate, never the reverse), signs tmpl with parent (nil:
// self-signed) and writes the certificate to path.
func (a *Authority) mintCA(ctx context.Context, prefix string, tmpl, parent *x509.Certificate, parentKey crypto.Signer, path string) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", prefix, err)
	}
	if err := a.cfg.Keys.Put(ctx, serialKeyName(prefix, tmpl.SerialNumber), key); err != nil {
		return nil, fmt.Errorf("ca: store new %s key: %w", prefix, err)
	}
	return a.certifyCA(tmpl, parent, parentKey, key, path)
}

// certifyCA signs tmpl for key with parent (nil: self-signed by key) and
// writes the certificate to path.
func (a *Authority) certifyCA(tmpl, parent *x509.Certificate, parentKey, key crypto.Signer, path string) (*x509.Certificate, error) {
	prefix := tmpl.Subject.CommonName
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("ca: sign new %s: %w", prefix, err)
	}
	if err := atomicfile.Write(path, pemCert(der), 0o644); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return x509.ParseCertificate(der)
}

// RotateIntermediate replaces the issuing intermediate with a new one under
// the same root, and returns both. Certificates already issued keep
// verifying (the root is unchanged and the previous intermediate stays in
// the pool); new ones chain to the new intermediate from the moment this
// returns, with no pause in issuance.
//
// It is resumable: the new key is stored first, then the new certificate is
// written as intermediate-next.pem, then the current one is kept as
// intermediate-previous.pem and next is renamed into place. A run that finds
// intermediate-next.pem finishes what an interrupted run started.
func (a *Authority) RotateIntermediate(ctx context.Context) (old, next *x509.Certificate, err error) {
	old = a.cur.Load().intermediate
	next, _, err = readCert(a.cfg.Files.Next())
	switch {
	case errors.Is(err, os.ErrNotExist):
		if next, err = a.makeIntermediate(ctx); err != nil {
			return nil, nil, err
		}
	case err != nil:
		return nil, nil, err
	case next.CheckSignatureFrom(a.cur.Load().root) != nil:
		return nil, nil, fmt.Errorf("ca: %s is not signed by the root: remove it and retry", a.cfg.Files.Next())
	}
	// During a root rollover's overlap the previous root cross-signs the new
	// intermediate, so agents that trust only the previous root still verify.
	if prevRoot, _, err := readCert(a.cfg.Files.RootPrevious()); err == nil {
		prevKey, err := a.rootKey(ctx, prevRoot)
		if err != nil {
			return nil, nil, err
		}
		if err := a.makeBridge(prevRoot, prevKey, next); err != nil {
			return nil, nil, err
		}
	}
	curPEM, err := os.ReadFile(a.cfg.Files.Intermediate())
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if err := atomicfile.Write(a.cfg.Files.Previous(), curPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if err := os.Rename(a.cfg.Files.Next(), a.cfg.Files.Intermediate()); err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if err := a.load(ctx); err != nil {
		return nil, nil, fmt.Errorf("ca: load new intermediate: %w", err)
	}
	return old, next, nil
}

func (a *Authority) makeIntermediate(ctx context.Context) (*x509.Certificate, error) {
	root := a.cur.Load().root
	rootKey, err := a.rootKey(ctx, root)
	if err != nil {
		return nil, err
	}
	return a.makeIntermediateUnder(ctx, root, rootKey)
}

// makeIntermediateUnder makes a new intermediate signed by parent, stores
// its key, and writes it as intermediate-next.pem.
func (a *Authority) makeIntermediateUnder(ctx context.Context, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	tmpl := caTemplate(pkix.Name{CommonName: "trustamp intermediate CA", Organization: parent.Subject.Organization},
		a.cfg.Clock(), intermediateLifetime, 0)
	if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	if a.cfg.IntermediateKMS != "" {
		// The key is the KMS's: certify it; nothing to store.
		key, err := a.kmsKey(ctx)
		if err != nil {
			return nil, err
		}
		return a.certifyCA(tmpl, parent, parentKey, key, a.cfg.Files.Next())
	}
	return a.mintCA(ctx, intermediateKeyPrefix, tmpl, parent, parentKey, a.cfg.Files.Next())
}

// rootKey finds a root's key.
func (a *Authority) rootKey(ctx context.Context, root *x509.Certificate) (crypto.Signer, error) {
	return a.caKey(ctx, root, rootKeyPrefix, RootKeyName)
}
