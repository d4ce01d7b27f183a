package policies

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Hostile conditions as an auditor could send them to
// POST /api/v1/policies/simulate: each is a few hundred bytes and, without
// a cost limit, keeps a core busy for minutes or grows memory fourfold per
// ~25 bytes.
var hostileConditions = map[string]string{
	// Ten nested comprehensions over ten elements: 10^10 iterations.
	"nested comprehensions": strings.Repeat(`[0,1,2,3,4,5,6,7,8,9].all(a, `, 10) + `agent.uid != "x"` + strings.Repeat(`)`, 10),
	// Each replace quadruples the string: 4^20 bytes.
	"replace growth": `"ab"` + strings.Repeat(`.replace("a", "aaaa")`, 20) + `.size() > 0`,
	// A list that squares: every label joined with every other, repeatedly.
	"list growth": `agent.capabilities.map(a, agent.capabilities.map(b, agent.capabilities.map(c, agent.capabilities.map(d, a + b + c + d)))).size() > 0`,
}

// concatGrowth doubles a string at every step (s + s). cel-go's estimator
// does not follow a string's size through map(), so this passes the
// check-time estimate (some thousands); over a 36-character uid it would
// build a 4.7 MB string and cost 26 million units (9 s of one core) were
// it not for the run-time limit.
var concatGrowth = `[agent.uid]` + strings.Repeat(`.map(s, s + s)`, 17) + `.size() > 0`

func hostileRule(name, cond string) []byte {
	return []byte(fmt.Sprintf("rules:\n  - name: %s\n    kind: package_target\n    when: '%s'\n    target: {version: \"1.0.0\"}\n",
		name, strings.ReplaceAll(cond, "'", "''")))
}

// TestHostileConditionsRefusedAtLoad: each hostile condition is refused
// when the files load, with an error naming the rule and the limit, before
// anything evaluates it.
func TestHostileConditionsRefusedAtLoad(t *testing.T) {
	for name, cond := range hostileConditions {
		t.Run(name, func(t *testing.T) {
			_, err := Compile(map[string][]byte{"evil.yaml": hostileRule("evil", cond)})
			if !errors.Is(err, ErrTooExpensive) {
				t.Fatalf("%d-byte condition: %v, want ErrTooExpensive", len(cond), err)
			}
			for _, want := range []string{`rule "evil"`, "evil.yaml:2", "policies.cost_limit", fmt.Sprint(DefaultCostLimit)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// TestCostLimitConfigurable: the same rule loads under a higher limit and
// is refused under a lower one.
func TestCostLimitConfigurable(t *testing.T) {
	rule := hostileRule("scan", `agent.labels.exists(k, agent.labels[k].contains("x"))`)
	if _, err := (Limits{}).Compile(map[string][]byte{"a.yaml": rule}); err != nil {
		t.Fatalf("a scan of the labels under the default limit: %v", err)
	}
	_, err := Limits{CostLimit: 100}.Compile(map[string][]byte{"a.yaml": rule})
	if !errors.Is(err, ErrTooExpensive) || !strings.Contains(err.Error(), "limit of 100 ") {
		t.Fatalf("under a limit of 100: %v", err)
	}
}

// TestExpressionSizeAndNesting: a condition over the size or nesting limit
// is refused by the parser bounds, whatever its cost.
func TestExpressionSizeAndNesting(t *testing.T) {
	long := `agent.uid == "` + strings.Repeat("x", DefaultMaxExpressionSize) + `"`
	if _, err := Compile(map[string][]byte{"a.yaml": hostileRule("long", long)}); !errors.Is(err, ErrTooExpensive) ||
		!strings.Contains(err.Error(), "policies.max_expression_size") {
		t.Fatalf("long condition: %v", err)
	}
	deep := strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40)
	if _, err := Compile(map[string][]byte{"a.yaml": hostileRule("deep", deep)}); err == nil || !strings.Contains(err.Error(), "recursion") {
		t.Fatalf("deep condition: %v", err)
	}
	if _, err := (Limits{MaxExpressionNesting: 64}).Compile(map[string][]byte{"a.yaml": hostileRule("deep", deep)}); err != nil {
		t.Fatalf("deep condition under a nesting limit of 64: %v", err)
	}
}

// TestRuntimeCostLimit: a condition whose estimate passes (it assumes the
// sizes the server lets agents send) but that meets an agent with far more
// data is stopped at run time by the cost limit, and counts as no match
// and as an eval error.
func TestRuntimeCostLimit(t *testing.T) {
	s := compile(t, string(hostileRule("scan", `agent.attributes.exists(k, agent.attributes[k].contains("needle"))`)))
	big := map[string]string{}
	for i := range 20_000 {
		big[fmt.Sprint("k", i)] = strings.Repeat("hay", 100)
	}
	if r := s.Target(Agent{Attributes: big}, now); r != nil {
		t.Fatalf("an evaluation over the cost limit matched %s", r.Ref())
	}
	if n := s.Rules(KindPackageTarget)[0].EvalErrors(); n != 1 {
		t.Fatalf("eval errors %d, want 1", n)
	}
	_, err := evalBool(context.Background(), s.Rules(KindPackageTarget)[0].when, map[string]any{"agent": Agent{Attributes: big}, "now": now})
	if !errors.Is(err, ErrTooExpensive) {
		t.Fatalf("evaluation error %v, want ErrTooExpensive", err)
	}
	// The same rule over an ordinary agent works.
	if r := s.Target(Agent{Attributes: map[string]string{"a": "needle"}}, now); name(r) != "scan" {
		t.Fatalf("ordinary agent: %q", name(r))
	}
}

// TestRuntimeCostLimitStopsGrowth: the condition that slips past the
// estimate is stopped by the run-time limit, long before its strings grow.
func TestRuntimeCostLimitStopsGrowth(t *testing.T) {
	s := compile(t, string(hostileRule("grow", concatGrowth)))
	uid := "0b5f5a1e-6c2e-4a8e-9f3b-2d7c1e4a5b6c"
	_, err := evalBool(context.Background(), s.Rules(KindPackageTarget)[0].when, map[string]any{"agent": Agent{UID: uid}, "now": now})
	if !errors.Is(err, ErrTooExpensive) {
		t.Fatalf("evaluation error %v, want ErrTooExpensive", err)
	}
	if r := s.Target(Agent{UID: uid}, now); r != nil {
		t.Fatalf("an evaluation over the cost limit matched %s", r.Ref())
	}
}

// TestCancelledEvaluation: an evaluation under a cancelled context (the
// client of a simulation went away) stops with the context's error, even
// inside a long comprehension, and a set bound to it matches nothing.
func TestCancelledEvaluation(t *testing.T) {
	cond := `[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, agent.uid != "x")))`
	s := compile(t, string(hostileRule("loop", cond)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := evalBool(ctx, s.Rules(KindPackageTarget)[0].when, map[string]any{"agent": Agent{UID: "u"}, "now": now})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("evaluation under a cancelled context: %v, want context.Canceled", err)
	}
	if r := s.WithContext(ctx).Target(Agent{UID: "u"}, now); r != nil {
		t.Fatalf("a cancelled set matched %s", r.Ref())
	}
	if n := s.Rules(KindPackageTarget)[0].EvalErrors(); n != 0 {
		t.Fatalf("a cancelled caller counted %d eval errors against the rule", n)
	}
	// Unbound, the same set evaluates.
	if r := s.Target(Agent{UID: "u"}, now); name(r) != "loop" {
		t.Fatalf("unbound set: %q", name(r))
	}
}
