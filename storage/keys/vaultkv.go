package keys

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// VaultKVConfig locates keys in a Vault KV version 2 secrets engine.
type VaultKVConfig struct {
	// Address is Vault's URL (https://vault:8200). Required.
	Address string
	// Mount is the KV v2 mount. Empty means "secret".
	Mount string
	// Path is the prefix under the mount. Empty means "trustamp/keys".
	Path string
	// Token authenticates directly. Either Token or RoleID and SecretID.
	Token string
	// RoleID and SecretID log in with AppRole (at AppRoleMount, default
	// "approle"); the token is renewed by logging in again when Vault
	// refuses it.
	RoleID, SecretID, AppRoleMount string
	// CACertFile verifies Vault's TLS certificate; empty means the system
	// roots.
	CACertFile string
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string
	// Timeout bounds each request. Zero means 10s.
	Timeout time.Duration
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
	client *vault.Client

	mu       sync.Mutex
	loggedIn bool
}

// NewVaultKV connects (and, with AppRole, logs in) lazily: a Vault that is
// down at start fails the first Get, naming Vault.
func NewVaultKV(cfg VaultKVConfig) (*VaultKV, error) {
	if cfg.Address == "" {
		return nil, errors.New("keys: vault-kv: address is required")
	}
	if cfg.Token == "" && (cfg.RoleID == "" || cfg.SecretID == "") {
		return nil, errors.New("keys: vault-kv: a token, or an AppRole role_id and secret_id, is required")
	}
	if cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	if cfg.Path == "" {
		cfg.Path = "trustamp/keys"
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	vc := vault.DefaultConfig()
	vc.Address = cfg.Address
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 2
	if cfg.CACertFile != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CACertFile}); err != nil {
			return nil, fmt.Errorf("keys: vault-kv: TLS: %w", err)
		}
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("keys: vault-kv: %w", err)
	}
	// The environment must not decide which Vault or token is used.
	c.ClearToken()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	if cfg.Token != "" {
		c.SetToken(cfg.Token)
	}
	return &VaultKV{cfg: cfg, client: c, loggedIn: cfg.Token != ""}, nil
}

// Custody names where the keys are: "vault-kv".
func (s *VaultKV) Custody() string { return "vault-kv" }

func (s *VaultKV) secretPath(name string) (string, error) {
	if !namePattern.MatchString(name) {
		return "", fmt.Errorf("keys: invalid key name %q (want lowercase letters, digits, dashes)", name)
	}
	return path.Join(s.cfg.Path, name), nil
}

// login obtains a token with AppRole when there is none (or it was
// refused).
func (s *VaultKV) login(ctx context.Context, force bool) error {
	if s.cfg.Token != "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loggedIn && !force {
		return nil
	}
	secret, err := s.client.Logical().WriteWithContext(ctx, "auth/"+s.cfg.AppRoleMount+"/login",
		map[string]any{"role_id": s.cfg.RoleID, "secret_id": s.cfg.SecretID})
	if err != nil {
		return fmt.Errorf("vault AppRole login: %s", vaultError(err))
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return errors.New("vault AppRole login: no token in the answer")
	}
	s.client.SetToken(secret.Auth.ClientToken)
	s.loggedIn = true
	return nil
}

// do runs op, logging in again once if Vault refuses the token (an AppRole
// token expired).
func (s *VaultKV) do(ctx context.Context, op func() error) error {
	if err := s.login(ctx, false); err != nil {
		return err
	}
	err := op()
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && s.cfg.Token == "" {
		if lerr := s.login(ctx, true); lerr != nil {
			return lerr
		}
		err = op()
	}
	return err
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
	err = s.do(ctx, func() error {
		_, err := s.client.KVv2(s.cfg.Mount).Put(ctx, p, data, vault.WithCheckAndSet(0))
		return err
	})
	if err != nil {
		if strings.Contains(err.Error(), "check-and-set") {
			return fmt.Errorf("keys: put %s: %w", name, ErrExists)
		}
		return fmt.Errorf("keys: put %s in vault %s/%s: %s", name, s.cfg.Mount, p, vaultError(err))
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
	err = s.do(ctx, func() (err error) {
		secret, err = s.client.KVv2(s.cfg.Mount).Get(ctx, p)
		return err
	})
	if errors.Is(err, vault.ErrSecretNotFound) {
		return nil, fmt.Errorf("keys: get %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: get %s from vault %s/%s: %s", name, s.cfg.Mount, p, vaultError(err))
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
	err := s.do(ctx, func() (err error) {
		secret, err = s.client.Logical().ListWithContext(ctx, path.Join(s.cfg.Mount, "metadata", s.cfg.Path))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys: list vault %s/%s: %s", s.cfg.Mount, s.cfg.Path, vaultError(err))
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

// vaultError is Vault's answer without the request details: the status and
// Vault's own error messages (which never carry the token).
func vaultError(err error) string {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("vault answered %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err.Error()
}
