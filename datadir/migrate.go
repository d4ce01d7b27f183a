package datadir

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
)

// MigratedKey is one key a migration copied (or found already there).
type MigratedKey struct {
	Name        string `json:"name"`
	Fingerprint string `json:"public_key_sha256"`
	Result      string `json:"result"` // "copied" or "already present"
}

// MigrateKeys copies every key from the data dir's custodian to another,
// checks each by reading it back, and audits the move (keys.migrate, with
// public-key fingerprints only). It changes nothing the running server
// uses: keys are never deleted or replaced, so a server (or every replica)
// keeps working on the old custodian until its config names the new one
// and it restarts. A different key already under a name in the target is
// an error, never overwritten.
func MigrateKeys(ctx context.Context, d *Dir, to keys.Store, actor string) ([]MigratedKey, error) {
	if d.Keys.Custody() == to.Custody() {
		return nil, fmt.Errorf("keys are already in %s", to.Custody())
	}
	names, err := d.Keys.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no keys in %s to migrate", d.Keys.Custody())
	}
	auditKey, err := d.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	var out []MigratedKey
	fingerprints := map[string]string{}
	for _, name := range names {
		k, err := d.Keys.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		fp, err := keys.Fingerprint(k)
		if err != nil {
			return nil, err
		}
		m := MigratedKey{Name: name, Fingerprint: fp, Result: "copied"}
		if err := to.Put(ctx, name, k); errors.Is(err, keys.ErrExists) {
			m.Result = "already present"
		} else if err != nil {
			return out, err
		}
		got, err := to.Get(ctx, name)
		if err != nil {
			return out, fmt.Errorf("read %s back from %s: %w", name, to.Custody(), err)
		}
		if gfp, _ := keys.Fingerprint(got); gfp != fp {
			return out, fmt.Errorf("%s already holds a different key named %s (public key sha256 %s, ours %s): not overwriting; resolve it by hand",
				to.Custody(), name, gfp, fp)
		}
		fingerprints[name] = fp
		out = append(out, m)
	}
	if m, err := migrateAnchor(ctx, d, to); err != nil {
		return out, err
	} else if m != nil {
		out = append(out, *m)
	}
	log := audit.New(audit.Config{Key: auditKey})
	err = d.Store.Update(ctx, func(tx *state.Tx) error {
		_, err := log.Append(ctx, tx, audit.Record{Actor: actor, Action: "keys.migrate", Subject: to.Custody(),
			Details: map[string]any{"from": d.Keys.Custody(), "to": to.Custody(), "keys": fingerprints}})
		return err
	})
	if err != nil {
		return out, fmt.Errorf("audit key migration: %w", err)
	}
	return out, nil
}

// migrateAnchor copies the state anchor with the keys, so the new custodian
// knows which database the keys belong to from its first start. A target
// that anchors another state is an error; one that anchors the same state
// keeps the newer checkpoint.
func migrateAnchor(ctx context.Context, d *Dir, to keys.Store) (*MigratedKey, error) {
	src, err := d.ReadAnchor(ctx)
	if err != nil || src == nil {
		return nil, err
	}
	dst, err := anchorStore(to)
	if err != nil {
		return nil, err
	}
	m := &MigratedKey{Name: "state-anchor", Fingerprint: "state " + src.StateID, Result: "copied"}
	err = dst.UpdateAnchor(ctx, func(cur []byte) ([]byte, error) {
		a, err := parseAnchor(cur)
		switch {
		case err != nil:
			return nil, err
		case a == nil:
			return src.marshal(time.Now())
		case a.StateID != src.StateID:
			return nil, fmt.Errorf("%s already anchors state %s, not this data dir's %s: not overwriting; resolve it by hand", to.Custody(), a.StateID, src.StateID)
		case src.Checkpoint == nil || (a.Checkpoint != nil && a.Checkpoint.Seq >= src.Checkpoint.Seq):
			m.Result = "already present"
			return nil, nil
		}
		a.Checkpoint = src.Checkpoint
		return a.marshal(time.Now())
	})
	if err != nil {
		return nil, fmt.Errorf("copy state anchor to %s: %w", to.Custody(), err)
	}
	return m, nil
}
