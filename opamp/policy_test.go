package opamp_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/policies"
)

// setPolicies replaces the server's policy files and reloads them through
// the admin API.
func (e *env) setPolicies(t *testing.T, files map[string]string) {
	t.Helper()
	dir := filepath.Join(e.dir.Layout.Root, "policies")
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Admin.ReloadPolicies(ctx10(t)); err != nil {
		t.Fatal(err)
	}
}

// A certificate_profile rule picks the profile an enrolling agent's first
// certificate is made with, from its token's labels.
func TestPolicyCertificateProfile(t *testing.T) {
	e := start(t, "certificates:\n  profiles:\n    short:\n      lifetime: 2h\n")
	e.setPolicies(t, map[string]string{"certs.yaml": `
rules:
  - name: prod-short
    kind: certificate_profile
    when: '"env" in agent.labels && agent.labels["env"] == "prod" && cert.destination == "opamp"'
    profile: short
`})
	lifetime := func(labels map[string]string) time.Duration {
		a := e.agent("websocket")
		if err := a.Enroll(ctx10(t), e.token(1, "1h", labels)); err != nil {
			t.Fatal(err)
		}
		c := leafOf(t, a.Cert())
		return c.NotAfter.Sub(c.NotBefore)
	}
	if got := lifetime(map[string]string{"env": "prod"}); got < 2*time.Hour || got > 2*time.Hour+2*time.Minute {
		t.Fatalf("prod agent's certificate lives %v, want the short profile's 2h", got)
	}
	if got := lifetime(map[string]string{"env": "dev"}); got < 24*time.Hour {
		t.Fatalf("dev agent's certificate lives %v, want the default 24h", got)
	}
	// A rule naming a profile that is not configured is refused; the
	// previous rules stay.
	dir := filepath.Join(e.dir.Layout.Root, "policies")
	os.WriteFile(filepath.Join(dir, "certs.yaml"), []byte(strings.ReplaceAll(`
rules:
  - name: prod-short
    kind: certificate_profile
    when: "true"
    profile: NAME
`, "NAME", "nonesuch")), 0o600)
	if _, err := e.Admin.ReloadPolicies(ctx10(t)); err == nil || !strings.Contains(err.Error(), `profile "nonesuch" is not configured`) {
		t.Fatalf("reload with an unknown profile: %v", err)
	}
	if got := lifetime(map[string]string{"env": "prod"}); got > 3*time.Hour {
		t.Fatalf("after a refused reload a prod certificate lives %v, want the previous rule's 2h", got)
	}
	if !e.hasAudit("policy.load", "certs.yaml") {
		t.Fatal("accepted policies not audited with their files")
	}
}

// An auto_revoke rule revokes an agent caught impersonating another: its
// certificate is revoked (keyCompromise, by the rule) and it is
// quarantined.
func TestPolicyAutoRevokeImpersonation(t *testing.T) {
	e := start(t, "")
	e.setPolicies(t, map[string]string{"revoke.yaml": `
rules:
  - name: impersonation-revokes
    kind: auto_revoke
    when: event.kind == "impersonation"
    action: revoke
    reason: keyCompromise
`})
	ctx := ctx10(t)
	tok := e.token(3, "10m", nil)
	a, b, c := e.agent("websocket"), e.agent("websocket"), e.agent("websocket")
	for _, ag := range []*loadgen.Agent{a, b, c} {
		if err := ag.Enroll(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Connect(ctx, c.UID, nil); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	var se *loadgen.ServerError
	if err := a.Connect(ctx, b.UID, func(*loadgen.ServerError) {}); err != nil && !errors.As(err, &se) {
		t.Fatalf("connect: %v", err)
	}
	defer a.Stop(context.Background())
	serial := hex.EncodeToString(leafOf(t, a.Cert()).SerialNumber.Bytes())
	waitFor(t, "impersonator revoked", func() bool { _, ok := e.srv.Revocations.Revoked(serial); return ok })
	if !e.hasAudit("agent.revoke", a.UID.String()) {
		t.Fatal("automatic revocation not audited")
	}
	if why, ok := e.srv.Revocations.Revoked(serial); !ok || why != "keyCompromise" {
		t.Fatalf("impersonator's certificate: revoked=%v reason=%q", ok, why)
	}
	got, err := e.Admin.Agent(ctx, a.UID.String())
	if err != nil || got.Quarantine == nil || !strings.HasPrefix(got.Quarantine.Actor, "policy:impersonation-revokes") {
		t.Fatalf("impersonator's record %+v (%v), want quarantined by the rule", got.Quarantine, err)
	}
	// The impersonated agent and a bystander are untouched.
	for _, other := range []*loadgen.Agent{b, c} {
		if _, ok := e.srv.Revocations.Revoked(hex.EncodeToString(leafOf(t, other.Cert()).SerialNumber.Bytes())); ok {
			t.Fatalf("agent %s revoked too", other.UID)
		}
	}
	if e.srv.OpAMP.Connected(c.UID.String()) != 1 {
		t.Fatal("bystander disconnected")
	}
}

// TestPolicyStagedRollout: 200 agents, a rollout in four waves an hour
// apart. Each wave is offered the release only once the previous soak has
// passed; when half of the third wave fails to install, the failure
// rate passes the rule's threshold, the rollout halts, and the last wave
// is never offered the release.
func TestPolicyStagedRollout(t *testing.T) {
	e := start(t, "packages:\n  halt_min_failures: 3\n")
	const rules = `
rules:
  - name: collectors
    kind: package_target
    when: agent.type == "otelcol"
    target: {channel: stable}
  - name: staged
    kind: rollout
    when: release.type == "otelcol"
    waves: [10, 30, 60, 100]
    soak: 1h
    halt_failure_rate: 0.2
`
	set, err := policies.Compile(map[string][]byte{"rollout.yaml": []byte(rules)})
	if err != nil {
		t.Fatal(err)
	}
	staged := set.Rules(policies.KindRollout)[0]
	pub := newPublisher(t, e, "release-team", "otelcol")
	pub.publish(t, e, "otelcol", "1.0.0", []byte("build 1.0.0"))

	type member struct {
		a    *loadgen.Agent
		wave int
		fail bool
		mu   sync.Mutex
		seen int // offers of 1.1.0 received
	}
	const n = 200
	members := make([]*member, n)
	failing := 0
	tok := e.token(n, "1h", nil)
	for i := range members {
		m := &member{}
		a, err := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.url("ws"), CAPEM: e.CAPEM, Heartbeat: 500 * time.Millisecond,
			Packages: &loadgen.PackagesConfig{Type: "otelcol", Version: "1.0.0", OS: "linux", Arch: "amd64",
				OnOffer: func(pa *protobufs.PackagesAvailable) {
					if pa.GetPackages()[""].GetVersion() == "1.1.0" {
						m.mu.Lock()
						m.seen++
						m.mu.Unlock()
					}
				},
				Verify: func(*protobufs.PackageAvailable, []byte) error {
					if m.fail {
						return errors.New("injected install failure")
					}
					return nil
				}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Enroll(ctx10(t), tok); err != nil {
			t.Fatal(err)
		}
		m.a, m.wave = a, staged.Wave(a.UID.String())
		if m.wave == 2 {
			// Every other agent of the third wave fails to install: about
			// 30 of the about 120 agents offered by then, past 20%.
			m.fail = failing%2 == 0
			failing++
		}
		members[i] = m
	}
	for _, m := range members {
		if err := m.a.Connect(ctx10(t), m.a.UID, nil); err != nil {
			t.Fatal(err)
		}
		defer m.a.Stop(context.Background())
	}
	e.setPolicies(t, map[string]string{"rollout.yaml": rules})
	pub.publish(t, e, "otelcol", "1.1.0", []byte("build 1.1.0"))

	offered := func(wave int) (got, of int) {
		for _, m := range members {
			if m.wave != wave {
				continue
			}
			of++
			m.mu.Lock()
			if m.seen > 0 {
				got++
			}
			m.mu.Unlock()
		}
		return got, of
	}
	installedAll := func(wave int) bool {
		for _, m := range members {
			if v, _ := m.a.Installed(); m.wave == wave && v != "1.1.0" {
				return false
			}
		}
		return true
	}
	settle := func() { time.Sleep(2 * time.Second) } // several heartbeats

	waitFor(t, "wave 1 installed", func() bool { return installedAll(0) })
	settle()
	if got, _ := offered(1); got != 0 {
		t.Fatalf("wave 2: %d agents offered before the soak ended", got)
	}
	e.Clock.Advance(time.Hour)
	waitFor(t, "wave 2 installed", func() bool { return installedAll(1) })
	settle()
	if got, _ := offered(2); got != 0 {
		t.Fatalf("wave 3: %d agents offered before the soak ended", got)
	}
	e.Clock.Advance(time.Hour)
	waitFor(t, "rollout halted", func() bool {
		rs, err := e.Admin.Packages(ctx10(t), nil)
		if err != nil {
			return false
		}
		for _, r := range rs {
			if r.Version == "1.1.0" && r.State == "halted" {
				return true
			}
		}
		return false
	})
	if !e.hasAudit("release.halt", "1.1.0") {
		t.Fatal("halt not audited")
	}
	e.Clock.Advance(time.Hour)
	settle()
	if got, of := offered(3); got != 0 {
		t.Fatalf("wave 4: %d of %d agents offered a halted release", got, of)
	}
	for w := range 3 {
		got, of := offered(w)
		t.Logf("wave %d: offered to %d of %d", w+1, got, of)
	}
	// Who installed it keeps it; no failing agent runs it.
	for _, m := range members {
		if v, _ := m.a.Installed(); m.fail && v == "1.1.0" {
			t.Fatalf("agent %s installed a release it failed", m.a.UID)
		}
	}
}
