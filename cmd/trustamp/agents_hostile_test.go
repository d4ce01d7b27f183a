package main

import (
	"context"
	"database/sql"
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

// TestAgentsListSurvivesHostileRow: one agent whose stored description is
// nested past encoding/json's depth limit (data written before ingest
// limits, put straight into the database) does not break `agents list`:
// the table and -o json list every agent, the hostile one marked.
func TestAgentsListSurvivesHostileRow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	se := servertest.StartIn(t, dir, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := se.Admin.CreateToken(ctx, api.TokenRequest{Uses: 2, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem"))
	var uids []string
	for i := 0; i < 2; i++ {
		a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: se.URL("http"), CAPEM: caPEM})
		if err := a.Enroll(ctx, tok.Token); err != nil {
			t.Fatal(err)
		}
		uids = append(uids, a.UID.String())
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "state.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deep := strings.Repeat(`{"kvlist_value":{"values":[{"key":"k","value":`, 3400) + `1` + strings.Repeat("}]}}", 3400)
	if _, err := db.ExecContext(ctx, "UPDATE agents SET description = ? WHERE uid = ?", deep, uids[0]); err != nil {
		t.Fatal(err)
	}

	out, _, err := run(t, "agents", "list", "--data", dir, "-o", "json")
	if err != nil {
		t.Fatalf("agents list -o json with a hostile row: %v\n%.300s", err, out)
	}
	var agents []api.Agent
	if err := json.Unmarshal([]byte(out), &agents); err != nil || len(agents) != 2 {
		t.Fatalf("agents list -o json: %d rows, %v", len(agents), err)
	}
	if agents[0].UID == agents[1].UID || agents[0].UID != uids[0] && agents[0].UID != uids[1] || agents[1].UID != uids[0] && agents[1].UID != uids[1] {
		t.Fatalf("agents list -o json: rows %q and %q, want %v", agents[0].UID, agents[1].UID, uids)
	}
	for _, a := range agents {
		if (a.UID == uids[0]) != (a.EncodeError != "") {
			t.Fatalf("row %s: encode_error %q", a.UID, a.EncodeError)
		}
	}
	out, _, err = run(t, "agents", "list", "--data", dir)
	if err != nil || !strings.Contains(out, uids[0]) || !strings.Contains(out, uids[1]) {
		t.Fatalf("agents list table with a hostile row: %v\n%.300s", err, out)
	}
}
