package revocation

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

func TestAutoRevoke(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	set, err := policies.Compile(map[string][]byte{"auto.yaml": []byte(`
rules:
  - name: impersonation
    kind: auto_revoke
    when: event.kind == "impersonation"
    action: revoke
    reason: keyCompromise
  - name: csr-storm
    kind: auto_revoke
    when: event.kind == "csr_refused" && event.count >= 3
    action: quarantine
    reason: repeated CSR refusals
`)})
	if err != nil {
		t.Fatal(err)
	}
	au := NewAuto(AutoConfig{Service: h.svc, Policies: func() *policies.Set { return set },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: h.clk.now})
	quarantine := func(uid string) (state.Quarantine, bool) {
		var q state.Quarantine
		err := h.store.View(ctx, func(tx *state.Tx) (err error) { q, err = tx.QuarantineOf(ctx, uid); return err })
		return q, err == nil
	}

	// Repeated CSR refusals: the third within the hour quarantines,
	// without revoking anything.
	serials := h.certs(t, "storm", 1, time.Hour)
	for i := 1; i <= 2; i++ {
		if r := au.Event(ctx, policies.Agent{UID: "storm"}, policies.EventCSRRefused, nil); r != nil {
			t.Fatalf("refusal %d acted (%s)", i, r.Name)
		}
		h.clk.advance(20 * time.Minute)
	}
	if r := au.Event(ctx, policies.Agent{UID: "storm"}, policies.EventCSRRefused, nil); r == nil || r.Name != "csr-storm" {
		t.Fatalf("third refusal within the hour: %v", r)
	}
	au.Wait()
	q, ok := quarantine("storm")
	if !ok || q.Actor != "policy:csr-storm" || q.Reason != "repeated CSR refusals" {
		t.Fatalf("quarantine %+v %v", q, ok)
	}
	if _, revoked := h.svc.Revoked(serials[0]); revoked {
		t.Fatal("a quarantine revoked the agent's certificate")
	}
	// Events older than the window do not count.
	h.certs(t, "slow", 1, time.Hour)
	for i := 0; i < 4; i++ {
		if r := au.Event(ctx, policies.Agent{UID: "slow"}, policies.EventCSRRefused, nil); r != nil {
			t.Fatalf("refusals an hour apart acted at %d", i)
		}
		h.clk.advance(61 * time.Minute)
	}

	// Impersonation revokes at once; the same rule does not act on the
	// same agent again right after (a revoked agent retrying).
	imp := h.certs(t, "imp", 2, time.Hour)
	if r := au.Event(ctx, policies.Agent{UID: "imp"}, policies.EventImpersonation, map[string]string{"claimed_uid": "x"}); r == nil {
		t.Fatal("impersonation did not act")
	}
	au.Wait()
	for _, s := range imp {
		if why, ok := h.svc.Revoked(s); !ok || why != "keyCompromise" {
			t.Fatalf("certificate %s: revoked=%v reason=%q", s, ok, why)
		}
	}
	if q, ok := quarantine("imp"); !ok || q.Actor != "policy:impersonation" {
		t.Fatalf("impersonator not quarantined by the rule: %+v", q)
	}
	if r := au.Event(ctx, policies.Agent{UID: "imp"}, policies.EventImpersonation, nil); r != nil {
		t.Fatal("the rule acted twice on the same agent within minutes")
	}
	// Events no rule matches do nothing.
	if r := au.Event(ctx, policies.Agent{UID: "imp"}, policies.EventIdentityChanged, nil); r != nil {
		t.Fatal("an unmatched event acted")
	}
}
