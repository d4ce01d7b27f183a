package statetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

func testPackages(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	p := state.Publisher{Name: "release-team", PublicKey: "PEM", KeyHint: "h", Types: []string{"otelcol"}, AddedAt: now, AddedBy: "admin:x"}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.PutPublisher(ctx, p) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.PutPublisher(ctx, p) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("duplicate publisher: %v", err)
	}
	ps := mustView(t, s, func(tx *state.Tx) ([]state.Publisher, error) { return tx.Publishers(ctx, false) })
	if len(ps) != 1 || ps[0].Types[0] != "otelcol" || !ps[0].AddedAt.Equal(now) {
		t.Fatalf("publishers %+v", ps)
	}
	r := state.Release{ID: "r1", Type: "otelcol", Version: "0.115.0", Platform: "linux/amd64", SHA256: "ab", Size: 10,
		Signature: []byte("{}"), Publisher: "release-team", PublishedAt: now, PublishedBy: "admin:x", State: state.ReleaseActive}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertRelease(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	r2 := r
	r2.ID = "r2"
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertRelease(ctx, r2) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("same type/version/platform twice: %v", err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error {
		return tx.SetReleaseState(ctx, "r1", state.ReleaseYanked, "crashes on start", now)
	}); err != nil {
		t.Fatal(err)
	}
	rs := mustView(t, s, func(tx *state.Tx) ([]state.Release, error) {
		return tx.Releases(ctx, state.ReleaseFilter{Type: "otelcol", SHA256: "ab"})
	})
	if len(rs) != 1 || rs[0].State != state.ReleaseYanked || rs[0].StateReason != "crashes on start" || string(rs[0].Signature) != "{}" {
		t.Fatalf("releases %+v", rs)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.RemovePublisher(ctx, "release-team", now) }); err != nil {
		t.Fatal(err)
	}
	if ps := mustView(t, s, func(tx *state.Tx) ([]state.Publisher, error) { return tx.Publishers(ctx, false) }); len(ps) != 0 {
		t.Fatalf("removed publisher still trusted: %+v", ps)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.RemovePublisher(ctx, "release-team", now) }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
}
