package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// run executes the CLI in-process and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestInitPrintsTokenOnceAndIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, _, err := run(t, "init", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, "tsa_") || strings.Contains(token, "\n") {
		t.Fatalf("stdout = %q, want the admin token alone", out)
	}
	out, stderr, err := run(t, "init", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" || !strings.Contains(stderr, "nothing created") {
		t.Fatalf("second init printed %q / %q", out, stderr)
	}
	// The token is stored only as a hash: nowhere in the data dir in the clear.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(token)) {
				t.Errorf("%s contains the admin token in the clear", p)
			}
		}
		return nil
	})
}

// TestAuditVerifyCatchesEditedRow is the tamper test the audit log exists
// for: one row edited directly in the database, and verify names it.
func TestAuditVerifyCatchesEditedRow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "audit", "verify", "--data", dir); err != nil {
		t.Fatalf("fresh log does not verify: %v", err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec("UPDATE audit_entries SET actor = 'someone-innocent' WHERE seq = 2")
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("tamper: %v (%d rows)", err, n)
	}
	out, _, err := run(t, "audit", "verify", "--data", dir, "-o", "json")
	if err == nil {
		t.Fatal("verify passed a tampered log")
	}
	var got struct {
		OK       bool `json:"ok"`
		FirstBad struct {
			Seq    int64  `json:"Seq"`
			Reason string `json:"Reason"`
		} `json:"first_bad"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("verify -o json: %v\n%s", err, out)
	}
	if got.OK || got.FirstBad.Seq != 2 || !strings.Contains(got.FirstBad.Reason, "hash mismatch") {
		t.Fatalf("verify reported %+v, want entry 2 hash mismatch", got)
	}
	if !strings.Contains(err.Error(), "entry 2") {
		t.Fatalf("error %q does not name entry 2", err)
	}
}

func TestAuditExportVerifyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if _, _, err := run(t, "audit", "export", "--data", dir, "--out", file); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file mode %v, want 0600", fi.Mode().Perm())
	}
	out, _, err := run(t, "audit", "verify", file, "--key", filepath.Join(dir, "keys", "audit.pub.pem"))
	if err != nil || !strings.Contains(out, "OK") || !strings.Contains(out, "--key") {
		t.Fatalf("verify export: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(file)
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"type":"entry","seq":1,`)) {
			lines[i] = bytes.Replace(l, []byte(`"actor":"system:init"`), []byte(`"actor":"someone-else"`), 1)
		}
	}
	os.WriteFile(file, bytes.Join(lines, []byte("\n")), 0o600)
	if _, _, err := run(t, "audit", "verify", file); err == nil || !strings.Contains(err.Error(), "entry 1") {
		t.Fatalf("edited export: %v, want entry 1 named", err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"2026-11-01T00:00:00Z": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-5h", "2026-13-01"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}

func TestBadOutputAndConfig(t *testing.T) {
	if _, _, err := run(t, "version", "-o", "yaml"); err == nil {
		t.Error("version -o yaml accepted")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "trustamp.yaml"), []byte("state:\n  drvier: sqlite\n"), 0o600)
	_, _, err := run(t, "audit", "verify", "--data", dir)
	if err == nil || !strings.Contains(err.Error(), "drvier") {
		t.Fatalf("unknown config key: %v, want it named", err)
	}
}

func TestParseSelector(t *testing.T) {
	got, err := parseSelector(`labels.env == "prod" && labels.site=="fra"`)
	if err != nil || len(got) != 2 || got["env"] != "prod" || got["site"] != "fra" {
		t.Fatalf("parseSelector = %v, %v", got, err)
	}
	for _, bad := range []string{`labels.env != "prod"`, `env == "prod"`, `labels.env == prod`, `labels.env == "a" || labels.b == "c"`} {
		if _, err := parseSelector(bad); err == nil {
			t.Errorf("parseSelector(%q) accepted", bad)
		}
	}
}

func TestKeysSignVerifyCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TRUSTAMP_KEY_PASSPHRASE", "release-team")
	if _, _, err := run(t, "keys", "generate", "--out", dir); err != nil {
		t.Fatal(err)
	}
	art := filepath.Join(dir, "otelcol.tar.gz")
	os.WriteFile(art, bytes.Repeat([]byte("build"), 1000), 0o644)
	out, _, err := run(t, "sign", "--key", filepath.Join(dir, "publisher.key"), "--raw", art)
	if err != nil || !strings.Contains(out, "sha256:") {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	if _, err := os.Stat(art + ".sig"); err != nil {
		t.Fatal("--raw wrote no .sig")
	}
	if out, _, err := run(t, "verify", "--key", filepath.Join(dir, "publisher.pub"), art); err != nil || !strings.HasPrefix(out, "OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	os.WriteFile(art, []byte("swapped"), 0o644)
	if _, _, err := run(t, "verify", "--key", filepath.Join(dir, "publisher.pub"), art); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("verify of a swapped artifact: %v", err)
	}
	t.Setenv("TRUSTAMP_KEY_PASSPHRASE", "wrong")
	if _, _, err := run(t, "sign", "--key", filepath.Join(dir, "publisher.key"), art); err == nil {
		t.Fatal("sign with the wrong passphrase succeeded")
	}
}
