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

func testRollouts(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	update := func(fn func(tx *state.Tx) error) {
		t.Helper()
		if err := s.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *state.Tx) error {
		return tx.PutPin(ctx, state.Pin{Type: "otelcol", Version: "1.0.0", PinnedAt: now, PinnedBy: "admin:a"})
	})
	update(func(tx *state.Tx) error {
		return tx.PutPin(ctx, state.Pin{Type: "otelcol", Selector: "region=eu", Version: "0.9.0", PinnedAt: now, PinnedBy: "admin:a"})
	})
	// A second pin of the same type and selector replaces the first.
	update(func(tx *state.Tx) error {
		return tx.PutPin(ctx, state.Pin{Type: "otelcol", Version: "1.1.0", PinnedAt: now.Add(time.Minute), PinnedBy: "admin:b"})
	})
	pins := mustView(t, s, func(tx *state.Tx) ([]state.Pin, error) { return tx.Pins(ctx) })
	if len(pins) != 2 || pins[0].Selector != "" || pins[0].Version != "1.1.0" || pins[0].PinnedBy != "admin:b" ||
		pins[1].Selector != "region=eu" || pins[1].Version != "0.9.0" {
		t.Fatalf("pins %+v", pins)
	}
	update(func(tx *state.Tx) error { return tx.DeletePin(ctx, "otelcol", "region=eu") })
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.DeletePin(ctx, "otelcol", "region=eu") }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("deleting a missing pin: %v", err)
	}

	offer := state.AgentPackage{UID: "a1", Type: "otelcol", Version: "1.1.0", SHA256: "aa", State: state.PackageOffered,
		Rule: "pin otelcol", OfferedAt: now, UpdatedAt: now}
	update(func(tx *state.Tx) error { return tx.PutAgentPackage(ctx, offer) })
	failed := offer
	failed.UID, failed.State, failed.Message, failed.Downgrade, failed.From = "a2", state.PackageFailed, "bad hash", true, "1.2.0"
	update(func(tx *state.Tx) error { return tx.PutAgentPackage(ctx, failed) })
	// A status update replaces the row of the same agent and type.
	offer.State, offer.UpdatedAt = state.PackageInstalled, now.Add(time.Minute)
	update(func(tx *state.Tx) error { return tx.PutAgentPackage(ctx, offer) })
	got := mustView(t, s, func(tx *state.Tx) ([]state.AgentPackage, error) { return tx.AgentPackages(ctx, "", "otelcol", "1.1.0") })
	if len(got) != 2 || got[0].UID != "a1" || got[0].State != state.PackageInstalled || !got[0].UpdatedAt.Equal(now.Add(time.Minute)) ||
		got[1].State != state.PackageFailed || got[1].Message != "bad hash" || !got[1].Downgrade || got[1].From != "1.2.0" || got[0].Downgrade {
		t.Fatalf("agent packages %+v", got)
	}
	one := mustView(t, s, func(tx *state.Tx) ([]state.AgentPackage, error) { return tx.AgentPackages(ctx, "a2", "", "") })
	if len(one) != 1 || one[0].UID != "a2" {
		t.Fatalf("agent a2 packages %+v", one)
	}
	none := mustView(t, s, func(tx *state.Tx) ([]state.AgentPackage, error) { return tx.AgentPackages(ctx, "", "otelcol", "1.0.0") })
	if len(none) != 0 {
		t.Fatalf("release 1.0.0 has %d agents, want 0", len(none))
	}

	// The first start of a rollout is the one on record: a replica that
	// starts it later learns the earlier start.
	start := state.RolloutStart{Type: "otelcol", Version: "1.1.0", Rule: "canary", StartedAt: now}
	var first, again state.RolloutStart
	update(func(tx *state.Tx) (err error) { first, err = tx.StartRollout(ctx, start); return err })
	later := start
	later.StartedAt = now.Add(time.Hour)
	update(func(tx *state.Tx) (err error) { again, err = tx.StartRollout(ctx, later); return err })
	if !first.StartedAt.Equal(now) || !again.StartedAt.Equal(now) {
		t.Fatalf("rollout starts %v then %v, want %v both times", first.StartedAt, again.StartedAt, now)
	}
	other := start
	other.Rule, other.StartedAt = "broad", now.Add(time.Minute)
	update(func(tx *state.Tx) error { _, err := tx.StartRollout(ctx, other); return err })
	starts := mustView(t, s, func(tx *state.Tx) ([]state.RolloutStart, error) { return tx.RolloutStarts(ctx) })
	if len(starts) != 2 || starts[0].Rule != "broad" || !starts[0].StartedAt.Equal(now.Add(time.Minute)) || starts[1].Rule != "canary" {
		t.Fatalf("rollout starts %+v", starts)
	}
}
