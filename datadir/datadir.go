// Package datadir owns the layout of a trustamp data dir and its first-start
// initialisation. Init is idempotent: it creates only what is missing, never
// replaces a key or identity, and reports what it created, so running it on
// every start is safe.
package datadir

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/config"
	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// DefaultPath is the data dir used when --data is not given.
const DefaultPath = "./trustamp-data"

// AuditKeyName is the audit signing key's name in the key store.
const AuditKeyName = "audit"

// Layout names the files of a data dir.
type Layout struct {
	Root string
	// ConfigFile overrides Root/trustamp.yaml when set (--config).
	ConfigFile string
}

// Config returns the config file's path.
func (l Layout) Config() string {
	if l.ConfigFile != "" {
		return l.ConfigFile
	}
	return filepath.Join(l.Root, config.FileName)
}

// KeysDir holds the age identity and every encrypted private key.
func (l Layout) KeysDir() string { return filepath.Join(l.Root, "keys") }

// AgeIdentity is the X25519 identity that decrypts the keys at rest.
func (l Layout) AgeIdentity() string { return filepath.Join(l.KeysDir(), "age-identity.txt") }

// CAFiles locates the CA certificates (root, intermediate, server).
func (l Layout) CAFiles() ca.Files { return ca.Files{Dir: filepath.Join(l.Root, "ca")} }

// LocalCredential is where serve leaves the admin API address and a token
// for CLI commands run with --data on the same machine.
func (l Layout) LocalCredential() string { return filepath.Join(l.Root, "run", "admin.json") }

// AuditPublicKey is the audit key's public half, PEM, for auditors.
func (l Layout) AuditPublicKey() string { return filepath.Join(l.KeysDir(), "audit.pub.pem") }

// Options configures Init and Open.
type Options struct {
	Layout Layout
	// Getenv reads environment overrides. Nil means os.Getenv.
	Getenv func(string) string
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// ReadOnly (Open only) opens the state database without writing a byte
	// of the data dir, for verifying a read-only copy.
	ReadOnly bool
	// ReinitialiseState (Init only) accepts a state database that does not
	// match the data dir's anchor (empty, or rolled back): it is kept as it
	// is, the replaced anchor is audited, and the database anchored anew.
	// Without it Init refuses such a database with a *StateError.
	ReinitialiseState bool
}

func (o Options) getenv() func(string) string {
	if o.Getenv == nil {
		return os.Getenv
	}
	return o.Getenv
}

func (o Options) now() time.Time {
	if o.Clock == nil {
		return time.Now()
	}
	return o.Clock()
}

// InitResult says what Init created. Secrets in it are shown once and
// nowhere else.
type InitResult struct {
	Root    string   `json:"data_dir"`
	Created []string `json:"created"`
	// AdminToken is set only when Init minted the first admin token.
	AdminToken   string `json:"admin_token,omitempty"`
	AdminTokenID string `json:"admin_token_id,omitempty"`
	AuditKeyID   string `json:"audit_key_id"`
	StateDriver  string `json:"state_driver"`
	// StateAnchor says what Init did to the state anchor; empty when the
	// database already matched it.
	StateAnchor string `json:"state_anchor,omitempty"`
}

// Init creates whatever the data dir lacks: the directory (0700), the age
// identity, the config file, the database schema, the audit key and the
// first admin token.
func Init(ctx context.Context, opts Options) (*InitResult, error) {
	l := opts.Layout
	res := &InitResult{Root: l.Root}
	created := func(what string) { res.Created = append(res.Created, what) }

	if err := ensureDir(l.Root, created); err != nil {
		return nil, err
	}
	if err := ensureDir(l.KeysDir(), created); err != nil {
		return nil, err
	}
	if _, err := os.Stat(l.AgeIdentity()); errors.Is(err, os.ErrNotExist) {
		if err := keys.GenerateIdentity(l.AgeIdentity(), opts.now()); err != nil {
			return nil, fmt.Errorf("datadir: %w", err)
		}
		created(l.AgeIdentity())
	}
	if _, err := os.Stat(l.Config()); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.Create(l.Config(), []byte(config.Template), 0o600); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("datadir: write config: %w", err)
		}
		created(l.Config())
	}

	anchor, probed, err := probeState(ctx, opts)
	if err != nil {
		return nil, err
	}
	if probed != nil && !opts.ReinitialiseState {
		return nil, probed
	}
	opts.ReadOnly = false
	d, err := Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	res.StateDriver = d.Store.Driver()

	log := audit.New(audit.Config{Clock: opts.Clock})
	if res.StateAnchor, err = anchorState(ctx, d, opts, anchor, probed, log); err != nil {
		return nil, err
	}
	if res.StateAnchor != "" {
		created(res.StateAnchor)
	}
	priv, err := ensureAuditKey(ctx, d, created)
	if err != nil {
		return nil, err
	}
	pub := priv.Public().(ed25519.PublicKey)
	res.AuditKeyID = audit.KeyID(pub)

	madeCA, err := ca.Bootstrap(ctx, d.Keys, l.CAFiles(), d.Config.TrustDomain, opts.now())
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if madeCA {
		created(l.CAFiles().Root())
		root, err := os.ReadFile(l.CAFiles().Root())
		if err != nil {
			return nil, fmt.Errorf("datadir: %w", err)
		}
		sum := sha256.Sum256(root)
		err = d.Store.Update(ctx, func(tx *state.Tx) error {
			_, err := log.Append(ctx, tx, audit.Record{Actor: "system:init", Action: "ca.init", Subject: "root",
				Details: map[string]any{"root_pem_sha256": hex.EncodeToString(sum[:]), "trust_domain": d.Config.TrustDomain}})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("datadir: audit CA creation: %w", err)
		}
	}
	err = d.Store.Update(ctx, func(tx *state.Tx) error {
		if _, err := tx.Meta(ctx, "initialized_at"); errors.Is(err, state.ErrNotFound) {
			now := opts.now().UTC()
			if err := tx.SetMeta(ctx, "initialized_at", now.Format(time.RFC3339)); err != nil {
				return err
			}
			if _, err := log.Append(ctx, tx, audit.Record{
				Actor: "system:init", Action: "server.init", Subject: res.AuditKeyID,
				Details: map[string]any{"audit_key_id": res.AuditKeyID, "state_driver": res.StateDriver},
			}); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		n, err := tx.CountAdminTokens(ctx)
		if err != nil || n > 0 {
			return err
		}
		tok, err := tokens.New(tokens.AdminPrefix)
		if err != nil {
			return err
		}
		if err := tx.InsertAdminToken(ctx, state.AdminToken{ID: tok.ID, Name: "initial", Role: "admin", Hash: tok.Hash, CreatedAt: opts.now()}); err != nil {
			return err
		}
		if _, err := log.Append(ctx, tx, audit.Record{
			Actor: "system:init", Action: "admin_token.create", Subject: tok.ID,
			Details: map[string]any{"name": "initial", "role": "admin"},
		}); err != nil {
			return err
		}
		res.AdminToken, res.AdminTokenID = tok.Secret, tok.ID
		created("admin token " + tok.ID)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("datadir: init state: %w", err)
	}
	// Sign what init wrote and anchor it, so even a first start that stops
	// before the server's first checkpoint leaves the database anchored.
	signer := audit.New(audit.Config{Clock: opts.Clock, Key: priv, Anchor: d})
	if _, _, err := signer.Checkpoint(ctx, d.Store); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return res, nil
}

// probeState reads the anchor before the database is opened (which would
// create a missing SQLite file): a missing or 0-byte state.db of a data dir
// with an anchor or keys is reported here, naming the file. The caller
// refuses it unless reinitialising.
func probeState(ctx context.Context, opts Options) (*Anchor, *StateError, error) {
	l := opts.Layout
	cfg, err := config.Load(l.Config(), opts.getenv())
	if err != nil {
		return nil, nil, err
	}
	ks, err := KeyStore(l, cfg, cfg.Keys.Custody)
	if err != nil {
		return nil, nil, fmt.Errorf("datadir: %w", err)
	}
	a, err := readAnchor(ctx, ks)
	if err != nil || cfg.State.Driver == "postgres" {
		return a, nil, err
	}
	var where string
	if a != nil {
		where = fmt.Sprintf("this data dir's anchor (%s) records state %s", anchorSource(l, ks), a.StateID)
		if a.Checkpoint != nil {
			where += fmt.Sprintf(" with a signed audit checkpoint at entry %d", a.Checkpoint.Seq)
		}
	} else {
		_, err := ks.Get(ctx, AuditKeyName)
		if errors.Is(err, keys.ErrNotFound) {
			return nil, nil, nil // a first start
		}
		if err != nil {
			return nil, nil, fmt.Errorf("datadir: %w", err)
		}
		where = fmt.Sprintf("the key store (%s) holds this data dir's keys", ks.Custody())
	}
	path := StateConfig(l.Root, cfg).SQLitePath
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return a, &StateError{Problem: "is missing", Reinitialisable: true, Detail: fmt.Sprintf("%s does not exist, but %s", path, where)}, nil
	case err != nil:
		return a, nil, fmt.Errorf("datadir: %w", err)
	case fi.Size() == 0:
		return a, &StateError{Problem: "is empty", Reinitialisable: true, Detail: fmt.Sprintf("%s is 0 bytes long, but %s", path, where)}, nil
	}
	return a, nil, nil
}

func ensureDir(path string, created func(string)) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(path, 0o700); err != nil {
			return fmt.Errorf("datadir: %w", err)
		}
		created(path)
		return nil
	case err != nil:
		return fmt.Errorf("datadir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("datadir: %s exists and is not a directory", path)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("datadir: %s is accessible to group or others (mode %v): run chmod 700 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

func ensureAuditKey(ctx context.Context, d *Dir, created func(string)) (ed25519.PrivateKey, error) {
	signer, err := d.Keys.Get(ctx, AuditKeyName)
	if errors.Is(err, keys.ErrNotFound) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, fmt.Errorf("datadir: generate audit key: %w", gerr)
		}
		if err := d.Keys.Put(ctx, AuditKeyName, priv); err != nil {
			return nil, fmt.Errorf("datadir: %w", err)
		}
		if d.Keys.Custody() == "age" {
			created(filepath.Join(d.Layout.KeysDir(), AuditKeyName+".key.age"))
		} else {
			created(AuditKeyName + " key in " + d.Keys.Custody())
		}
		signer, err = priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	priv, ok := signer.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("datadir: audit key is %T, want Ed25519", signer)
	}
	pub := priv.Public().(ed25519.PublicKey)
	pemBytes := audit.MarshalPublicKey(pub)
	if existing, err := os.ReadFile(d.Layout.AuditPublicKey()); err != nil || string(existing) != string(pemBytes) {
		if err := atomicfile.Write(d.Layout.AuditPublicKey(), pemBytes, 0o644); err != nil {
			return nil, fmt.Errorf("datadir: %w", err)
		}
	}
	return priv, nil
}
