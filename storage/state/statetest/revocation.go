package statetest

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

func testRevocations(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for i, serial := range []string{"a1", "a2", "b1"} {
		c := state.Certificate{Serial: serial, UID: "agent-" + serial[:1], NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Duration(i+1) * time.Hour), Status: state.CertConfirmed, IssuedAt: now, Profile: "default"}
		if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertCertificate(ctx, c) }); err != nil {
			t.Fatal(err)
		}
	}
	revoke := func(serial, reason string) (state.Revocation, error) {
		var out state.Revocation
		err := s.Update(ctx, func(tx *state.Tx) (err error) {
			out, err = tx.RevokeCertificate(ctx, state.Revocation{ID: "r-" + serial + reason, RequestID: "req", Serial: serial,
				Reason: reason, Actor: "admin:x", RequestedAt: now, RevokedAt: now})
			return err
		})
		return out, err
	}
	r1, err := revoke("a1", "keyCompromise")
	if err != nil {
		t.Fatal(err)
	}
	if r1.UID != "agent-a" || r1.PriorStatus != state.CertConfirmed || r1.ChangeSeq != 1 {
		t.Fatalf("revocation %+v", r1)
	}
	if _, err := revoke("a1", "superseded"); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second revocation of a1: %v, want ErrConflict", err)
	}
	if _, err := revoke("zz", "superseded"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("revoking an unknown serial: %v, want ErrNotFound", err)
	}
	if _, err := revoke("b1", "certificateHold"); err != nil {
		t.Fatal(err)
	}
	cert := mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateBySerial(ctx, "a1") })
	if cert.Status != state.CertRevoked {
		t.Fatalf("a1 status %s", cert.Status)
	}
	// Undo restores the prior status and frees the serial for a new revocation.
	if err := s.Update(ctx, func(tx *state.Tx) error {
		_, err := tx.UndoRevocation(ctx, "b1", "security:y", "false alarm", now.Add(time.Minute))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cert = mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateBySerial(ctx, "b1") })
	if cert.Status != state.CertConfirmed {
		t.Fatalf("b1 after undo: %s", cert.Status)
	}
	if _, err := revoke("b1", "keyCompromise"); err != nil {
		t.Fatalf("revoke after undo: %v", err)
	}
	// In force at now: a1 and b1 (the second revocation). a1 expires after one hour.
	inForce := mustView(t, s, func(tx *state.Tx) ([]state.RevokedSerial, error) { return tx.RevokedSerials(ctx, now) })
	sort.Slice(inForce, func(i, j int) bool { return inForce[i].Serial < inForce[j].Serial })
	if len(inForce) != 2 || inForce[1].Serial != "b1" || inForce[1].Reason != "keyCompromise" || inForce[1].UID != "agent-b" ||
		!inForce[1].RevokedAt.Equal(now) {
		t.Fatalf("in force: %+v", inForce)
	}
	later := mustView(t, s, func(tx *state.Tx) ([]state.RevokedSerial, error) {
		return tx.RevokedSerials(ctx, now.Add(90*time.Minute))
	})
	if len(later) != 1 || later[0].Serial != "b1" {
		t.Fatalf("after a1 expired: %+v", later)
	}
	// Changes come in order; an undo moves its row to the undo's sequence
	// number, so a replica past the revocation still sees the undo.
	changes := mustView(t, s, func(tx *state.Tx) ([]state.Revocation, error) { return tx.RevocationChanges(ctx, 1, 100) })
	if len(changes) != 2 || changes[0].Serial != "b1" || changes[0].UndoneAt.IsZero() || changes[0].ChangeSeq != 3 ||
		changes[1].ChangeSeq != 4 || !changes[1].UndoneAt.IsZero() {
		t.Fatalf("changes after 1: %+v", changes)
	}
	all := mustView(t, s, func(tx *state.Tx) ([]state.Revocation, error) {
		return tx.RevocationsRequested(ctx, now, now.Add(time.Second))
	})
	if len(all) != 3 {
		t.Fatalf("requested in window: %d, want 3", len(all))
	}
	// Disconnect and presentation marks keep the latest time and add counts.
	if err := s.Update(ctx, func(tx *state.Tx) error {
		if err := tx.MarkDisconnected(ctx, "a1", now.Add(2*time.Millisecond), 1); err != nil {
			return err
		}
		if err := tx.MarkDisconnected(ctx, "a1", now.Add(time.Millisecond), 2); err != nil {
			return err
		}
		return tx.MarkPresented(ctx, "a1", 2, now.Add(time.Second))
	}); err != nil {
		t.Fatal(err)
	}
	r := mustView(t, s, func(tx *state.Tx) (state.Revocation, error) { return tx.RevocationInForce(ctx, "a1") })
	if !r.DisconnectedAt.Equal(now.Add(2*time.Millisecond)) || r.DisconnectedConns != 3 || r.Presented != 2 ||
		!r.LastPresentedAt.Equal(now.Add(time.Second)) {
		t.Fatalf("marks: %+v", r)
	}
}

func testQuarantine(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	q := state.Quarantine{UID: "u1", Reason: "keyCompromise", Actor: "security:x", RequestID: "r1", Since: now}
	for i, want := range []bool{true, false} {
		var added bool
		if err := s.Update(ctx, func(tx *state.Tx) (err error) { added, err = tx.PutQuarantine(ctx, q); return err }); err != nil {
			t.Fatal(err)
		}
		if added != want {
			t.Fatalf("put %d: added=%v", i, added)
		}
	}
	got := mustView(t, s, func(tx *state.Tx) (state.Quarantine, error) { return tx.QuarantineOf(ctx, "u1") })
	if got.Reason != "keyCompromise" || !got.Since.Equal(now) {
		t.Fatalf("quarantine %+v", got)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { _, err := tx.ReleaseQuarantine(ctx, "u1"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { _, err := tx.ReleaseQuarantine(ctx, "u1"); return err }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("second release: %v", err)
	}
}

// testCounters checks that counters never repeat a value under concurrent
// writers, and that an older CRL never replaces a newer one.
func testCounters(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	var (
		mu   sync.Mutex
		seen = map[int64]bool{}
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				var v int64
				if err := s.Update(ctx, func(tx *state.Tx) (err error) {
					v, err = tx.NextCounter(ctx, state.CounterCRLNumber)
					return err
				}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[v] {
					t.Errorf("counter value %d handed out twice", v)
				}
				seen[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 80 || !seen[80] {
		t.Fatalf("%d distinct values, want 1..80", len(seen))
	}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	put := func(n int64) bool {
		var ok bool
		if err := s.Update(ctx, func(tx *state.Tx) (err error) {
			ok, err = tx.PutCRL(ctx, state.CRL{Issuer: "k", Number: n, ThisUpdate: now, NextUpdate: now.Add(time.Hour), DER: []byte{byte(n)}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !put(5) || put(4) || !put(6) {
		t.Fatal("PutCRL: want 5 stored, 4 refused, 6 stored")
	}
	c := mustView(t, s, func(tx *state.Tx) (state.CRL, error) { return tx.LatestCRL(ctx, "k") })
	if c.Number != 6 || c.DER[0] != 6 {
		t.Fatalf("latest CRL %d", c.Number)
	}
	if _, err := viewErr(s, func(tx *state.Tx) (state.CRL, error) { return tx.LatestCRL(ctx, "other") }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("CRL of unknown issuer: %v", err)
	}
}
