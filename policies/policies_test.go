package policies

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func compile(t *testing.T, yaml string) *Set {
	t.Helper()
	s, err := Compile(map[string][]byte{"test.yaml": []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const mixed = `
rules:
  - name: prod-eu-short
    kind: certificate_profile
    when: agent.labels["env"] == "prod" && agent.labels["region"] == "eu"
    profile: short-eu
  - name: prod-short
    kind: certificate_profile
    when: agent.labels["env"] == "prod"
    profile: short
  - name: expiring-soon
    kind: certificate_profile
    when: cert.not_after < now + duration("1h")
    profile: urgent
  - name: eu-pinned
    kind: package_target
    when: agent.labels["region"] == "eu" && agent.type == "otelcol"
    target: {type: otelcol, version: "0.114.2", allow_downgrade: true}
  - name: stable
    kind: package_target
    when: agent.type == "otelcol"
    target: {type: otelcol, channel: stable}
  - name: canary
    kind: rollout
    when: release.type == "otelcol"
    waves: [1, 10, 100]
    soak: 1h
    halt_failure_rate: 0.05
  - name: impersonation
    kind: auto_revoke
    when: event.kind == "impersonation"
    action: revoke
    reason: keyCompromise
  - name: csr-storm
    kind: auto_revoke
    when: event.kind == "csr_refused" && event.count >= 5
    action: quarantine
`

func TestFirstMatchPerKind(t *testing.T) {
	s := compile(t, mixed)
	cases := []struct {
		labels map[string]string
		cert   Cert
		want   string
	}{
		{map[string]string{"env": "prod", "region": "eu"}, Cert{NotAfter: now.Add(24 * time.Hour)}, "prod-eu-short"},
		{map[string]string{"env": "prod", "region": "us"}, Cert{NotAfter: now.Add(time.Minute)}, "prod-short"},
		{map[string]string{"env": "dev"}, Cert{NotAfter: now.Add(time.Minute)}, "expiring-soon"},
		{map[string]string{"env": "dev"}, Cert{NotAfter: now.Add(24 * time.Hour)}, ""},
	}
	for _, c := range cases {
		r := s.Profile(Agent{Labels: c.labels}, c.cert, now)
		if got := name(r); got != c.want {
			t.Errorf("profile for %v: %q, want %q", c.labels, got, c.want)
		}
	}
	r := s.Target(Agent{Type: "otelcol", Labels: map[string]string{"region": "eu"}}, now)
	if name(r) != "eu-pinned" || r.Target.Version != "0.114.2" || !r.Target.AllowDowngrade {
		t.Fatalf("target %+v", r)
	}
	// No region label: the first rule fails to evaluate, which is no match.
	if r := s.Target(Agent{Type: "otelcol", Labels: map[string]string{}}, now); name(r) != "stable" || r.Target.Channel != "stable" || r.Target.AllowDowngrade {
		t.Fatalf("target %+v", r)
	}
	if n := s.Rules(KindPackageTarget)[0].EvalErrors(); n != 1 {
		t.Fatalf("%d evaluation errors counted, want 1", n)
	}
	if r := s.Target(Agent{Type: "fluent-bit"}, now); r != nil {
		t.Fatalf("fluent-bit got target %s", r.Name)
	}
	if r := s.Rollout(Release{Type: "otelcol", Version: "1.0.0"}, now); name(r) != "canary" {
		t.Fatalf("rollout %v", name(r))
	}
	if r := s.AutoRevoke(Agent{}, Event{Kind: "impersonation"}, now); name(r) != "impersonation" || r.Action != "revoke" || r.Reason != "keyCompromise" {
		t.Fatalf("auto_revoke %+v", r)
	}
	if r := s.AutoRevoke(Agent{}, Event{Kind: "csr_refused", Count: 4}, now); r != nil {
		t.Fatal("4 CSR refusals matched a rule for 5")
	}
	if r := s.AutoRevoke(Agent{}, Event{Kind: "csr_refused", Count: 5}, now); name(r) != "csr-storm" || r.Action != "quarantine" {
		t.Fatalf("auto_revoke %+v", r)
	}
}

func name(r *Rule) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// A broken rule names its file, line and what is wrong; the whole set is
// refused.
func TestRefusals(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"rules:\n  - name: a\n    kind: certificate_profile\n    when: agent.lables[\"env\"] == \"prod\"\n    profile: p\n", "test.yaml:2: rule \"a\": when:"},
		{"rules:\n  - name: a\n    kind: package_target\n    when: cert.serial == \"x\"\n    target: {type: t, version: \"1\"}\n", "undeclared reference to 'cert'"},
		{"rules:\n  - name: a\n    kind: certificate_profile\n    when: agent.uid\n    profile: p\n", "must be a bool expression"},
		{"rules:\n  - name: a\n    kind: certificate_profile\n    when: true\n    profil: p\n", "field profil not found"},
		{"rules:\n  - name: a\n    kind: nonsense\n    when: true\n", "kind \"nonsense\""},
		{"rules:\n  - name: a\n    kind: rollout\n    when: true\n    waves: [10, 5, 100]\n", "waves must increase"},
		{"rules:\n  - name: a\n    kind: rollout\n    when: true\n    waves: [10, 50]\n", "last wave must be 100"},
		{"rules:\n  - name: a\n    kind: auto_revoke\n    when: true\n    action: revoke\n    reason: oops\n", "RFC 5280"},
		{"rules:\n  - name: a\n    kind: package_target\n    when: true\n    target: {type: t, version: \"1\", channel: c}\n", "not both"},
		{"rules:\n  - name: a\n    kind: certificate_profile\n    when: true\n    profile: p\n  - name: a\n    kind: certificate_profile\n    when: true\n    profile: q\n", "name already used at test.yaml:2"},
		{"rules: [\n", "test.yaml"},
	}
	for _, c := range cases {
		_, err := Compile(map[string][]byte{"test.yaml": []byte(c.yaml)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
}

// Waves: the same uid always lands in the same wave, and over 10,000 uids
// the wave sizes are within 1% of their targets.
func TestStableWaves(t *testing.T) {
	s := compile(t, mixed)
	r := s.Rollout(Release{Type: "otelcol"}, now)
	reloaded := compile(t, mixed).Rules(KindRollout)[0]
	const n = 10_000
	counts := make([]int, len(r.Waves))
	for i := 0; i < n; i++ {
		uid := fmt.Sprintf("0193a6c1-%04x-7000-8000-%012x", i, i*7919)
		w := r.Wave(uid)
		if again := reloaded.Wave(uid); again != w {
			t.Fatalf("uid %s: wave %d, then %d after a reload", uid, w, again)
		}
		counts[w]++
	}
	prev := 0.0
	for i, w := range r.Waves {
		want := (w - prev) / 100 * n
		if math.Abs(float64(counts[i])-want) > 0.01*n {
			t.Errorf("wave %d has %d agents, want %.0f ± 1%%", i, counts[i], want)
		}
		prev = w
	}
	start := now
	for _, c := range []struct {
		after time.Duration
		open  int
	}{{0, 1}, {59 * time.Minute, 1}, {time.Hour, 2}, {2 * time.Hour, 3}, {10 * time.Hour, 3}} {
		if got := r.OpenWaves(start, start.Add(c.after)); got != c.open {
			t.Errorf("after %s: %d waves open, want %d", c.after, got, c.open)
		}
	}
	if !r.Halts(6, 100) || r.Halts(5, 100) || r.Halts(0, 0) {
		t.Fatal("halt threshold 5%")
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "20-b.yaml"), []byte("rules:\n  - name: b\n    kind: certificate_profile\n    when: true\n    profile: b\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "10-a.yml"), []byte("rules:\n  - name: a\n    kind: certificate_profile\n    when: true\n    profile: a\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("not a policy"), 0o600)
	os.WriteFile(filepath.Join(dir, "30-empty.yaml"), []byte("# nothing yet\n"), 0o600)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Files in name order: 10-a's rule comes first.
	if r := s.Profile(Agent{}, Cert{}, now); name(r) != "a" || len(s.Files) != 3 || s.Files[0].Name != "10-a.yml" || len(s.Files[0].SHA256) != 64 {
		t.Fatalf("rule %v files %+v", name(r), s.Files)
	}
	if s, err := Load(filepath.Join(dir, "missing")); err != nil || len(s.Files) != 0 {
		t.Fatalf("missing dir: %v", err)
	}
}

// BenchmarkEvaluate50k evaluates every rule kind for 50,000 agents.
func BenchmarkEvaluate50k(b *testing.B) {
	s, err := Compile(map[string][]byte{"test.yaml": []byte(mixed)})
	if err != nil {
		b.Fatal(err)
	}
	agents := make([]Agent, 50_000)
	regions := []string{"eu", "us", "ap"}
	for i := range agents {
		agents[i] = Agent{UID: fmt.Sprintf("agent-%d", i), Type: "otelcol", Platform: "linux/amd64",
			Labels: map[string]string{"env": []string{"prod", "dev"}[i%2], "region": regions[i%3]}}
	}
	rel := Release{Type: "otelcol", Version: "1.2.0"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, a := range agents {
			s.Profile(a, Cert{NotAfter: now.Add(time.Hour)}, now)
			if s.Target(a, now) == nil {
				b.Fatal("no target")
			}
			s.Rollout(rel, now).Wave(a.UID)
			s.AutoRevoke(a, Event{Kind: "csr_refused", Count: 1}, now)
		}
	}
}
