package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// livePolicies is a Policies holding a fixed set.
type livePolicies struct{ set *policies.Set }

func (p livePolicies) Current() *policies.Set { return p.set }
func (p livePolicies) Reload(context.Context, string) (*policies.Set, bool, error) {
	return p.set, false, nil
}
func (livePolicies) Dir() string       { return "" }
func (livePolicies) LastError() string { return "" }

// TestSimulateRefusesExpensiveCondition: the read-only auditor role can
// simulate, so a hostile auditor's expensive condition must be refused
// before it evaluates: 422 naming the rule and the limit.
func TestSimulateRefusesExpensiveCondition(t *testing.T) {
	base, _, s := newAPI(t)
	cfg := base.cfg
	cfg.Policies = livePolicies{set: &policies.Set{}}
	a := New(cfg)
	auditor := roleToken(t, s, RoleAuditor)
	// About 440 bytes: ten nested comprehensions, 10^10 iterations.
	cond := strings.Repeat(`[0,1,2,3,4,5,6,7,8,9].all(a, `, 10) + `agent.uid != "x"` + strings.Repeat(`)`, 10)
	file := "rules:\n  - name: busy\n    kind: package_target\n    when: '" + cond + "'\n    target: {version: \"1.0.0\"}\n"
	body, _ := json.Marshal(SimulateRequest{Files: map[string]string{"evil.yaml": file}})
	w := do(a, http.MethodPost, "/api/v1/policies/simulate", auditor, string(body))
	if w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("%d-byte request: %d %s, want 422", len(body), w.Code, w.Body)
	}
	for _, want := range []string{`evil.yaml:2: rule \"busy\"`, "policies.cost_limit", "limit of 100000"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("answer %s does not name %s", w.Body, want)
		}
	}
	// The configured limit applies to simulations too.
	cfg.PolicyLimits = policies.Limits{CostLimit: 1}
	ok := "rules:\n  - name: fine\n    kind: package_target\n    when: 'agent.type == \"otelcol\"'\n    target: {version: \"1.0.0\"}\n"
	body, _ = json.Marshal(SimulateRequest{Files: map[string]string{"ok.yaml": ok}})
	if w := do(New(cfg), http.MethodPost, "/api/v1/policies/simulate", auditor, string(body)); w.Code != http.StatusUnprocessableEntity ||
		!strings.Contains(w.Body.String(), "limit of 1 ") {
		t.Fatalf("under a configured limit of 1: %d %s", w.Code, w.Body)
	}
	if w := do(a, http.MethodPost, "/api/v1/policies/simulate", auditor, string(body)); w.Code != http.StatusOK {
		t.Fatalf("a cheap condition under the default limit: %d %s", w.Code, w.Body)
	}
}

// TestSimulateCostBudget: a simulation is bounded as a whole, not only per
// condition: many agents times many cheap rules stops at
// policies.simulate_cost_limit with 422.
func TestSimulateCostBudget(t *testing.T) {
	base, _, s := newAPI(t)
	ctx := context.Background()
	for _, uid := range []string{"a1", "a2", "a3"} {
		if err := s.Update(ctx, func(tx *state.Tx) error {
			return tx.PutAgent(ctx, state.Agent{UID: uid, Labels: map[string]string{"env": "prod"}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := base.cfg
	cfg.Policies = livePolicies{set: &policies.Set{}}
	cfg.SimulateCostLimit = 5
	auditor := roleToken(t, s, RoleAuditor)
	file := "rules:\n  - name: scan\n    kind: certificate_profile\n    when: 'agent.labels.exists(k, k == \"nope\")'\n    profile: default\n"
	body, _ := json.Marshal(SimulateRequest{Files: map[string]string{"p.yaml": file}})
	w := do(New(cfg), http.MethodPost, "/api/v1/policies/simulate", auditor, string(body))
	if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), "policies.simulate_cost_limit") {
		t.Fatalf("%d %s, want 422 naming policies.simulate_cost_limit", w.Code, w.Body)
	}
	cfg.SimulateCostLimit = 0 // the default
	if w := do(New(cfg), http.MethodPost, "/api/v1/policies/simulate", auditor, string(body)); w.Code != http.StatusOK ||
		!strings.Contains(w.Body.String(), `"uid": "a3"`) {
		t.Fatalf("under the default budget: %d %s", w.Code, w.Body)
	}
}
