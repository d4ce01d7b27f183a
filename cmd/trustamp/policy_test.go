package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/loadgen"
)

const prodShort = `
rules:
  - name: prod-short
    kind: certificate_profile
    when: '"env" in agent.labels && agent.labels["env"] == "prod"'
    profile: short
`

func TestPolicyCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	env := servertest.StartIn(t, dir, "certificates:\n  profiles:\n    short:\n      lifetime: 1h\n")

	// check: offline, against the data dir's configured profiles.
	cand := t.TempDir()
	os.WriteFile(filepath.Join(cand, "certs.yaml"), []byte(prodShort), 0o600)
	out, _, err := run(t, "policy", "check", cand, "--data", dir)
	if err != nil || !strings.Contains(out, "prod-short") || !strings.Contains(out, "ok: 1 files, 1 rules") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "certs.yaml"), []byte(strings.ReplaceAll(prodShort, "profile: short", "profile: tiny")), 0o600)
	if _, _, err := run(t, "policy", "check", bad, "--data", dir); err == nil || !strings.Contains(err.Error(), `certs.yaml:3: rule "prod-short": profile "tiny"`) {
		t.Fatalf("check of an unknown profile: %v", err)
	}
	os.WriteFile(filepath.Join(bad, "certs.yaml"), []byte(strings.ReplaceAll(prodShort, `== "prod"`, `== prod`)), 0o600)
	if _, _, err := run(t, "policy", "check", bad, "--data", dir); err == nil || !strings.Contains(err.Error(), "certs.yaml:3") || !strings.Contains(err.Error(), "undeclared reference to 'prod'") {
		t.Fatalf("check of a CEL error: %v", err)
	}
	if _, _, err := run(t, "policy", "check", filepath.Join(cand, "missing")); err == nil {
		t.Fatal("check of a missing directory passed")
	}

	// Two agents: prod and dev.
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	uids := map[string]string{}
	for _, envLabel := range []string{"prod", "dev"} {
		tok, err := env.Admin.CreateToken(ctx, api.TokenRequest{Labels: map[string]string{"env": envLabel}})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: "wss://" + env.OpAMPAddr + "/v1/opamp", CAPEM: caPEM})
		if err := a.Enroll(ctx, tok.Token); err != nil {
			t.Fatal(err)
		}
		uids[envLabel] = a.UID.String()
	}

	// simulate: only the prod agent changes profile; nothing goes live.
	out, _, err = run(t, "policy", "simulate", cand, "--data", dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var sim api.SimulateResult
	if err := json.Unmarshal([]byte(out), &sim); err != nil {
		t.Fatal(err)
	}
	if sim.Changed != 1 || len(sim.Agents) != 2 {
		t.Fatalf("simulate: %d of %d changed\n%s", sim.Changed, len(sim.Agents), out)
	}
	for _, a := range sim.Agents {
		want := "default"
		if a.UID == uids["prod"] {
			want = "short"
		}
		if a.Current.Profile != "default" || a.Next.Profile != want {
			t.Fatalf("agent %s: profile %s -> %s, want default -> %s", a.UID, a.Current.Profile, a.Next.Profile, want)
		}
	}
	out, _, err = run(t, "policy", "simulate", cand, "--data", dir, "--changed")
	if err != nil || !strings.Contains(out, "default -> short") || strings.Contains(out, uids["dev"]) || !strings.Contains(out, "1 of 1 agents would change") {
		t.Fatalf("simulate --changed: %v\n%s", err, out)
	}
	if out, _, _ := run(t, "policy", "show", "--data", dir, "-o", "json"); strings.Contains(out, "prod-short") {
		t.Fatal("simulate put the candidate policy live")
	}

	// reload: copy into the server's directory; a broken file is refused
	// and the running set stays.
	live := filepath.Join(dir, "policies")
	os.WriteFile(filepath.Join(live, "certs.yaml"), []byte(prodShort), 0o600)
	out, _, err = run(t, "policy", "reload", "--data", dir)
	if err != nil || !strings.Contains(out, "prod-short") || !strings.Contains(out, "certs.yaml  sha256:") {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(live, "certs.yaml"), []byte("rules: ["), 0o600)
	if _, _, err := run(t, "policy", "reload", "--data", dir); err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), "previous policies stay in force") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	out, _, err = run(t, "policy", "show", "--data", dir)
	if err != nil || !strings.Contains(out, "prod-short") || !strings.Contains(out, "last reload refused") {
		t.Fatalf("show after a refused reload: %v\n%s", err, out)
	}
	// An auditor may simulate but not reload.
	tok, _, err := run(t, "admin-token", "create", "--name", "audrey", "--role", "auditor", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "policy", "reload", "--data", dir, "--token", strings.TrimSpace(tok)); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("auditor reload: %v", err)
	}
}
