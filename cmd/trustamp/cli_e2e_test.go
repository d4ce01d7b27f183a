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

func TestTokenAndAgentsCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	opampAddr := servertest.StartIn(t, dir, "").OpAMPAddr

	out, _, err := run(t, "token", "create", "--data", dir, "--uses", "2", "--ttl", "10m", "--label", "site=fra", "--label", "tier=edge")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, "tse_") || strings.Contains(token, "\n") {
		t.Fatalf("token create printed %q, want the token alone", out)
	}
	if _, _, err := run(t, "token", "create", "--data", dir, "--label", "novalue"); err == nil {
		t.Fatal("--label without = accepted")
	}

	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem"))
	a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: "wss://" + opampAddr + "/v1/opamp", CAPEM: caPEM})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Enroll(ctx, token); err != nil {
		t.Fatal(err)
	}

	out, _, err = run(t, "agents", "list", "--data", dir, "--label", "site=fra", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var agents []api.Agent
	if err := json.Unmarshal([]byte(out), &agents); err != nil {
		t.Fatalf("agents list -o json: %v\n%s", err, out)
	}
	if len(agents) != 1 || agents[0].UID != a.UID.String() || agents[0].Labels["tier"] != "edge" {
		t.Fatalf("agents list: %+v", agents)
	}
	out, _, err = run(t, "agents", "list", "--data", dir)
	if err != nil || !strings.Contains(out, "UID") || !strings.Contains(out, a.UID.String()) {
		t.Fatalf("agents list table: %v\n%s", err, out)
	}
	out, _, err = run(t, "agents", "show", a.UID.String(), "--data", dir)
	if err != nil || !strings.Contains(out, "site=fra,tier=edge") {
		t.Fatalf("agents show: %v\n%s", err, out)
	}
	if _, _, err := run(t, "agents", "show", "00000000-0000-0000-0000-000000000000", "--data", dir); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("agents show of an unknown uid: %v", err)
	}
	out, _, err = run(t, "certs", "list", "--data", dir, "-o", "json")
	var certs []api.Certificate
	if err != nil || json.Unmarshal([]byte(out), &certs) != nil || len(certs) != 1 || certs[0].UID != a.UID.String() || certs[0].Status != "offered" {
		t.Fatalf("certs list: %v\n%s", err, out)
	}
	out, _, err = run(t, "rotate", a.UID.String(), "--data", dir, "--no-wait", "-o", "json")
	var rot api.RotationStatus
	if err != nil || json.Unmarshal([]byte(out), &rot) != nil || rot.Total != 1 || rot.Selector != "uids:"+a.UID.String() {
		t.Fatalf("rotate --no-wait: %v\n%s", err, out)
	}
	if _, _, err := run(t, "rotate", "--data", dir); err == nil {
		t.Fatal("rotate with no selection accepted")
	}
	out, _, err = run(t, "ca", "rotate-intermediate", "--data", dir, "-o", "json")
	var roll api.IntermediateRollover
	if err != nil || json.Unmarshal([]byte(out), &roll) != nil || roll.Current.Serial == "" || roll.Current.Serial == roll.Previous.Serial {
		t.Fatalf("ca rotate-intermediate: %v\n%s", err, out)
	}
	if _, _, err := run(t, "ca", "rotate-root", "--data", dir, "-o", "json"); err != nil {
		t.Fatalf("ca rotate-root: %v", err)
	}
	if _, _, err := run(t, "ca", "rotate-root", "--data", dir); err == nil {
		t.Fatal("second root rollover accepted during the overlap")
	}
	if _, _, err := run(t, "ca", "rotate-root", "--finish", "--data", dir); err != nil {
		t.Fatalf("ca rotate-root --finish: %v", err)
	}
	// Without a running server's credential, the CLI says what to do.
	if _, _, err := run(t, "agents", "list", "--data", t.TempDir()); err == nil || !strings.Contains(err.Error(), "serve") {
		t.Fatalf("no local server: %v", err)
	}
}
