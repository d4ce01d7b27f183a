package datadir

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/internal/vaultclient"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
)

// Dir is an opened data dir: its config, state store and key store.
type Dir struct {
	Layout Layout
	Config config.Config
	Store  *state.Store
	Keys   keys.Store
}

// Open loads the config and opens the state and key stores of an initialised
// data dir. It fails, saying to run init, when the dir is not initialised.
func Open(ctx context.Context, opts Options) (*Dir, error) {
	l := opts.Layout
	if _, err := os.Stat(l.AgeIdentity()); err != nil {
		return nil, fmt.Errorf("datadir: %s is not initialised (run `trustamp init --data %s`): %w", l.Root, l.Root, err)
	}
	cfg, err := config.Load(l.Config(), opts.getenv())
	if err != nil {
		return nil, err
	}
	ks, err := KeyStore(l, cfg, cfg.Keys.Custody)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	sc := StateConfig(l.Root, cfg)
	sc.ReadOnly = opts.ReadOnly
	store, err := state.Open(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return &Dir{Layout: l, Config: cfg, Store: store, Keys: ks}, nil
}

// KeyStore opens a key custodian: "age" (the data dir's encrypted files)
// or "vault-kv" (keys.vault_kv over the vault connection).
func KeyStore(l Layout, cfg config.Config, custody string) (keys.Store, error) {
	switch custody {
	case "age":
		return keys.NewAgeStore(keys.AgeConfig{Dir: l.KeysDir(), IdentityFile: l.AgeIdentity()})
	case "vault-kv":
		vc, err := VaultConfig(cfg.Vault)
		if err != nil {
			return nil, err
		}
		return keys.NewVaultKV(keys.VaultKVConfig{Vault: vc, Mount: cfg.Keys.VaultKV.Mount, Path: cfg.Keys.VaultKV.Path})
	}
	return nil, fmt.Errorf("keys.custody: %q is not one of age, vault-kv", custody)
}

// VaultConfig maps the vault section (and its secret from the environment)
// onto a client configuration.
func VaultConfig(v config.Vault) (vaultclient.Config, error) {
	if v.Address == "" {
		return vaultclient.Config{}, errors.New("vault.address is not set")
	}
	c := vaultclient.Config{Address: v.Address, CACertFile: v.CAFile, Namespace: v.Namespace,
		AppRoleMount: v.AppRoleMount, Timeout: v.Timeout}
	if v.Auth == "approle" {
		if v.SecretID == "" {
			return c, fmt.Errorf("vault.auth is approle: set %s", config.EnvVaultSecretID)
		}
		c.RoleID, c.SecretID = v.RoleID, v.SecretID
		return c, nil
	}
	if v.Token == "" {
		return c, fmt.Errorf("vault.auth is token: set %s", config.EnvVaultToken)
	}
	c.Token = v.Token
	return c, nil
}

// StateConfig maps the config file's state section onto the store's Config.
func StateConfig(root string, cfg config.Config) state.Config {
	return state.Config{
		Driver:      cfg.State.Driver,
		SQLitePath:  config.ResolvePath(root, cfg.State.SQLite.Path),
		BusyTimeout: cfg.State.SQLite.BusyTimeout,
		PostgresDSN: cfg.State.Postgres.DSN,
		MaxConns:    cfg.State.Postgres.MaxConns,
	}
}

// AuditKey decrypts the audit signing key.
func (d *Dir) AuditKey(ctx context.Context) (ed25519.PrivateKey, error) {
	s, err := d.Keys.Get(ctx, AuditKeyName)
	if err != nil {
		return nil, fmt.Errorf("datadir: audit key: %w", err)
	}
	k, ok := s.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("datadir: audit key is %T, want Ed25519", s)
	}
	return k, nil
}

// AuditPublicKey reads the audit public key written at init.
func (d *Dir) AuditPublicKey() (ed25519.PublicKey, error) {
	b, err := os.ReadFile(d.Layout.AuditPublicKey())
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return audit.ParsePublicKey(b)
}

// Close closes the state store.
func (d *Dir) Close() error { return d.Store.Close() }
