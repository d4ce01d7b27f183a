package datadir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/storage/state"
)

// initDir initialises a data dir and returns its layout and state.db path.
func initDir(t *testing.T) (Layout, string) {
	t.Helper()
	l := Layout{Root: filepath.Join(t.TempDir(), "data")}
	if _, err := Init(context.Background(), Options{Layout: l}); err != nil {
		t.Fatal(err)
	}
	return l, filepath.Join(l.Root, "state.db")
}

// work appends n audited entries as the running server would, and
// checkpoints them (which advances the anchor).
func work(t *testing.T, l Layout, n int) audit.Checkpoint {
	t.Helper()
	ctx := context.Background()
	d, err := Open(ctx, Options{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key, err := d.AuditKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := audit.New(audit.Config{Key: key, Anchor: d})
	for i := 0; i < n; i++ {
		err := d.Store.Update(ctx, func(tx *state.Tx) error {
			_, err := log.Append(ctx, tx, audit.Record{Actor: "admin:test", Action: "cert.revoke", Subject: "serial"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cp, _, err := log.Checkpoint(ctx, d.Store)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantRefused checks that Init refused with a StateError naming problem and
// the recovery paths.
func wantRefused(t *testing.T, err error, problem string, reinitialisable bool) {
	t.Helper()
	var se *StateError
	if !errors.As(err, &se) || !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("init: %v, want a refusal (%s)", err, problem)
	}
	msg := err.Error()
	if se.Problem != problem || !strings.Contains(msg, problem) || !strings.Contains(msg, "backup") || se.Reinitialisable != reinitialisable ||
		strings.Contains(msg, "--reinitialise-state`, which") != reinitialisable {
		t.Fatalf("refusal %q (problem %q, reinitialisable %v), want problem %q, reinitialisable %v", msg, se.Problem, se.Reinitialisable, problem, reinitialisable)
	}
}

// TestWipedStateIsRefused is the attack of issue 14 item 3: with the CA and
// keys in place, the state database is deleted, emptied, swapped for another
// data dir's, or rolled back to an older copy. Each start refuses, naming the
// problem, and creates nothing (no admin token, no new audit log).
func TestWipedStateIsRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, problem   string
		reinitialisable bool
		damage          func(t *testing.T, l Layout, db string)
	}{
		{"deleted", "is missing", true, func(t *testing.T, l Layout, db string) {
			os.Remove(db)
		}},
		{"truncated to 0 bytes", "is empty", true, func(t *testing.T, l Layout, db string) {
			os.Truncate(db, 0)
		}},
		{"replaced by an empty database", "empty", true, func(t *testing.T, l Layout, db string) {
			os.Remove(db)
			s, err := state.Open(ctx, state.Config{SQLitePath: db})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}},
		{"another data dir's", "is another data dir's", false, func(t *testing.T, l Layout, db string) {
			_, other := initDir(t)
			copyFile(t, other, db)
		}},
		{"rolled back to an older copy", "was rolled back", true, func(t *testing.T, l Layout, db string) {
			copyFile(t, db, db+".backup")
			work(t, l, 3) // revocations after the backup, anchored
			copyFile(t, db+".backup", db)
		}},
		{"keys and database without the anchor", "is missing", true, func(t *testing.T, l Layout, db string) {
			os.Remove(filepath.Join(l.KeysDir(), "state-anchor.json"))
			os.Remove(db)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, db := initDir(t)
			work(t, l, 2)
			tc.damage(t, l, db)
			before, _ := os.Stat(db)
			_, err := Init(ctx, Options{Layout: l})
			wantRefused(t, err, tc.problem, tc.reinitialisable)
			after, _ := os.Stat(db)
			if (before == nil) != (after == nil) || (before != nil && before.Size() != after.Size()) {
				t.Fatalf("the refused start changed %s", db)
			}
			// The refusal stands on every later start.
			_, err = Init(ctx, Options{Layout: l})
			wantRefused(t, err, tc.problem, tc.reinitialisable)
		})
	}
}

// TestReinitialiseStateIsAudited: the deliberate recovery keeps what the
// database holds, records the anchor it replaced as an audit entry (the
// first of an empty database's new log), mints an admin token for an empty
// database, and anchors anew so the next start needs no flag.
func TestReinitialiseStateIsAudited(t *testing.T) {
	ctx := context.Background()
	t.Run("empty database", func(t *testing.T) {
		l, db := initDir(t)
		old := work(t, l, 2)
		d, _ := Open(ctx, Options{Layout: l})
		oldAnchor, _ := d.ReadAnchor(ctx)
		d.Close()
		os.Remove(db)
		res, err := Init(ctx, Options{Layout: l, ReinitialiseState: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.AdminToken == "" || !strings.Contains(res.StateAnchor, "reinitialised") {
			t.Fatalf("reinitialise: %+v", res)
		}
		entries := auditEntries(t, l)
		if len(entries) == 0 || entries[0].Action != "state.reinitialise" || entries[0].Seq != 1 {
			t.Fatalf("first entry of the new log: %+v", entries)
		}
		for _, want := range []string{oldAnchor.StateID, old.HeadHash.String(), `"checkpoint_seq":5`, `"problem":"is missing"`} {
			if !strings.Contains(entries[0].Details, want) {
				t.Errorf("state.reinitialise details %s lack %s", entries[0].Details, want)
			}
		}
		d, _ = Open(ctx, Options{Layout: l})
		newAnchor, _ := d.ReadAnchor(ctx)
		d.Close()
		if newAnchor.StateID == oldAnchor.StateID || newAnchor.Checkpoint == nil || newAnchor.Checkpoint.Seq != int64(len(entries)) {
			t.Fatalf("new anchor %+v (old %+v), want a new state id anchored at the new head", newAnchor, oldAnchor)
		}
		if _, err := Init(ctx, Options{Layout: l}); err != nil {
			t.Fatalf("start after reinitialising: %v", err)
		}
		if _, err := Init(ctx, Options{Layout: l, ReinitialiseState: true}); err == nil || !strings.Contains(err.Error(), "nothing to reinitialise") {
			t.Fatalf("the flag on a matching database: %v", err)
		}
	})
	t.Run("rolled back database", func(t *testing.T) {
		l, db := initDir(t)
		copyFile(t, db, db+".backup")
		lost := work(t, l, 3)
		copyFile(t, db+".backup", db)
		if _, err := Init(ctx, Options{Layout: l, ReinitialiseState: true}); err != nil {
			t.Fatal(err)
		}
		entries := auditEntries(t, l)
		last := entries[len(entries)-1]
		if last.Action != "state.reinitialise" || !strings.Contains(last.Details, `"problem":"was rolled back"`) || !strings.Contains(last.Details, lost.HeadHash.String()) {
			t.Fatalf("last entry %+v, want state.reinitialise recording the lost checkpoint", last)
		}
		if _, err := Init(ctx, Options{Layout: l}); err != nil {
			t.Fatalf("start after reinitialising: %v", err)
		}
	})
	t.Run("another data dir's database is never adopted", func(t *testing.T) {
		l, db := initDir(t)
		_, other := initDir(t)
		copyFile(t, other, db)
		_, err := Init(ctx, Options{Layout: l, ReinitialiseState: true})
		wantRefused(t, err, "is another data dir's", false)
	})
}

// TestAnchorAdoptsExistingState: a data dir from before anchors (no anchor
// file) anchors the database it has, and audits that it did.
func TestAnchorAdoptsExistingState(t *testing.T) {
	ctx := context.Background()
	l, _ := initDir(t)
	work(t, l, 1)
	os.Remove(filepath.Join(l.KeysDir(), "state-anchor.json"))
	res, err := Init(ctx, Options{Layout: l})
	if err != nil || !strings.Contains(res.StateAnchor, "existing database") {
		t.Fatalf("adopt: %+v %v", res, err)
	}
	entries := auditEntries(t, l)
	if entries[len(entries)-1].Action != "state.anchor" {
		t.Fatalf("last entry %+v, want state.anchor", entries[len(entries)-1])
	}
	d, _ := Open(ctx, Options{Layout: l})
	defer d.Close()
	if a, err := CheckState(ctx, d, nil); err != nil || a == nil || a.Checkpoint == nil || a.Checkpoint.Seq != int64(len(entries)) {
		t.Fatalf("anchor after adopting: %+v %v", a, err)
	}
}

func auditEntries(t *testing.T, l Layout) []state.AuditRow {
	t.Helper()
	ctx := context.Background()
	d, err := Open(ctx, Options{Layout: l, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []state.AuditRow
	err = d.Store.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostgresStateAnchored: replicas share one PostgreSQL database and one
// anchor; pointing the data dir at another (empty) database is refused, and
// the right one is accepted again.
func TestPostgresStateAnchored(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dsn, other := pg.NewDatabase(t), pg.NewDatabase(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(root, 0o700)
	os.WriteFile(filepath.Join(root, "trustamp.yaml"), []byte("state:\n  driver: postgres\n"), 0o600)
	opts := func(d string) Options {
		return Options{Layout: Layout{Root: root}, Getenv: func(k string) string {
			if k == "TRUSTAMP_POSTGRES_DSN" {
				return d
			}
			return ""
		}}
	}
	if _, err := Init(ctx, opts(dsn)); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, opts(dsn)); err != nil {
		t.Fatalf("second replica on the same database: %v", err)
	}
	_, err := Init(ctx, opts(other))
	wantRefused(t, err, "empty", true)
	if !strings.Contains(err.Error(), "PostgreSQL") {
		t.Errorf("refusal %q does not name the database", err)
	}
	if _, err := Init(ctx, opts(dsn)); err != nil {
		t.Fatalf("back on the right database: %v", err)
	}
}
