package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// recordingAnchor is an Anchor that keeps what it was given.
type recordingAnchor struct{ got []Checkpoint }

func (a *recordingAnchor) Advance(_ context.Context, c Checkpoint) error {
	a.got = append(a.got, c)
	return nil
}

// copyDB closes s, copies its file and reopens both: an "older copy" of the
// database, as a backup restored over the live one would be.
func copyDB(t *testing.T, path string, s *state.Store) (*state.Store, *state.Store) {
	t.Helper()
	s.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := path + ".old"
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := state.Open(context.Background(), state.Config{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	old, err := state.Open(context.Background(), state.Config{SQLitePath: cp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close(); old.Close() })
	return live, old
}

// TestAnchorDetectsRollback: the database is rolled back to a copy taken
// before the anchored checkpoint. On its own the old copy verifies (it is a
// consistent chain with valid signatures); against the anchor it fails,
// naming the truncation.
func TestAnchorDetectsRollback(t *testing.T) {
	ctx := context.Background()
	s, path := openSQLite(t)
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	anchor := &recordingAnchor{}
	l := New(Config{Clock: fixedClock(), Key: key, Anchor: anchor})
	appendN(t, l, s, 3)
	if _, _, err := l.Checkpoint(ctx, s); err != nil {
		t.Fatal(err)
	}
	live, old := copyDB(t, path, s)
	appendN(t, l, live, 3)
	cp, ok, err := l.Checkpoint(ctx, live)
	if err != nil || !ok || cp.Seq != 6 {
		t.Fatalf("checkpoint %+v %v %v", cp, ok, err)
	}
	if len(anchor.got) != 2 || anchor.got[1].Seq != 6 {
		t.Fatalf("anchor was given %+v, want checkpoints 3 and 6", anchor.got)
	}
	if _, err := VerifyStore(ctx, old, pub); err != nil {
		t.Fatalf("the old copy alone: %v (it should verify: that is the attack)", err)
	}
	rep, err := VerifyStoreAnchored(ctx, old, pub, &anchor.got[1], "keys/state-anchor.json")
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != 6 || !strings.Contains(ve.Reason, "rolled back") || !strings.Contains(ve.Reason, "keys/state-anchor.json") {
		t.Fatalf("rolled-back database against the anchor: %v, want entry 6 named as truncated", err)
	}
	if rep.AnchoredSeq != 6 || rep.LastSeq != 3 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := VerifyStoreAnchored(ctx, live, pub, &anchor.got[1], "anchor"); err != nil {
		t.Fatalf("the live database against its anchor: %v", err)
	}
	// A forged anchor (signed by another key) is refused, not trusted.
	forged := anchor.got[1]
	forged.Seq = 2
	if _, err := VerifyStoreAnchored(ctx, live, pub, &forged, "anchor"); err == nil {
		t.Fatal("an anchor whose signature does not check was accepted")
	}
}

// TestAnchorDetectsOtherHistory: a database with as many entries but
// another history (another data dir's, or rewritten without the key's
// checkpoints) fails at the anchored entry.
func TestAnchorDetectsOtherHistory(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	a, _ := openSQLite(t)
	b, _ := openSQLite(t)
	anchor := &recordingAnchor{}
	la := New(Config{Clock: fixedClock(), Key: key, Anchor: anchor})
	appendN(t, la, a, 4)
	if _, _, err := la.Checkpoint(ctx, a); err != nil {
		t.Fatal(err)
	}
	lb := New(Config{Clock: func() time.Time { return time.Unix(1, 0) }, Key: key})
	appendN(t, lb, b, 5)
	_, err := VerifyStoreAnchored(ctx, b, pub, &anchor.got[0], "anchor")
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != 4 || !strings.Contains(ve.Reason, "another history") {
		t.Fatalf("other history: %v", err)
	}
}

// TestForgedCheckpointIsNotAnchored: a checkpoint row written into the
// database by someone without the audit key must not move the anchor.
func TestForgedCheckpointIsNotAnchored(t *testing.T) {
	ctx := context.Background()
	s, _ := openSQLite(t)
	key := newKey(t)
	anchor := &recordingAnchor{}
	l := New(Config{Clock: fixedClock(), Key: key, Anchor: anchor})
	appendN(t, l, s, 2)
	err := s.Update(ctx, func(tx *state.Tx) error {
		_, head, err := tx.AuditHead(ctx)
		if err != nil {
			return err
		}
		return tx.InsertCheckpoint(ctx, state.CheckpointRow{Seq: 2, HeadHash: head, Time: time.Now(), KeyID: "forged", Signature: make([]byte, 64)})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Checkpoint(ctx, s); err == nil || !strings.Contains(err.Error(), "not anchoring") {
		t.Fatalf("forged checkpoint: %v", err)
	}
	if len(anchor.got) != 0 {
		t.Fatalf("a forged checkpoint was anchored: %+v", anchor.got)
	}
}
