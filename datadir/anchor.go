package datadir

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
)

// AnchorFormat names the state anchor's JSON format.
const AnchorFormat = "trustamp-state-anchor/v1"

// metaStateID is the meta key under which the database records which data
// dir state it is; the anchor records the same id.
const metaStateID = "state_id"

// Anchor is what the data dir records, next to its keys (age: the keys
// directory; Vault KV: Vault), about the state database it must be used
// with: the database's state id and the latest signed audit checkpoint. A
// database that is missing, emptied, another data dir's, or rolled back to
// before the checkpoint does not match, and serve refuses it rather than
// silently start a new CRL, OCSP and audit history.
type Anchor struct {
	Format  string `json:"format"`
	StateID string `json:"state_id"`
	// Checkpoint is the latest checkpoint seen; nil before the first one.
	Checkpoint *audit.Checkpoint `json:"checkpoint,omitempty"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

func parseAnchor(b []byte) (*Anchor, error) {
	if b == nil {
		return nil, nil
	}
	var a Anchor
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("datadir: state anchor: %w", err)
	}
	if a.Format != AnchorFormat || a.StateID == "" {
		return nil, fmt.Errorf("datadir: state anchor: format %q with state id %q, want %s with an id", a.Format, a.StateID, AnchorFormat)
	}
	return &a, nil
}

func (a *Anchor) marshal(now time.Time) ([]byte, error) {
	a.Format, a.UpdatedAt = AnchorFormat, now.UTC().Truncate(time.Second)
	return json.MarshalIndent(a, "", "  ")
}

// ErrStateMismatch is what every *StateError wraps: the state database is
// not the one the data dir's anchor records.
var ErrStateMismatch = errors.New("the state database does not match this data dir's state anchor")

// StateError says what is wrong with the state database and how to recover.
type StateError struct {
	// Problem is a short name: missing, empty, different, rolled back,
	// other history, no state id, bad anchor.
	Problem string
	// Detail is the sentence that explains it.
	Detail string
	// Reinitialisable is false when --reinitialise-state cannot help (the
	// database is another data dir's).
	Reinitialisable bool
}

func (e *StateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "datadir: state database %s: %s.\n", e.Problem, e.Detail)
	b.WriteString("Serving it would start a new CRL, OCSP and audit history and forget every revocation, so trustamp refuses.\nRecover by either:\n")
	b.WriteString("  - restoring the state database from a backup (stop trustamp, restore it, start again); or\n")
	if e.Reinitialisable {
		b.WriteString("  - accepting it deliberately with `trustamp serve --reinitialise-state`, which keeps what the database holds\n" +
			"    (nothing, if it is empty), records the anchor it replaces in the audit log and anchors the database anew.")
	} else {
		b.WriteString("  - pointing state.sqlite.path or the PostgreSQL DSN at this data dir's own database: --reinitialise-state\n" +
			"    does not adopt another data dir's database (move it aside first to start empty).")
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrStateMismatch) true.
func (e *StateError) Unwrap() error { return ErrStateMismatch }

func anchorStore(ks keys.Store) (keys.AnchorStore, error) {
	as, ok := ks.(keys.AnchorStore)
	if !ok {
		return nil, fmt.Errorf("datadir: key custody %s cannot keep the state anchor", ks.Custody())
	}
	return as, nil
}

// AnchorSource names where the anchor is kept, for messages.
func (d *Dir) AnchorSource() string { return anchorSource(d.Layout, d.Keys) }

func anchorSource(l Layout, ks keys.Store) string {
	if ks.Custody() == "age" {
		return filepath.Join(l.KeysDir(), "state-anchor.json")
	}
	return "the " + ks.Custody() + " key store"
}

func readAnchor(ctx context.Context, ks keys.Store) (*Anchor, error) {
	as, err := anchorStore(ks)
	if err != nil {
		return nil, err
	}
	b, err := as.ReadAnchor(ctx)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return parseAnchor(b)
}

// ReadAnchor returns the data dir's state anchor, nil when it has none (a
// data dir from before anchors, or one not initialised).
func (d *Dir) ReadAnchor(ctx context.Context) (*Anchor, error) { return readAnchor(ctx, d.Keys) }

// Advance records c as the anchored checkpoint if it is newer than the one
// recorded; it implements audit.Anchor, so every checkpoint the server makes
// (or sees another replica make) is kept outside the database.
func (d *Dir) Advance(ctx context.Context, c audit.Checkpoint) error {
	as, err := anchorStore(d.Keys)
	if err != nil {
		return err
	}
	return as.UpdateAnchor(ctx, func(cur []byte) ([]byte, error) {
		a, err := parseAnchor(cur)
		if err != nil {
			return nil, err
		}
		if a == nil {
			return nil, errors.New("datadir: no state anchor to advance (start trustamp serve to create it)")
		}
		if a.Checkpoint != nil && a.Checkpoint.Seq >= c.Seq {
			return nil, nil
		}
		a.Checkpoint = &c
		return a.marshal(time.Now())
	})
}

// dbState is what the database says about itself, for comparing with the
// anchor.
type dbState struct {
	stateID     string
	initialised bool
	head        int64
	// At the anchored checkpoint's entry: the entry's hash (nil when the
	// chain has no such entry) and whether the checkpoint row is there.
	anchoredHash       []byte
	anchoredCheckpoint bool
}

func (s dbState) empty() bool { return s.stateID == "" && !s.initialised && s.head == 0 }

func readDBState(ctx context.Context, store audit.Viewer, a *Anchor) (dbState, error) {
	var st dbState
	err := store.View(ctx, func(tx *state.Tx) error {
		id, err := tx.Meta(ctx, metaStateID)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		st.stateID = id
		if _, err := tx.Meta(ctx, "initialized_at"); err == nil {
			st.initialised = true
		} else if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if st.head, _, err = tx.AuditHead(ctx); err != nil {
			return err
		}
		if a == nil || a.Checkpoint == nil {
			return nil
		}
		e, err := tx.AuditEntry(ctx, a.Checkpoint.Seq)
		if err == nil {
			st.anchoredHash = e.Hash
		} else if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		cps, err := tx.Checkpoints(ctx, a.Checkpoint.Seq)
		if err != nil {
			return err
		}
		st.anchoredCheckpoint = len(cps) > 0 && cps[0].Seq == a.Checkpoint.Seq && bytes.Equal(cps[0].HeadHash, a.Checkpoint.HeadHash)
		return nil
	})
	if err != nil {
		return dbState{}, fmt.Errorf("datadir: read state: %w", err)
	}
	return st, nil
}

// compare checks the database against the anchor; pub (may be nil) checks
// the anchored checkpoint's signature.
func compare(a *Anchor, st dbState, pub ed25519.PublicKey, db, source string) *StateError {
	cp := a.Checkpoint
	where := fmt.Sprintf("this data dir's anchor (%s) records state %s", source, a.StateID)
	if cp != nil {
		where += fmt.Sprintf(" with a signed audit checkpoint at entry %d (%s)", cp.Seq, cp.Time.UTC().Format(time.RFC3339))
	}
	switch {
	case st.empty():
		return &StateError{Problem: "empty", Reinitialisable: true, Detail: fmt.Sprintf("%s holds no trustamp state, but %s", db, where)}
	case st.stateID == "":
		return &StateError{Problem: "has no state id", Detail: fmt.Sprintf("%s holds state but no state id (not a database this data dir wrote, or its meta table was altered), but %s", db, where)}
	case st.stateID != a.StateID:
		return &StateError{Problem: "is another data dir's", Detail: fmt.Sprintf("%s holds state %s, but %s", db, st.stateID, where)}
	case cp == nil:
		return nil
	case pub != nil && !cp.VerifySignature(pub):
		return &StateError{Problem: "cannot be checked (bad anchor)", Reinitialisable: true,
			Detail: fmt.Sprintf("the checkpoint in %s does not verify under the audit key %s (the anchor was altered)", source, audit.KeyID(pub))}
	case st.head < cp.Seq:
		return &StateError{Problem: "was rolled back", Reinitialisable: true,
			Detail: fmt.Sprintf("the audit log of %s ends at entry %d, older than the checkpoint at entry %d anchored in %s (signed %s): the database was truncated or replaced by an older copy, and entries %d-%d are lost",
				db, st.head, cp.Seq, source, cp.Time.UTC().Format(time.RFC3339), st.head+1, cp.Seq)}
	case !bytes.Equal(st.anchoredHash, cp.HeadHash):
		return &StateError{Problem: "holds another history", Reinitialisable: true,
			Detail: fmt.Sprintf("entry %d of %s hashes to %x, but the checkpoint anchored in %s signs %x", cp.Seq, db, st.anchoredHash, source, []byte(cp.HeadHash))}
	case !st.anchoredCheckpoint:
		return &StateError{Problem: "lost a checkpoint", Reinitialisable: true,
			Detail: fmt.Sprintf("%s lacks the signed checkpoint at entry %d that %s records", db, cp.Seq, source)}
	}
	return nil
}

// dbName names the state database for messages.
func dbName(l Layout, d *Dir) string {
	if d.Store.Driver() == "postgres" {
		return "the PostgreSQL database"
	}
	return StateConfig(l.Root, d.Config).SQLitePath
}

// CheckState compares the state database with the anchor, as serve does at
// start: it returns the anchor (nil when the data dir has none) and a
// *StateError when they do not match. pub checks the anchored checkpoint's
// signature; nil skips that. It only reads, so it works on a ReadOnly Dir.
func CheckState(ctx context.Context, d *Dir, pub ed25519.PublicKey) (*Anchor, error) {
	a, err := d.ReadAnchor(ctx)
	if err != nil || a == nil {
		return a, err
	}
	st, err := readDBState(ctx, d.Store, a)
	if err != nil {
		return a, err
	}
	if serr := compare(a, st, pub, dbName(d.Layout, d), d.AnchorSource()); serr != nil {
		return a, serr
	}
	return a, nil
}

func newStateID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("datadir: state id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// anchorState makes the database and the anchor agree at Init, or refuses
// (a *StateError) when they cannot without losing history silently. It
// returns what it did, for the operator: "" when nothing changed.
func anchorState(ctx context.Context, d *Dir, opts Options, anchor *Anchor, probed *StateError, log *audit.Log) (string, error) {
	st, err := readDBState(ctx, d.Store, anchor)
	if err != nil {
		return "", err
	}
	source, db := d.AnchorSource(), dbName(d.Layout, d)
	var pub ed25519.PublicKey
	_, kerr := d.Keys.Get(ctx, AuditKeyName)
	hasKeys := kerr == nil
	if kerr != nil && !errors.Is(kerr, keys.ErrNotFound) {
		return "", fmt.Errorf("datadir: %w", kerr)
	}
	if hasKeys {
		k, err := d.AuditKey(ctx)
		if err != nil {
			return "", err
		}
		pub = k.Public().(ed25519.PublicKey)
	}
	var (
		record   map[string]any // details of a state.reinitialise entry
		adopting bool
	)
	switch {
	case anchor == nil && st.empty() && hasKeys:
		serr := &StateError{Problem: "empty", Reinitialisable: true,
			Detail: fmt.Sprintf("%s holds no trustamp state, but the key store (%s) holds this data dir's keys and no state anchor says which database they belong to", db, d.Keys.Custody())}
		if !opts.ReinitialiseState {
			return "", serr
		}
		record = map[string]any{"problem": serr.Problem, "previous_anchor": nil}
	case anchor == nil && st.empty():
		// First start.
	case anchor == nil:
		// A data dir from before anchors: anchor the database it uses.
		adopting = true
	default:
		serr := compare(anchor, st, pub, db, source)
		switch {
		case serr == nil && opts.ReinitialiseState:
			return "", fmt.Errorf("datadir: --reinitialise-state: %s matches the anchor in %s (state %s); there is nothing to reinitialise: start without the flag", db, source, anchor.StateID)
		case serr == nil:
			return "", nil
		case !opts.ReinitialiseState || !serr.Reinitialisable:
			return "", serr
		}
		prev := map[string]any{"state_id": anchor.StateID}
		if cp := anchor.Checkpoint; cp != nil {
			prev["checkpoint_seq"], prev["checkpoint_head"], prev["checkpoint_time"] = cp.Seq, cp.HeadHash.String(), cp.Time.UTC().Format(audit.TimeFormat)
		}
		record = map[string]any{"problem": serr.Problem, "previous_anchor": prev, "database_head_seq": st.head}
	}

	if record != nil && probed != nil {
		record["problem"] = probed.Problem // "is missing" says more than "empty"
	}
	newID, err := newStateID()
	if err != nil {
		return "", err
	}
	var id string
	err = d.Store.Update(ctx, func(tx *state.Tx) error {
		// The chain lock serialises replicas initialising one database.
		if _, _, err := tx.AuditHead(ctx); err != nil {
			return err
		}
		cur, err := tx.Meta(ctx, metaStateID)
		switch {
		case errors.Is(err, state.ErrNotFound):
			id = newID
			if err := tx.SetMeta(ctx, metaStateID, id); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			id = cur
		}
		switch {
		case record != nil:
			record["state_id"] = id
			_, err = log.Append(ctx, tx, audit.Record{Actor: "system:reinitialise-state", Action: "state.reinitialise", Subject: id, Details: record})
			return err
		case adopting:
			_, err = log.Append(ctx, tx, audit.Record{Actor: "system:init", Action: "state.anchor", Subject: id,
				Details: map[string]any{"state_id": id, "anchor": source}})
			return err
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("datadir: record state id: %w", err)
	}
	as, err := anchorStore(d.Keys)
	if err != nil {
		return "", err
	}
	err = as.UpdateAnchor(ctx, func(cur []byte) ([]byte, error) {
		a, err := parseAnchor(cur)
		if err != nil && record == nil {
			return nil, err
		}
		switch {
		case a != nil && a.StateID == id && record == nil:
			return nil, nil // another replica anchored it first
		case a != nil && record == nil:
			return nil, fmt.Errorf("datadir: %s now records state %s, not %s: another process changed it; start again", source, a.StateID, id)
		}
		return (&Anchor{StateID: id}).marshal(time.Now())
	})
	if err != nil {
		return "", err
	}
	switch {
	case record != nil:
		return fmt.Sprintf("reinitialised state %s (the replaced anchor is recorded in the audit log) in %s", id, source), nil
	case adopting:
		return fmt.Sprintf("state anchor for the existing database (state %s) in %s", id, source), nil
	}
	return fmt.Sprintf("state anchor (state %s) in %s", id, source), nil
}
