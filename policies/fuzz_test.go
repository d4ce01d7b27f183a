package policies

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
)

// fuzzLimits keep every fuzz iteration within milliseconds: the property
// is that nothing loaded can cost more than the limit, whatever it is.
var fuzzLimits = Limits{CostLimit: 10_000, MaxExpressionSize: 1024, MaxExpressionNesting: 24}

// fuzzAgents are who loaded rules are evaluated against: an ordinary agent
// and one with more data than the estimator assumes.
func fuzzAgents() []Agent {
	big := map[string]string{}
	for i := range 200 {
		big[strings.Repeat("k", i%7+1)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 300)
	}
	return []Agent{
		{UID: "0b5f5a1e-6c2e-4a8e-9f3b-2d7c1e4a5b6c", Labels: map[string]string{"env": "prod", "region": "eu"},
			Attributes: map[string]string{"service.name": "otelcol", "host.name": "h1"}, Capabilities: []string{"AcceptsPackages"},
			Type: "otelcol", Platform: "linux/amd64", Packages: map[string]string{"": "0.114.0"}, Connected: true, Healthy: true},
		{UID: strings.Repeat("u", 2000), Labels: big, Attributes: big, Capabilities: make([]string, 500)},
	}
}

// FuzzPolicyLoad: any bytes as a policy file load or are refused without
// a panic, and every condition of a set that loads evaluates within the
// cost limit (its actual cost never passes it) or stops with an error.
func FuzzPolicyLoad(f *testing.F) {
	examples, _ := filepath.Glob("examples/*.yaml")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(mixed))
	for _, cond := range hostileConditions {
		f.Add(hostileRule("evil", cond))
	}
	f.Add(hostileRule("grow", concatGrowth))
	f.Add([]byte("rules:\n  - name: r\n    kind: rollout\n    when: 'true'\n    waves: [50, 100]\n    agents: 'agent.labels.exists(k, k.startsWith(\"x\"))'\n"))
	f.Add([]byte("a: &a [*a, *a]\nrules: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := fuzzLimits.Compile(map[string][]byte{"fuzz.yaml": data})
		if err != nil {
			return
		}
		ctx := context.Background()
		now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
		for _, a := range fuzzAgents() {
			vars := map[string]any{"agent": a, "cert": Cert{Serial: "01", NotAfter: now, Profile: "default", Destination: "opamp"},
				"release": Release{Type: "otelcol", Version: "1.0.0", Labels: a.Labels},
				"event":   Event{Kind: EventImpersonation, Count: 3, Detail: a.Labels}, "now": now}
			for _, kind := range []string{KindCertificateProfile, KindPackageTarget, KindRollout, KindAutoRevoke} {
				for _, r := range set.Rules(kind) {
					checkCost(t, ctx, r.Ref()+" when", r.when, vars)
					if r.agents != nil {
						checkCost(t, ctx, r.Ref()+" agents", r.agents, vars)
					}
				}
			}
		}
	})
}

// checkCost evaluates p and fails if it completed at a cost over the limit.
func checkCost(t *testing.T, ctx context.Context, name string, p cel.Program, vars map[string]any) {
	t.Helper()
	_, det, err := p.ContextEval(ctx, vars)
	if err != nil {
		return // an evaluation error, including the cost limit: no match
	}
	if det == nil || det.ActualCost() == nil {
		t.Fatalf("%s: evaluation without cost tracking", name)
	}
	if c := *det.ActualCost(); c > fuzzLimits.CostLimit {
		t.Fatalf("%s: cost %d over the limit %d", name, c, fuzzLimits.CostLimit)
	}
	if _, err := evalBool(ctx, p, vars); err != nil && !errors.Is(err, ErrTooExpensive) {
		t.Fatalf("%s: evalBool disagrees with the program: %v", name, err)
	}
}
