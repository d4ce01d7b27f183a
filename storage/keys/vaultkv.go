package keys

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/trustamp/trustamp/internal/vaultclient"
)

// VaultKVConfig locates keys in a Vault KV version 2 secrets engine.
type VaultKVConfig struct {
	// Vault is the connection (address, TLS, token or AppRole).
	Vault vaultclient.Config
	// Mount is the KV v2 mount. Empty means "secret".
	Mount string
	// Path is the prefix under the mount. Empty means "trustamp/keys".
	Path string
}

// VaultKV keeps keys in Vault's KV v2 as PKCS#8 PEM, one secret per key,
// written with check-and-set 0 so an existing key is never overwritten,
// even by two replicas racing. Vault encrypts them at rest and audits every
// read; trustamp's data dir then holds no CA, audit or OCSP key.
//
// Neither the token nor the AppRole secret ID ever appears in an error or
// a log line: errors name the operation, the key and Vault's answer.
type VaultKV struct {
	cfg    VaultKVConfig
	client *vaultclient.Client
}

// NewVaultKV makes the store; it connects (and logs in) at the first use,
// so a Vault that is down fails that use, naming Vault.
func NewVaultKV(cfg VaultKVConfig) (*VaultKV, error) {
	if cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	if cfg.Path == "" {
		cfg.Path = "trustamp/keys"
	}
	c, err := vaultclient.New(cfg.Vault)
	if err != nil {
		return nil, fmt.Errorf("keys: vault-kv: %w", err)
	}
	return &VaultKV{cfg: cfg, client: c}, nil
}

// Custody names where the keys are: "vault-kv".
func (s *VaultKV) Custody() string { return "vault-kv" }

func (s *VaultKV) secretPath(name string) (string, error) {
	if !namePattern.MatchString(name) {
		return "", fmt.Errorf("keys: invalid key name %q (want lowercase letters, digits, dashes)", name)
	}
	return path.Join(s.cfg.Path, name), nil
}

// Put stores key under name unless a key is there already (ErrExists).
func (s *VaultKV) Put(ctx context.Context, name string, key crypto.Signer) error {
	p, err := s.secretPath(name)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keys: put %s: %w", name, err)
	}
	data := map[string]any{"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}
	err = s.client.Do(ctx, func(c *vault.Client) error {
		_, err := c.KVv2(s.cfg.Mount).Put(ctx, p, data, vault.WithCheckAndSet(0))
		return err
	})
	if err != nil {
		if strings.Contains(err.Error(), "check-and-set") {
			return fmt.Errorf("keys: put %s: %w", name, ErrExists)
		}
		return fmt.Errorf("keys: put %s in vault %s/%s: %s", name, s.cfg.Mount, p, vaultclient.ErrorText(err))
	}
	return nil
}

// Get reads the key stored under name.
func (s *VaultKV) Get(ctx context.Context, name string) (crypto.Signer, error) {
	p, err := s.secretPath(name)
	if err != nil {
		return nil, err
	}
	var secret *vault.KVSecret
	err = s.client.Do(ctx, func(c *vault.Client) (err error) {
		secret, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
		return err
	})
	if errors.Is(err, vault.ErrSecretNotFound) {
		return nil, fmt.Errorf("keys: get %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: get %s from vault %s/%s: %s", name, s.cfg.Mount, p, vaultclient.ErrorText(err))
	}
	pemStr, _ := secret.Data["private_key"].(string)
	block, _ := pem.Decode([]byte(pemStr))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("keys: get %s: vault %s/%s holds no PKCS#8 private_key", name, s.cfg.Mount, p)
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
func (s *VaultKV) List(ctx context.Context) ([]string, error) {
	var secret *vault.Secret
	err := s.client.Do(ctx, func(c *vault.Client) (err error) {
		secret, err = c.Logical().ListWithContext(ctx, path.Join(s.cfg.Mount, "metadata", s.cfg.Path))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys: list vault %s/%s: %s", s.cfg.Mount, s.cfg.Path, vaultclient.ErrorText(err))
	}
	var out []string
	if secret != nil {
		if keys, ok := secret.Data["keys"].([]any); ok {
			for _, k := range keys {
				if name, ok := k.(string); ok && namePattern.MatchString(name) {
					out = append(out, name)
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
