package statetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

func testEnrollmentTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	tok := state.EnrollmentToken{ID: "e1", Hash: []byte("h1"), Labels: map[string]string{"env": "prod"}, MaxUses: 2,
		ExpiresAt: now.Add(time.Hour), CreatedAt: now, CreatedBy: "admin:x"}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertEnrollmentToken(ctx, tok) }); err != nil {
		t.Fatal(err)
	}
	got := mustView(t, s, func(tx *state.Tx) (state.EnrollmentToken, error) { return tx.EnrollmentTokenByHash(ctx, []byte("h1")) })
	if got.Labels["env"] != "prod" || got.MaxUses != 2 || !got.ExpiresAt.Equal(tok.ExpiresAt) || !got.Usable(now) {
		t.Fatalf("token %+v", got)
	}
	// Two uses, raced: both succeed; a third fails.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = s.Update(ctx, func(tx *state.Tx) error { return tx.UseEnrollmentToken(ctx, "e1", now) })
		}(i)
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if errors.Is(err, state.ErrConflict) {
			failed++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if failed != 1 {
		t.Fatalf("%d of 3 uses of a 2-use token failed, want 1", failed)
	}
	// Expired tokens cannot be used.
	tok2 := tok
	tok2.ID, tok2.Hash, tok2.ExpiresAt = "e2", []byte("h2"), now.Add(-time.Second)
	s.Update(ctx, func(tx *state.Tx) error { return tx.InsertEnrollmentToken(ctx, tok2) })
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.UseEnrollmentToken(ctx, "e2", now) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("expired token used: %v", err)
	}
}

func testAgents(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	a := state.Agent{UID: "a1", Labels: map[string]string{"env": "prod"}, Description: json.RawMessage(`{"os":"linux"}`),
		Capabilities: 1<<63 | 5, Connected: true, Replica: "r1", Transport: "websocket", LastSeen: now,
		SequenceNum: 42, CertSerial: "0a", CertNotAfter: now.Add(time.Hour), EnrolledAt: now, CustomCapabilities: []string{"io.trustamp.csr"}}
	b := state.Agent{UID: "b2", Labels: map[string]string{"env": "dev"}, Replica: "r2", CertNotAfter: now.Add(48 * time.Hour)}
	err := s.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutAgent(ctx, a); err != nil {
			return err
		}
		return tx.PutAgent(ctx, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := mustView(t, s, func(tx *state.Tx) (state.Agent, error) { return tx.Agent(ctx, "a1") })
	if got.Capabilities != a.Capabilities || !got.Connected || got.SequenceNum != 42 || string(got.Description) != `{"os":"linux"}` ||
		!got.LastSeen.Equal(now) || !got.ConnectedSince.IsZero() || got.Labels["env"] != "prod" ||
		len(got.CustomCapabilities) != 1 || got.CustomCapabilities[0] != "io.trustamp.csr" {
		t.Fatalf("agent round trip: %+v", got)
	}
	yes := true
	for name, tc := range map[string]struct {
		f    state.AgentFilter
		want string
	}{
		"label":     {state.AgentFilter{Labels: map[string]string{"env": "dev"}}, "b2"},
		"connected": {state.AgentFilter{Connected: &yes}, "a1"},
		"expiring":  {state.AgentFilter{CertExpiringBefore: now.Add(2 * time.Hour)}, "a1"},
	} {
		as := mustView(t, s, func(tx *state.Tx) ([]state.Agent, error) { return tx.Agents(ctx, tc.f) })
		if len(as) != 1 || as[0].UID != tc.want {
			t.Errorf("%s filter: %d agents, want only %s", name, len(as), tc.want)
		}
	}
	a.SequenceNum = 43
	s.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutAgent(ctx, a); err != nil {
			return err
		}
		return tx.DisconnectReplica(ctx, "r1")
	})
	got = mustView(t, s, func(tx *state.Tx) (state.Agent, error) { return tx.Agent(ctx, "a1") })
	if got.SequenceNum != 43 || got.Connected {
		t.Fatalf("after update and replica disconnect: %+v", got)
	}
	if _, err := viewErr(s, func(tx *state.Tx) (state.Agent, error) { return tx.Agent(ctx, "zz") }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("absent agent: %v", err)
	}
}

func testCertificates(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := openClosed(t, open)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	c := state.Certificate{Serial: "0abc", UID: "a1", NotBefore: now, NotAfter: now.Add(24 * time.Hour), Fingerprint: "ff", PEM: "pem",
		Status: state.CertOffered, IssuedAt: now, Profile: "default", ServerMadeKey: true}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertCertificate(ctx, c) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.InsertCertificate(ctx, c) }); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("duplicate serial: %v", err)
	}
	for i, want := range []bool{true, false} {
		var changed bool
		err := s.Update(ctx, func(tx *state.Tx) (err error) {
			changed, err = tx.ConfirmCertificate(ctx, "0abc", now.Add(time.Minute))
			return err
		})
		if err != nil || changed != want {
			t.Fatalf("confirm #%d: changed=%v err=%v, want %v", i+1, changed, err, want)
		}
	}
	got := mustView(t, s, func(tx *state.Tx) (state.Certificate, error) { return tx.CertificateBySerial(ctx, "0abc") })
	if got.Status != state.CertConfirmed || !got.ConfirmedAt.Equal(now.Add(time.Minute)) || !got.NotAfter.Equal(c.NotAfter) ||
		got.Destination != "opamp" || !got.ServerMadeKey {
		t.Fatalf("certificate %+v", got)
	}
}

func viewErr[T any](s *state.Store, fn func(*state.Tx) (T, error)) (T, error) {
	var out T
	err := s.View(context.Background(), func(tx *state.Tx) (err error) {
		out, err = fn(tx)
		return err
	})
	return out, err
}

func mustView[T any](t *testing.T, s *state.Store, fn func(*state.Tx) (T, error)) T {
	t.Helper()
	out, err := viewErr(s, fn)
	if err != nil {
		t.Fatal(fmt.Errorf("view: %w", err))
	}
	return out
}
