// Package statetest is the contract every state backend must meet. Each
// backend's test calls Run with a function that opens a fresh, empty store,
// so SQLite and PostgreSQL are held to exactly the same behaviour.
package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// Opener returns a new, empty, migrated store and the Config that opened it
// (so the suite can reopen it). The store is closed by the suite.
type Opener func(t *testing.T) (*state.Store, state.Config)

// Run runs the contract suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"MigrationsIdempotent", testMigrationsIdempotent},
		{"UpdateCommits", testUpdateCommits},
		{"ErrorRollsBack", testErrorRollsBack},
		{"PanicRollsBack", testPanicRollsBack},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"AuditRoundTrip", testAuditRoundTrip},
		{"AuditDuplicateSeqConflicts", testAuditDuplicateSeq},
		{"AuditFilter", testAuditFilter},
		{"AuditHeadSerialisesWriters", testAuditHeadSerialises},
		{"Checkpoints", testCheckpoints},
		{"AdminTokens", testAdminTokens},
		{"Meta", testMeta},
		{"EnrollmentTokens", testEnrollmentTokens},
		{"Agents", testAgents},
		{"Certificates", testCertificates},
		{"ConfirmRetiresPredecessor", testConfirmRetiresPredecessor},
		{"Rotations", testRotations},
		{"Revocations", testRevocations},
		{"Quarantine", testQuarantine},
		{"Counters", testCounters},
		{"Packages", testPackages},
		{"Rollouts", testRollouts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

func openClosed(t *testing.T, open Opener) (*state.Store, state.Config) {
	s, cfg := open(t)
	t.Cleanup(func() { s.Close() })
	return s, cfg
}

func row(seq int64, prev []byte) state.AuditRow {
	return state.AuditRow{
		Seq:      seq,
		Time:     time.Date(2026, 11, 21, 12, 0, int(seq), 123456000, time.UTC),
		Actor:    "admin:test",
		Action:   "test.action",
		Subject:  fmt.Sprintf("subject-%d", seq),
		Details:  `{"k":"v","n":1}`,
		PrevHash: prev,
		Hash:     bytes.Repeat([]byte{byte(seq)}, 32),
	}
}

func testMigrationsIdempotent(t *testing.T, open Opener) {
	ctx := context.Background()
	s, cfg := openClosed(t, open)
	v1, err := s.SchemaVersion(ctx)
	if err != nil || v1 < 1 {
		t.Fatalf("schema version = %d, %v; want >= 1", v1, err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) }); err != nil {
		t.Fatal(err)
	}
	again, err := state.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer again.Close()
	v2, _ := again.SchemaVersion(ctx)
	if v2 != v1 {
		t.Fatalf("schema version after reopen = %d, want %d", v2, v1)
	}
	err = again.View(ctx, func(tx *state.Tx) error {
		_, err := tx.AuditEntry(ctx, 1)
		return err
	})
	if err != nil {
		t.Fatalf("row lost across reopen: %v", err)
	}
}

func testUpdateCommits(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) }); err != nil {
		t.Fatal(err)
	}
	err := s.View(ctx, func(tx *state.Tx) error {
		got, err := tx.AuditEntry(ctx, 1)
		if err != nil {
			return err
		}
		if want := row(1, nil); got.Subject != want.Subject || !got.Time.Equal(want.Time) || len(got.PrevHash) != 0 {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testErrorRollsBack(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertAuditEntry(ctx, row(1, nil)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update error = %v, want the callback's", err)
	}
	assertEmptyChain(t, s)
}

func testPanicRollsBack(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	func() {
		defer func() { recover() }()
		_ = s.Update(ctx, func(tx *state.Tx) error {
			if err := tx.InsertAuditEntry(ctx, row(1, nil)); err != nil {
				return err
			}
			panic("mid-transaction crash")
		})
	}()
	assertEmptyChain(t, s)
	// The writer must still be usable after the panic.
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) }); err != nil {
		t.Fatalf("store unusable after a panic in Update: %v", err)
	}
}

func testViewIsReadOnly(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	err := s.View(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) })
	if err == nil {
		t.Fatal("View allowed a write")
	}
	assertEmptyChain(t, s)
}

func assertEmptyChain(t *testing.T, s *state.Store) {
	t.Helper()
	ctx := context.Background()
	err := s.View(ctx, func(tx *state.Tx) error {
		seq, hash, err := tx.AuditHead(ctx)
		if err != nil {
			return err
		}
		if seq != 0 || hash != nil {
			return fmt.Errorf("head = %d %x, want an empty chain", seq, hash)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testAuditRoundTrip(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	var prev []byte
	for seq := int64(1); seq <= 3; seq++ {
		r := row(seq, prev)
		if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, r) }); err != nil {
			t.Fatal(err)
		}
		prev = r.Hash
	}
	var got []state.AuditRow
	err := s.View(ctx, func(tx *state.Tx) error {
		seq, hash, err := tx.AuditHead(ctx)
		if err != nil {
			return err
		}
		if seq != 3 || !bytes.Equal(hash, row(3, nil).Hash) {
			return fmt.Errorf("head = %d %x, want 3", seq, hash)
		}
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			got = append(got, r)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("scanned %d rows, want 3", len(got))
	}
	for i, r := range got {
		var prev []byte
		if i > 0 {
			prev = got[i-1].Hash
		}
		want := row(int64(i+1), prev)
		if r.Seq != want.Seq || !r.Time.Equal(want.Time) || r.Actor != want.Actor || r.Action != want.Action ||
			r.Subject != want.Subject || r.Details != want.Details || !bytes.Equal(r.PrevHash, want.PrevHash) || !bytes.Equal(r.Hash, want.Hash) {
			t.Errorf("row %d = %+v, want %+v", i, r, want)
		}
	}
}

func testAuditDuplicateSeq(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) }); err != nil {
		t.Fatal(err)
	}
	err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAuditEntry(ctx, row(1, nil)) })
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("duplicate seq: err = %v, want ErrConflict", err)
	}
}

func testAuditFilter(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	err := s.Update(ctx, func(tx *state.Tx) error {
		for seq := int64(1); seq <= 5; seq++ {
			if err := tx.InsertAuditEntry(ctx, row(seq, nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func(f state.AuditFilter) (first int64, n int) {
		err := s.View(ctx, func(tx *state.Tx) error {
			return tx.ScanAudit(ctx, f, func(r state.AuditRow) error {
				if n == 0 {
					first = r.Seq
				}
				n++
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return first, n
	}
	if first, n := count(state.AuditFilter{FromSeq: 4}); first != 4 || n != 2 {
		t.Errorf("FromSeq 4: first %d, n %d; want 4, 2", first, n)
	}
	if first, n := count(state.AuditFilter{Since: row(3, nil).Time}); first != 3 || n != 3 {
		t.Errorf("Since entry 3's time: first %d, n %d; want 3, 3", first, n)
	}
	stop := errors.New("stop")
	err = s.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(state.AuditRow) error { return stop })
	})
	if !errors.Is(err, stop) {
		t.Errorf("callback error not returned: %v", err)
	}
}

// testAuditHeadSerialisesWriters is what keeps the chain linear when many
// goroutines (or replicas) append at once: each reads the head and writes
// head+1, and none may collide.
func testAuditHeadSerialises(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Update(ctx, func(tx *state.Tx) error {
				seq, hash, err := tx.AuditHead(ctx)
				if err != nil {
					return err
				}
				time.Sleep(time.Millisecond) // widen the race window a lock must close
				return tx.InsertAuditEntry(ctx, row(seq+1, hash))
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent append: %v", err)
		}
	}
	var prev []byte
	n := int64(0)
	err := s.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			n++
			if r.Seq != n || !bytes.Equal(r.PrevHash, prev) {
				return fmt.Errorf("entry %d does not link to %d", r.Seq, n-1)
			}
			prev = r.Hash
			return nil
		})
	})
	if err != nil || n != writers {
		t.Fatalf("chain: %d entries, %v; want %d linked entries", n, err, writers)
	}
}

func testCheckpoints(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	err := s.View(ctx, func(tx *state.Tx) error {
		_, err := tx.LatestCheckpoint(ctx)
		return err
	})
	if !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("latest checkpoint of empty log: %v, want ErrNotFound", err)
	}
	at := time.Date(2026, 11, 21, 0, 0, 0, 1000, time.UTC)
	err = s.Update(ctx, func(tx *state.Tx) error {
		for _, seq := range []int64{2, 5} {
			c := state.CheckpointRow{Seq: seq, HeadHash: []byte{byte(seq)}, Time: at, KeyID: "k1", Signature: []byte("sig")}
			if err := tx.InsertCheckpoint(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx *state.Tx) error {
		latest, err := tx.LatestCheckpoint(ctx)
		if err != nil {
			return err
		}
		if latest.Seq != 5 || latest.KeyID != "k1" || !latest.Time.Equal(at) || string(latest.Signature) != "sig" {
			return fmt.Errorf("latest = %+v", latest)
		}
		from3, err := tx.Checkpoints(ctx, 3)
		if err != nil {
			return err
		}
		if len(from3) != 1 || from3[0].Seq != 5 {
			return fmt.Errorf("checkpoints from 3 = %+v, want only 5", from3)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testAdminTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	tok := state.AdminToken{ID: "tok1", Name: "initial", Role: "admin", Hash: bytes.Repeat([]byte{7}, 32), CreatedAt: time.Unix(1700000000, 0).UTC()}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAdminToken(ctx, tok) }); err != nil {
		t.Fatal(err)
	}
	dup := tok
	dup.ID = "tok2"
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertAdminToken(ctx, dup) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("duplicate hash: %v, want ErrConflict", err)
	}
	err := s.View(ctx, func(tx *state.Tx) error {
		got, err := tx.AdminTokenByHash(ctx, tok.Hash)
		if err != nil {
			return err
		}
		if got.ID != tok.ID || got.Role != "admin" || !got.CreatedAt.Equal(tok.CreatedAt) || !got.RevokedAt.IsZero() {
			return fmt.Errorf("got %+v", got)
		}
		if _, err := tx.AdminTokenByHash(ctx, []byte("nope")); !errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("unknown hash: %v, want ErrNotFound", err)
		}
		n, err := tx.CountAdminTokens(ctx)
		if err != nil || n != 1 {
			return fmt.Errorf("count = %d, %v; want 1", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *state.Tx) error {
		n, err := tx.RevokeAdminTokensNamed(ctx, "initial", time.Unix(1700000100, 0))
		if err != nil || n != 1 {
			return fmt.Errorf("revoked %d, %v; want 1", n, err)
		}
		got, err := tx.AdminTokenByHash(ctx, tok.Hash)
		if err != nil || !got.RevokedAt.Equal(time.Unix(1700000100, 0).UTC()) {
			return fmt.Errorf("after revoke: %+v %v", got, err)
		}
		if n, _ := tx.CountAdminTokens(ctx); n != 0 {
			return fmt.Errorf("%d valid tokens after revoke, want 0", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testMeta(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	err := s.Update(ctx, func(tx *state.Tx) error {
		if _, err := tx.Meta(ctx, "k"); !errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("absent key: %v, want ErrNotFound", err)
		}
		if err := tx.SetMeta(ctx, "k", "v1"); err != nil {
			return err
		}
		return tx.SetMeta(ctx, "k", "v2")
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx *state.Tx) error {
		v, err := tx.Meta(ctx, "k")
		if err != nil || v != "v2" {
			return fmt.Errorf("meta = %q, %v; want v2", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
