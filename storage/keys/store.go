package keys

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// Store is a custodian of private keys: the age-encrypted files in the data
// dir (AgeStore) or Vault's KV (VaultKV). Keys are never replaced: Put of an
// existing name fails with ErrExists.
type Store interface {
	Put(ctx context.Context, name string, key crypto.Signer) error
	Get(ctx context.Context, name string) (crypto.Signer, error)
	List(ctx context.Context) ([]string, error)
	// Custody names the kind of store, for messages and the audit log.
	Custody() string
}

// Fingerprint is the SHA-256 of a key's public half (PKIX DER), hex: how a
// key is named in audit entries without revealing anything.
func Fingerprint(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return "", fmt.Errorf("keys: fingerprint: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
