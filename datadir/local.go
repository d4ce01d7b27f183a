package datadir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

// localTokenName names the admin token serve mints for local CLI use.
const localTokenName = "local-cli"

// LocalCredential lets CLI commands on the server's machine reach its admin
// API with `--data DIR` alone. Whoever can read it can already read the
// data dir's keys, so it grants nothing new; it is replaced (and the old
// token revoked) on every start.
type LocalCredential struct {
	Server string `json:"server"`
	Token  string `json:"token"`
	CAFile string `json:"ca_file"`
}

// WriteLocalCredential mints a fresh admin token for the local CLI, revokes
// the previous one, audits both, and writes the credential file (0600).
func (d *Dir) WriteLocalCredential(ctx context.Context, log *audit.Log, server string, now time.Time) error {
	tok, err := tokens.New(tokens.AdminPrefix)
	if err != nil {
		return err
	}
	err = d.Store.Update(ctx, func(tx *state.Tx) error {
		revoked, err := tx.RevokeAdminTokensNamed(ctx, localTokenName, now)
		if err != nil {
			return err
		}
		if err := tx.InsertAdminToken(ctx, state.AdminToken{ID: tok.ID, Name: localTokenName, Role: "admin", Hash: tok.Hash, CreatedAt: now}); err != nil {
			return err
		}
		_, err = log.Append(ctx, tx, audit.Record{Actor: "system:serve", Action: "admin_token.create", Subject: tok.ID,
			Details: map[string]any{"name": localTokenName, "role": "admin", "replaced": revoked, "file": d.Layout.LocalCredential()}})
		return err
	})
	if err != nil {
		return fmt.Errorf("datadir: local credential: %w", err)
	}
	b, _ := json.MarshalIndent(LocalCredential{Server: server, Token: tok.Secret, CAFile: d.Layout.CAFiles().Root()}, "", "  ")
	if err := os.MkdirAll(filepath.Dir(d.Layout.LocalCredential()), 0o700); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return atomicfile.Write(d.Layout.LocalCredential(), b, 0o600)
}

// ReadLocalCredential reads what serve left for the local CLI.
func ReadLocalCredential(l Layout) (LocalCredential, error) {
	b, err := os.ReadFile(l.LocalCredential())
	if errors.Is(err, os.ErrNotExist) {
		return LocalCredential{}, fmt.Errorf("datadir: no local server credential in %s (is `trustamp serve --data %s` running?)", l.Root, l.Root)
	}
	if err != nil {
		return LocalCredential{}, fmt.Errorf("datadir: %w", err)
	}
	var c LocalCredential
	if err := json.Unmarshal(b, &c); err != nil {
		return LocalCredential{}, fmt.Errorf("datadir: %s: %w", l.LocalCredential(), err)
	}
	return c, nil
}
