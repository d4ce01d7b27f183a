package statetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

func testConfirmRetiresPredecessor(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	cert := func(serial, uid, dest string, st state.CertStatus) state.Certificate {
		return state.Certificate{Serial: serial, UID: uid, NotBefore: now, NotAfter: now.Add(time.Hour), Status: st,
			IssuedAt: now, Profile: "default", Destination: dest, RenewAfter: now.Add(40 * time.Minute), OfferHash: []byte{1}}
	}
	err := s.Update(ctx, func(tx *state.Tx) error {
		for _, c := range []state.Certificate{
			cert("old", "a1", "opamp", state.CertConfirmed),
			cert("new", "a1", "opamp", state.CertOffered),
			cert("metrics", "a1", "own_metrics", state.CertConfirmed), // another destination: untouched
			cert("other", "b2", "opamp", state.CertConfirmed),         // another agent: untouched
		} {
			if err := tx.InsertCertificate(ctx, c); err != nil {
				return err
			}
		}
		_, err := tx.ConfirmCertificate(ctx, "new", now.Add(time.Minute))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for serial, want := range map[string]state.CertStatus{"old": state.CertRetired, "new": state.CertConfirmed, "metrics": state.CertConfirmed, "other": state.CertConfirmed} {
		c := mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateBySerial(ctx, serial) })
		if c.Status != want {
			t.Errorf("%s: %s, want %s", serial, c.Status, want)
		}
	}
	byHash := mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateByOfferHash(ctx, "b2", []byte{1}) })
	if byHash.Serial != "other" {
		t.Errorf("by offer hash: %s, want other", byHash.Serial)
	}
	old := mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateBySerial(ctx, "old") })
	if !old.RetiredAt.Equal(now.Add(time.Minute)) || old.Profile != "default" || string(old.OfferHash) != "\x01" {
		t.Errorf("retired certificate %+v", old)
	}
	counts, soonest, err := viewErr2(s, func(tx *state.Tx) (map[state.CertStatus]int, time.Time, error) { return tx.CertCounts(ctx, now) })
	if err != nil || counts[state.CertConfirmed] != 3 || counts[state.CertRetired] != 1 || !soonest.Equal(now.Add(time.Hour)) {
		t.Errorf("counts %v soonest %v err %v", counts, soonest, err)
	}
	exp := mustView(t, s, func(tx *state.Tx) ([]state.Certificate, error) {
		return tx.Certificates(ctx, state.CertFilter{UID: "a1", Statuses: []state.CertStatus{state.CertConfirmed}})
	})
	if len(exp) != 2 {
		t.Errorf("a1 confirmed certificates: %d, want 2", len(exp))
	}
}

func testRotations(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	err := s.Update(ctx, func(tx *state.Tx) error {
		for _, c := range []state.Certificate{
			{Serial: "due", UID: "a1", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), Status: state.CertConfirmed, IssuedAt: now, Profile: "default", RenewAfter: now.Add(-time.Minute)},
			{Serial: "notyet", UID: "b2", NotBefore: now, NotAfter: now.Add(time.Hour), Status: state.CertConfirmed, IssuedAt: now, Profile: "default", RenewAfter: now.Add(time.Minute)},
			{Serial: "busy", UID: "c3", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), Status: state.CertConfirmed, IssuedAt: now, Profile: "default", RenewAfter: now.Add(-time.Minute)},
		} {
			if err := tx.InsertCertificate(ctx, c); err != nil {
				return err
			}
		}
		if err := tx.InsertRotationBatch(ctx, state.RotationBatch{ID: "b1", RequestedBy: "admin:x", Selector: "all", Rate: 5, Total: 1, CreatedAt: now}); err != nil {
			return err
		}
		return tx.PutRotation(ctx, state.Rotation{ID: "r1", BatchID: "b1", UID: "c3", Reason: "operator", State: state.RotationPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	second := state.Rotation{ID: "r2", UID: "c3", Reason: "scheduled", State: state.RotationPending, CreatedAt: now, UpdatedAt: now}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, second) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second open rotation for one agent: %v, want ErrConflict", err)
	}
	// Another destination of the same agent rotates independently.
	metrics := state.Rotation{ID: "r3", UID: "c3", Destination: "own_metrics", Reason: "initial", State: state.RotationPending,
		NextAttemptAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, metrics) }); err != nil {
		t.Fatalf("rotation for a second destination: %v", err)
	}
	if r := mustView(t, s, func(tx *state.Tx) (state.Rotation, error) { return tx.OpenRotation(ctx, "c3", "own_metrics") }); r.ID != "r3" {
		t.Fatalf("open own_metrics rotation %+v", r)
	}
	due := mustView(t, s, func(tx *state.Tx) ([]state.Certificate, error) { return tx.CertificatesDue(ctx, now, 10) })
	if len(due) != 1 || due[0].Serial != "due" {
		t.Fatalf("due certificates %+v, want only the one past its renew point without an open rotation", due)
	}
	r := mustView(t, s, func(tx *state.Tx) (state.Rotation, error) { return tx.OpenRotation(ctx, "c3", "") })
	if r.ID != "r1" || r.State != state.RotationPending || r.BatchID != "b1" || r.Destination != "opamp" {
		t.Fatalf("open rotation %+v", r)
	}
	r.State, r.Serial, r.Method, r.Attempts, r.NextAttemptAt = state.RotationOffered, "s9", "server-key", 1, now.Add(time.Minute)
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	if d := mustView(t, s, func(tx *state.Tx) ([]state.Rotation, error) { return tx.DueRotations(ctx, now, 10) }); len(d) != 0 {
		t.Fatalf("rotation due before its next attempt: %+v", d)
	}
	if d := mustView(t, s, func(tx *state.Tx) ([]state.Rotation, error) { return tx.DueRotations(ctx, now.Add(2*time.Minute), 10) }); len(d) != 1 {
		t.Fatalf("due rotations later: %d, want 1", len(d))
	}
	bySerial := mustView(t, s, func(tx *state.Tx) (state.Rotation, error) { return tx.RotationBySerial(ctx, "s9") })
	if bySerial.ID != "r1" || bySerial.Attempts != 1 || bySerial.Method != "server-key" {
		t.Fatalf("rotation by serial %+v", bySerial)
	}
	r.State = state.RotationConfirmed
	s.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, r) })
	if _, err := viewErr(s, func(tx *state.Tx) (state.Rotation, error) { return tx.OpenRotation(ctx, "c3", "") }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("confirmed rotation still open: %v", err)
	}
	batch := mustView(t, s, func(tx *state.Tx) ([]state.Rotation, error) { return tx.BatchRotations(ctx, "b1") })
	counts := mustView(t, s, func(tx *state.Tx) (map[state.RotationState]int, error) { return tx.RotationCounts(ctx) })
	b := mustView(t, s, func(tx *state.Tx) (state.RotationBatch, error) { return tx.RotationBatch(ctx, "b1") })
	if len(batch) != 1 || counts[state.RotationConfirmed] != 1 || b.Rate != 5 || b.Selector != "all" {
		t.Fatalf("batch %+v counts %v record %+v", batch, counts, b)
	}
}

func viewErr2[A, B any](s *state.Store, fn func(*state.Tx) (A, B, error)) (A, B, error) {
	var (
		a A
		b B
	)
	err := s.View(context.Background(), func(tx *state.Tx) (err error) {
		a, b, err = fn(tx)
		return err
	})
	return a, b, err
}
