package policies

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func loadExample(t *testing.T, name string) *Set {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", name))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(map[string][]byte{name: b})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// The examples load together, as an operator copying them all would.
func TestExamplesLoadTogether(t *testing.T) {
	s, err := Load("examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 4 || s.Len() != 8 {
		t.Fatalf("%d files, %d rules", len(s.Files), s.Len())
	}
	// Together, the region pin wins over the stable channel for eu-west.
	eu := Agent{UID: "a", Type: "otelcol", Labels: map[string]string{"region": "eu-west"}}
	if r := s.Target(eu, now); r == nil || r.Name != "eu-west-hold" {
		t.Fatalf("eu-west agent targeted by %v", r)
	}
	if r := s.Target(Agent{UID: "b", Type: "otelcol", Labels: map[string]string{}}, now); r == nil || r.Name != "collectors-stable" {
		t.Fatalf("unlabelled collector targeted by %v", r)
	}
}

func TestExampleShortLivedProdCerts(t *testing.T) {
	s := loadExample(t, "short-lived-prod-certs.yaml")
	if err := s.CheckProfiles([]string{"default", "short"}); err != nil {
		t.Fatal(err)
	}
	if r := s.Profile(Agent{Labels: map[string]string{"env": "prod"}}, Cert{}, now); r == nil || r.Profile != "short" {
		t.Fatalf("prod agent: %v", r)
	}
	for _, labels := range []map[string]string{{"env": "dev"}, {}} {
		if r := s.Profile(Agent{Labels: labels}, Cert{}, now); r != nil {
			t.Fatalf("agent with labels %v got %s", labels, r.Profile)
		}
	}
	if n := s.Rules(KindCertificateProfile)[0].EvalErrors(); n != 0 {
		t.Fatalf("%d evaluation errors on agents without an env label", n)
	}
}

func TestExampleCanaryRollout(t *testing.T) {
	s := loadExample(t, "canary-rollout.yaml")
	if r := s.Target(Agent{Type: "otelcol"}, now); r == nil || r.Target.Channel != "stable" || r.Target.AllowDowngrade {
		t.Fatalf("collector target %v", r)
	}
	if r := s.Target(Agent{Type: "fluentbit"}, now); r != nil {
		t.Fatalf("fluentbit targeted by %s", r.Name)
	}
	r := s.Rollout(Release{Type: "otelcol", Version: "0.115.0", Labels: map[string]string{"channel": "stable"}}, now)
	if r == nil || r.Name != "collectors-canary" {
		t.Fatalf("rollout %v", r)
	}
	if s.Rollout(Release{Type: "otelcol", Version: "0.116.0-rc1", Labels: map[string]string{"channel": "rc"}}, now) != nil {
		t.Fatal("a release candidate is rolled out by the stable canary")
	}
	counts := make([]int, 3)
	const n = 20_000
	for i := range n {
		counts[r.Wave(uidN(i))]++
	}
	// Cumulative 1%, 10%, 100%: 1%, 9%, 90% per wave.
	for i, want := range []float64{0.01, 0.09, 0.90} {
		if got := float64(counts[i]) / n; math.Abs(got-want) > 0.01 {
			t.Fatalf("wave %d holds %.3f of agents, want %.2f", i, got, want)
		}
	}
	if r.OpenWaves(now, now.Add(59*60e9)) != 1 || r.OpenWaves(now, now.Add(2*3600e9)) != 3 {
		t.Fatal("waves do not open an hour apart")
	}
	if r.Halts(5, 100) || !r.Halts(6, 100) {
		t.Fatal("halt threshold is not 5%")
	}
}

func TestExamplePinRegionDowngrade(t *testing.T) {
	s := loadExample(t, "00-pin-region-downgrade.yaml")
	r := s.Target(Agent{Type: "otelcol", Labels: map[string]string{"region": "eu-west"}}, now)
	if r == nil || r.Target.Version != "0.114.2" || !r.Target.AllowDowngrade {
		t.Fatalf("eu-west target %v", r)
	}
	if r := s.Target(Agent{Type: "fluentbit", Labels: map[string]string{"region": "eu-west"}}, now); r != nil {
		t.Fatal("the otelcol pin applied to a fluentbit agent")
	}
	if r := s.Target(Agent{Type: "otelcol", Labels: map[string]string{"region": "us-east"}}, now); r != nil {
		t.Fatal("the eu-west pin applied to us-east")
	}
}

func TestExampleAutoRevoke(t *testing.T) {
	s := loadExample(t, "auto-revoke-impersonation.yaml")
	a := Agent{UID: "a"}
	for _, tt := range []struct {
		event  Event
		action string // "" for none
		reason string
	}{
		{Event{Kind: EventImpersonation, Count: 1}, "revoke", "keyCompromise"},
		{Event{Kind: EventRevokedPresented, Count: 2}, "", ""},
		{Event{Kind: EventRevokedPresented, Count: 3}, "quarantine", "revoked certificate presented repeatedly"},
		{Event{Kind: EventIdentityChanged, Count: 1, Detail: map[string]string{"host.name": "a -> b"}}, "quarantine", "identifying attributes changed"},
		{Event{Kind: EventCSRRefused, Count: 4}, "", ""},
		{Event{Kind: EventCSRRefused, Count: 5}, "quarantine", "repeated CSR refusals"},
	} {
		r := s.AutoRevoke(a, tt.event, now)
		action, reason := "", ""
		if r != nil {
			action, reason = r.Action, r.Reason
		}
		if action != tt.action || reason != tt.reason {
			t.Errorf("%s x%d: %q %q, want %q %q", tt.event.Kind, tt.event.Count, action, reason, tt.action, tt.reason)
		}
	}
}

func uidN(i int) string { return fmt.Sprintf("0193a6c1-%04x-7000-8000-%012x", i%0x10000, i*7919) }
