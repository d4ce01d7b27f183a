package release

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

func policySet(t *testing.T, yaml string) *policies.Set {
	t.Helper()
	s, err := policies.Compile(map[string][]byte{"p.yaml": []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func policyAgent(uid, version string, labels map[string]string) Agent {
	p := policies.Agent{UID: uid, Type: "otelcol", Platform: "linux/amd64", Labels: labels,
		Packages: map[string]string{"": version}}
	return AgentFrom(p)
}

func TestDecidePolicyTargets(t *testing.T) {
	const yaml = `
rules:
  - name: eu-back
    kind: package_target
    when: agent.labels["region"] == "eu"
    target: {version: "1.0.0", allow_downgrade: true}
  - name: us-back-no-permission
    kind: package_target
    when: agent.labels["region"] == "us"
    target: {version: "1.0.0"}
  - name: fluent-only
    kind: package_target
    when: "true"
    target: {type: fluentbit, version: "9.9.9"}
  - name: beta
    kind: package_target
    when: agent.labels["ring"] == "beta"
    target: {channel: beta}
  - name: stable
    kind: package_target
    when: agent.labels["ring"] == "stable"
    target: {channel: stable}
`
	set := policySet(t, yaml)
	rels := []state.Release{rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseActive), rel("1.2.0", state.ReleaseActive),
		rel("1.3.0-beta.2", state.ReleaseActive), rel("1.3.0-beta.10", state.ReleaseActive), rel("1.4.0", state.ReleaseYanked)}
	pins := []state.Pin{{Type: "otelcol", Version: "1.2.0"}}
	tests := []struct {
		name      string
		agent     Agent
		want      string
		downgrade bool
		rule      string
	}{
		{"allow_downgrade permits a lower version, marked", policyAgent("a", "1.1.0", map[string]string{"region": "eu"}), "1.0.0", true, "policy p.yaml:3 eu-back"},
		{"without allow_downgrade a lower version is refused", policyAgent("a", "1.1.0", map[string]string{"region": "us"}), "", false, "refused"},
		{"a lower version away from a yanked release needs no permission", policyAgent("a", "1.4.0", map[string]string{"region": "us"}), "1.0.0", true, "us-back"},
		{"a rule for another type does not apply; the pin does", policyAgent("a", "1.1.0", nil), "1.2.0", false, "pin otelcol@1.2.0"},
		{"channel beta is its newest pre-release", policyAgent("a", "1.1.0", map[string]string{"ring": "beta"}), "1.3.0-beta.10", false, "beta"},
		{"channel stable skips pre-releases and yanked releases", policyAgent("a", "1.1.0", map[string]string{"ring": "stable"}), "1.2.0", false, "stable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok := testCatalog(pins, rels...).decide(tt.agent, nil, set, now())
			got := ""
			if ok {
				got = o.Release.Version
			}
			if got != tt.want || o.Downgrade != tt.downgrade || !strings.Contains(o.Rule, tt.rule) {
				t.Fatalf("offered %q (downgrade %v, rule %q), want %q (downgrade %v, rule ~%q)", got, o.Downgrade, o.Rule, tt.want, tt.downgrade, tt.rule)
			}
		})
	}
}

func now() time.Time { return time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC) }

func TestChannelOf(t *testing.T) {
	for v, want := range map[string]string{"1.2.0": "stable", "v1.2.0": "stable", "1.2.0-beta.1": "beta", "2.0.0-rc1": "rc", "1.0.0-0.3": "0.3"} {
		if got := channelOf(v); got != want {
			t.Errorf("channelOf(%q) = %q, want %q", v, got, want)
		}
	}
}

// Waves open one soak apart; an agent offered the release keeps it; a
// downgrade is never held back by a rollout.
func TestDecideRolloutWaves(t *testing.T) {
	set := policySet(t, `
rules:
  - name: all
    kind: package_target
    when: "true"
    target: {channel: stable, allow_downgrade: true}
  - name: canary
    kind: rollout
    when: release.type == "otelcol"
    waves: [10, 50, 100]
    soak: 1h
`)
	c := testCatalog(nil, rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseActive))
	start := now()
	offered := func(at time.Time) (int, *state.RolloutStart) {
		n := 0
		var st *state.RolloutStart
		for i := range 1000 {
			o, ok := c.decide(policyAgent("agent-"+itoa(i), "1.0.0", nil), nil, set, at)
			if o.start != nil {
				st = o.start
			}
			if ok {
				n++
				if !strings.Contains(o.Rule, "rollout p.yaml:7 canary wave") {
					t.Fatalf("rule %q does not name the wave", o.Rule)
				}
			}
		}
		return n, st
	}
	n, st := offered(start)
	if st == nil || !st.StartedAt.Equal(start) {
		t.Fatalf("the first decision did not start the rollout: %+v", st)
	}
	if n < 70 || n > 130 {
		t.Fatalf("wave 1 offered to %d of 1000, want about 100", n)
	}
	c.setStarted(rolloutKey("otelcol", "1.1.0", "canary"), start)
	if n, _ := offered(start.Add(59 * time.Minute)); n < 70 || n > 130 {
		t.Fatalf("before the soak ended %d of 1000 were offered, want about 100", n)
	}
	if n, _ := offered(start.Add(time.Hour)); n < 450 || n > 550 {
		t.Fatalf("after one soak %d of 1000 were offered, want about 500", n)
	}
	if n, _ := offered(start.Add(2 * time.Hour)); n != 1000 {
		t.Fatalf("after two soaks %d of 1000 were offered, want all", n)
	}
	// An agent in the last wave that was already offered the release
	// (before the policy changed, or on another path) keeps its offer.
	late := ""
	for i := 0; late == ""; i++ {
		uid := "probe-" + itoa(i)
		if _, ok := c.decide(policyAgent(uid, "1.0.0", nil), nil, set, start); !ok {
			late = uid
		}
	}
	prior := &state.AgentPackage{SHA256: "sha-1.1.0"}
	if _, ok := c.decide(policyAgent(late, "1.0.0", nil), prior, set, start); !ok {
		t.Fatal("an agent already offered the release was held back by its wave")
	}
	// Rolling back (a downgrade) is not a rollout: every agent gets it.
	back := policySet(t, `
rules:
  - name: back
    kind: package_target
    when: "true"
    target: {version: "1.0.0", allow_downgrade: true}
  - name: canary
    kind: rollout
    when: "true"
    waves: [1, 100]
    soak: 24h
`)
	if o, ok := c.decide(policyAgent(late, "1.1.0", nil), nil, back, start); !ok || !o.Downgrade {
		t.Fatalf("rollback held back by a rollout: %v %+v", ok, o)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// BenchmarkDecidePolicies50k: what an offer decision costs per agent with
// policies in force (target by CEL, channel resolution, rollout gate), for
// 50,000 agents.
func BenchmarkDecidePolicies50k(b *testing.B) {
	set, err := policies.Compile(map[string][]byte{"p.yaml": []byte(`
rules:
  - name: eu
    kind: package_target
    when: '"region" in agent.labels && agent.labels["region"] == "eu"'
    target: {version: "1.0.0", allow_downgrade: true}
  - name: all
    kind: package_target
    when: agent.type == "otelcol"
    target: {channel: stable}
  - name: canary
    kind: rollout
    when: release.type == "otelcol"
    waves: [1, 10, 100]
    soak: 1h
`)})
	if err != nil {
		b.Fatal(err)
	}
	c := testCatalog(nil, rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseActive), rel("1.2.0-rc1", state.ReleaseActive))
	at := now()
	c.setStarted(rolloutKey("otelcol", "1.1.0", "canary"), at.Add(-90*time.Minute))
	agents := make([]Agent, 50_000)
	regions := []string{"eu", "us", "ap"}
	for i := range agents {
		agents[i] = policyAgent("agent-"+strconv.Itoa(i), "1.0.0", map[string]string{"region": regions[i%3]})
	}
	b.ResetTimer()
	for range b.N {
		offered := 0
		for _, a := range agents {
			if _, ok := c.decide(a, nil, set, at); ok {
				offered++
			}
		}
		if offered == 0 {
			b.Fatal("nothing offered")
		}
	}
}
