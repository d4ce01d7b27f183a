package agent

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/internal/atomicfile"
)

// The state directory. Every file is replaced by write-to-temp, fsync,
// rename, fsync of the directory, so a crash leaves either the old or the
// new content, never a torn file.
//
//	uid                  the agent's instance_uid (never changes)
//	credentials.pem      certificate chain and private key in use (0600)
//	credentials.next.pem a certificate just offered, with its key, not yet
//	                     proven by a successful connection (0600)
//	pending.key          the key of a CSR sent, awaiting its certificate (0600)
//	packages/            see packages.go
const (
	uidFile     = "uid"
	credsFile   = "credentials.pem"
	nextFile    = "credentials.next.pem"
	pendingFile = "pending.key"
)

// credentials are a certificate chain and its private key.
type credentials struct {
	certPEM []byte // leaf first
	key     crypto.Signer
	leaf    *x509.Certificate
}

// tlsCertificate is c for a tls.Config.
func (c *credentials) tlsCertificate() (tls.Certificate, error) {
	keyPEM, err := pemKey(c.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(c.certPEM, keyPEM)
}

// renewAt is when c is due for renewal: at fraction of its life.
func (c *credentials) renewAt(fraction float64) time.Time {
	life := c.leaf.NotAfter.Sub(c.leaf.NotBefore)
	return c.leaf.NotBefore.Add(time.Duration(float64(life) * fraction))
}

// serial is the certificate's serial as trustamp writes it everywhere: the
// hex of its bytes (a leading zero nibble kept).
func (c *credentials) serial() string { return hex.EncodeToString(c.leaf.SerialNumber.Bytes()) }

// newCredentials pairs a certificate chain with its key, refusing a pair
// that does not match (an offer for another key).
func newCredentials(certPEM []byte, key crypto.Signer) (*credentials, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("certificate is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	c := &credentials{certPEM: certPEM, key: key, leaf: leaf}
	if _, err := c.tlsCertificate(); err != nil {
		return nil, fmt.Errorf("certificate does not match the key: %w", err)
	}
	return c, nil
}

// stateDir holds the agent's identity on disk.
type stateDir struct{ path string }

func openStateDir(path string) (stateDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return stateDir{}, fmt.Errorf("state dir: %w", err)
	}
	return stateDir{path}, nil
}

func (d stateDir) file(name string) string { return filepath.Join(d.path, name) }

// uid returns the agent's uid, creating (and persisting) a UUIDv7 the
// first time.
func (d stateDir) uid() (uuid.UUID, error) {
	b, err := os.ReadFile(d.file(uidFile))
	if err == nil {
		u, err := uuid.Parse(strings.TrimSpace(string(b)))
		if err != nil {
			return uuid.Nil, fmt.Errorf("%s: %w", d.file(uidFile), err)
		}
		return u, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return uuid.Nil, err
	}
	u := uuid.Must(uuid.NewV7())
	return u, atomicfile.Write(d.file(uidFile), []byte(u.String()+"\n"), 0o600)
}

// load reads a credentials file; nil without error when it does not exist.
func (d stateDir) load(name string) (*credentials, error) {
	b, err := os.ReadFile(d.file(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var certPEM []byte
	var key crypto.Signer
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			certPEM = append(certPEM, pem.EncodeToMemory(block)...)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: key: %w", d.file(name), err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("%s: key of type %T cannot sign", d.file(name), k)
			}
			key = s
		}
	}
	if certPEM == nil || key == nil {
		return nil, fmt.Errorf("%s: needs a certificate and a private key", d.file(name))
	}
	c, err := newCredentials(certPEM, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(name), err)
	}
	return c, nil
}

// save writes credentials (certificate and key in one file, so they can
// only change together).
func (d stateDir) save(name string, c *credentials) error {
	keyPEM, err := pemKey(c.key)
	if err != nil {
		return err
	}
	return atomicfile.Write(d.file(name), append(bytes.Clone(c.certPEM), keyPEM...), 0o600)
}

// promote makes the next credentials the current ones (one rename).
func (d stateDir) promote() error {
	if err := os.Rename(d.file(nextFile), d.file(credsFile)); err != nil {
		return err
	}
	return syncDir(d.path)
}

func (d stateDir) remove(name string) error {
	if err := os.Remove(d.file(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// pendingKey returns the key of the CSR sent last, or nil.
func (d stateDir) pendingKey() (crypto.Signer, error) {
	b, err := os.ReadFile(d.file(pendingFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: not PEM", d.file(pendingFile))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(pendingFile), err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", d.file(pendingFile))
	}
	return s, nil
}

// newPendingKey makes an ECDSA P-256 key, persists it before any CSR for
// it leaves, and returns the key and the CSR. The subject is empty: the
// server sets the identity.
func (d stateDir) newPendingKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := pemKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := atomicfile.Write(d.file(pendingFile), keyPEM, 0o600); err != nil {
		return nil, nil, fmt.Errorf("persist CSR key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func pemKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
