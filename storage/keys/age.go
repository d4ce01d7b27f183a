// Package keys keeps the server's private keys (CA keys, the audit key, the
// OCSP signer) at rest. The default custody is age: each key is a PKCS#8 PEM
// encrypted to the data dir's X25519 identity, so a copy of the key files
// alone (a backup, a snapshot of the keys directory) reveals nothing.
// Other custodians (Vault KV) come behind the same two methods.
package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/trustamp/trustamp/internal/atomicfile"
)

// ErrNotFound means no key is stored under the name.
var ErrNotFound = errors.New("keys: not found")

// ErrExists means a key is already stored under the name; keys are never
// silently replaced.
var ErrExists = errors.New("keys: already exists")

// AgeConfig locates an age key store.
type AgeConfig struct {
	// Dir holds the encrypted key files (NAME.key.age), 0700.
	Dir string
	// IdentityFile is the age X25519 identity that decrypts them, 0600.
	IdentityFile string
}

// AgeStore stores private keys as age-encrypted files.
type AgeStore struct {
	dir      string
	identity *age.X25519Identity
	anchorMu sync.Mutex // serialises UpdateAnchor
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// NewAgeStore loads the identity. It refuses an identity file that others can
// read, as OpenSSH refuses a world-readable private key.
func NewAgeStore(cfg AgeConfig) (*AgeStore, error) {
	id, err := LoadIdentity(cfg.IdentityFile)
	if err != nil {
		return nil, err
	}
	return &AgeStore{dir: cfg.Dir, identity: id}, nil
}

// GenerateIdentity writes a new age X25519 identity to path (0600) in the
// format age-keygen uses. It never replaces an existing file.
func GenerateIdentity(path string, now time.Time) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("keys: generate age identity: %w", err)
	}
	body := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", now.UTC().Format(time.RFC3339), id.Recipient(), id)
	if err := atomicfile.Create(path, []byte(body), 0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// LoadIdentity reads an age X25519 identity file.
func LoadIdentity(path string) (*age.X25519Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keys: age identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keys: age identity %s is accessible to group or others (mode %v): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys: age identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("keys: age identity %s: %w", path, err)
	}
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			return x, nil
		}
	}
	return nil, fmt.Errorf("keys: age identity %s holds no X25519 identity", path)
}

func (s *AgeStore) path(name string) (string, error) {
	if !namePattern.MatchString(name) {
		return "", fmt.Errorf("keys: invalid key name %q (want lowercase letters, digits, dashes)", name)
	}
	return filepath.Join(s.dir, name+".key.age"), nil
}

// Put encrypts key and stores it under name. It fails with ErrExists rather
// than replace a key: a CA or audit key replaced by accident is a broken
// chain of trust.
func (s *AgeStore) Put(ctx context.Context, name string, key crypto.Signer) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, s.identity.Recipient())
	if err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	if err := pem.Encode(w, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	if err := atomicfile.Create(p, buf.Bytes(), 0o600); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("keys: put %s: %w", name, ErrExists)
		}
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	return nil
}

// Get decrypts the key stored under name.
func (s *AgeStore) Get(ctx context.Context, name string) (crypto.Signer, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("keys: get %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: get %s: %w", name, err)
	}
	defer f.Close()
	r, err := age.Decrypt(armor.NewReader(f), s.identity)
	if err != nil {
		return nil, fmt.Errorf("keys: get %s: decrypt (wrong age identity?): %w", name, err)
	}
	pemBytes, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("keys: get %s: %w", name, err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("keys: get %s: not a PKCS#8 PEM private key", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keys: get %s: %w", name, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("keys: get %s: %T cannot sign", name, k)
	}
	return signer, nil
}

// List names the stored keys, sorted.
func (s *AgeStore) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: list: %w", err)
	}
	var out []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".key.age")
		if ok && !e.IsDir() && namePattern.MatchString(name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Custody names where the keys are: "age".
func (s *AgeStore) Custody() string { return "age" }
