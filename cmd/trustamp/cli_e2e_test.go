package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
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

// TestTokenLifecycleCommands: token and admin-token list (table and -o
// json, never a secret) and revoke; a revoked admin token is refused.
func TestTokenLifecycleCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	servertest.StartIn(t, dir, "")
	secret, _, err := run(t, "token", "create", "--data", dir, "--uses", "1000", "--ttl", "720h")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "token", "list", "--data", dir, "-o", "json")
	var ts []api.EnrollmentToken
	if err != nil || json.Unmarshal([]byte(out), &ts) != nil || len(ts) != 1 || ts[0].UsesLeft != 1000 || strings.Contains(out, strings.TrimSpace(secret)) {
		t.Fatalf("token list -o json: %v\n%s", err, out)
	}
	if _, stderr, err := run(t, "token", "revoke", ts[0].ID, "--note", "leaked", "--data", dir); err != nil || !strings.Contains(stderr, "revoked") {
		t.Fatalf("token revoke: %v %s", err, stderr)
	}
	if out, _, err := run(t, "token", "list", "--data", dir); err != nil || !strings.Contains(out, ts[0].ID) || !strings.Contains(out, "revoked") {
		t.Fatalf("token list: %v\n%s", err, out)
	}
	audTok, _, err := run(t, "admin-token", "create", "--name", "audrey", "--role", "auditor", "--data", dir, "-o", "json")
	var aud api.AdminTokenResponse
	if err != nil || json.Unmarshal([]byte(audTok), &aud) != nil {
		t.Fatalf("admin-token create: %v %s", err, audTok)
	}
	if out, _, err := run(t, "admin-token", "list", "--data", dir); err != nil || !strings.Contains(out, aud.ID) || !strings.Contains(out, "auditor") ||
		strings.Contains(out, aud.Token) {
		t.Fatalf("admin-token list: %v\n%s", err, out)
	}
	if _, _, err := run(t, "agents", "list", "--data", dir, "--token", aud.Token); err != nil {
		t.Fatalf("auditor before revocation: %v", err)
	}
	if _, _, err := run(t, "admin-token", "revoke", aud.ID, "--data", dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "agents", "list", "--data", dir, "--token", aud.Token); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("revoked auditor token: %v, want 401", err)
	}
}

func TestRevokeReleaseAndReportCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	opampAddr := servertest.StartIn(t, dir, "").OpAMPAddr
	token, _, err := run(t, "token", "create", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem"))
	a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: "wss://" + opampAddr + "/v1/opamp", CAPEM: caPEM})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Enroll(ctx, strings.TrimSpace(token)); err != nil {
		t.Fatal(err)
	}
	uid := a.UID.String()

	if _, _, err := run(t, "revoke", uid, "--data", dir); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("revoke without --reason: %v", err)
	}
	if _, _, err := run(t, "revoke", uid, "--reason", "lost", "--data", dir); err == nil || !strings.Contains(err.Error(), "keyCompromise") {
		t.Fatalf("revoke with an unknown reason: %v, want the valid reasons listed", err)
	}
	out, stderr, err := run(t, "revoke", uid, "--reason", "affiliationChanged", "--note", "sold", "--data", dir)
	if err != nil || !strings.Contains(out, uid) || !strings.Contains(stderr, "1 agents quarantined") || !strings.Contains(stderr, "CRL number") {
		t.Fatalf("revoke: %v\n%s\n%s", err, out, stderr)
	}
	if out, _, _ := run(t, "agents", "list", "--data", dir); !strings.Contains(out, "yes (affiliationChanged)") {
		t.Fatalf("agents list does not show the quarantine:\n%s", out)
	}
	if _, _, err := run(t, "agents", "release", uid, "--note", "rehired", "--data", dir); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("release with the admin token: %v, want 403", err)
	}
	// Separation of duties: admin cannot mint the role that lifts
	// quarantines; the first security token comes from the host.
	if _, _, err := run(t, "admin-token", "create", "--name", "alice", "--role", "security", "--data", dir); err == nil ||
		!strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "bootstrap-security") {
		t.Fatalf("admin minting a security token: %v, want 403 naming bootstrap-security", err)
	}
	sec, _, err := run(t, "admin-token", "bootstrap-security", "--name", "alice", "--data", dir)
	if err != nil || !strings.HasPrefix(sec, "tsa_") {
		t.Fatalf("admin-token bootstrap-security: %v %q", err, sec)
	}
	if _, _, err := run(t, "admin-token", "create", "--name", "bob", "--role", "root", "--data", dir); err == nil {
		t.Fatal("admin-token create accepted role root")
	}
	if out, _, err := run(t, "agents", "release", uid, "--note", "rehired", "--token", strings.TrimSpace(sec), "--data", dir); err != nil ||
		!strings.Contains(out, "released") {
		t.Fatalf("release with a security token: %v\n%s", err, out)
	}
	out, _, err = run(t, "report", "revocations", "--from", "1h", "--data", dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Revocations []struct {
			UID    string `json:"uid"`
			Reason string `json:"reason"`
			Note   string `json:"note"`
		} `json:"revocations"`
		ByReason map[string]int `json:"totals_by_reason"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Revocations) != 1 || rep.Revocations[0].UID != uid ||
		rep.Revocations[0].Note != "sold" || rep.ByReason["affiliationChanged"] != 1 {
		t.Fatalf("report -o json: %v\n%s", err, out)
	}
	if out, _, err := run(t, "report", "revocations", "--from", "1h", "--data", dir); err != nil || !strings.Contains(out, "signed checkpoint") {
		t.Fatalf("report table: %v\n%s", err, out)
	}
}

// testPublishCommands publishes, refuses a stranger's release, lists and
// yanks; beforeYank (optional) runs while the release is active.
func testPublishCommands(t *testing.T, dir string, beforeYank func(api.Release)) api.Release {
	t.Setenv("TRUSTAMP_KEY_PASSPHRASE", "release-team")
	keys := t.TempDir()
	if _, _, err := run(t, "keys", "generate", "--out", keys); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "keys", "generate", "--out", keys, "--name", "stranger"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := run(t, "publishers", "add", "release-team", "--key", filepath.Join(keys, "publisher.pub"), "--types", "otelcol", "--data", dir); err != nil ||
		!strings.Contains(out, "otelcol") {
		t.Fatalf("publishers add: %v\n%s", err, out)
	}
	art := filepath.Join(t.TempDir(), "otelcol_0.115.0_linux_amd64.tar.gz")
	os.WriteFile(art, bytes.Repeat([]byte("otelcol build "), 100_000), 0o644)
	if _, _, err := run(t, "sign", "--key", filepath.Join(keys, "publisher.key"), art); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "packages", "publish", "--type", "otelcol", "--version", "0.115.0", "--platform", "linux/amd64", art, "--data", dir, "-o", "json")
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	var rel api.Release
	if err := json.Unmarshal([]byte(out), &rel); err != nil || rel.Publisher != "release-team" || rel.Size != 1_400_000 {
		t.Fatalf("publish -o json: %v %+v", err, rel)
	}
	// Signed by a key nobody trusts: refused, nothing recorded.
	other := filepath.Join(t.TempDir(), "evil.tar.gz")
	os.WriteFile(other, []byte("evil"), 0o644)
	run(t, "sign", "--key", filepath.Join(keys, "stranger.key"), other)
	if _, _, err := run(t, "packages", "publish", "--type", "otelcol", "--version", "0.116.0", "--platform", "linux/amd64", other, "--data", dir); err == nil ||
		!strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "no trusted publisher") {
		t.Fatalf("publish signed by an unknown key: %v", err)
	}
	out, _, err = run(t, "packages", "list", "--data", dir)
	if err != nil || !strings.Contains(out, "0.115.0") || strings.Contains(out, "0.116.0") {
		t.Fatalf("packages list: %v\n%s", err, out)
	}
	if out, _, err := run(t, "packages", "show", "otelcol", "0.115.0", "--data", dir); err != nil || !strings.Contains(out, rel.SHA256) ||
		!strings.Contains(out, "linux/amd64") {
		t.Fatalf("packages show: %v\n%s", err, out)
	}
	if _, _, err := run(t, "packages", "show", "otelcol", "9.9.9", "--data", dir); err == nil {
		t.Fatal("packages show of a missing version succeeded")
	}
	if out, _, err := run(t, "packages", "promote", "otelcol", "0.116.0", "--data", dir); err == nil {
		t.Fatalf("promoting a refused (never published) version succeeded:\n%s", out)
	}
	if out, _, err := run(t, "packages", "promote", "otelcol", "0.115.0", "--labels", "region=eu", "--data", dir); err != nil || !strings.Contains(out, "agents with region=eu") {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	var pins []api.Pin
	if out, _, err := run(t, "packages", "pins", "-o", "json", "--data", dir); err != nil || json.Unmarshal([]byte(out), &pins) != nil ||
		len(pins) != 1 || pins[0].Version != "0.115.0" || pins[0].Selector != "region=eu" {
		t.Fatalf("pins: %v %+v\n%s", err, pins, out)
	}
	if out, _, err := run(t, "packages", "status", "otelcol", "0.115.0", "--data", dir); err != nil || !strings.Contains(out, "installed") ||
		!strings.Contains(out, "linux/amd64: active") {
		t.Fatalf("packages status: %v\n%s", err, out)
	}
	if beforeYank != nil {
		beforeYank(rel)
	}
	if out, _, err := run(t, "packages", "yank", "otelcol", "0.115.0", "--reason", "crashes", "--data", dir); err != nil || !strings.Contains(out, "1 platform") {
		t.Fatalf("yank: %v\n%s", err, out)
	}
	if out, _, _ := run(t, "packages", "list", "--data", dir); !strings.Contains(out, "yanked") {
		t.Fatalf("yanked release not shown as yanked:\n%s", out)
	}
	return rel
}

func TestPublishCommandsFS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	env := servertest.StartIn(t, dir, "")
	// Downloads need an agent's certificate: enroll one first.
	token, _, err := run(t, "token", "create", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: env.URL("websocket"), CAPEM: env.CAPEM})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Enroll(ctx, strings.TrimSpace(token)); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CAPEM)
	var rel api.Release
	download := func(withCert bool) int {
		cfg := &tls.Config{RootCAs: pool}
		if withCert {
			pair, err := tls.X509KeyPair(a.Cert(), a.KeyPEM())
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := hc.Get("https://" + env.OpAMPAddr + "/v1/packages/" + rel.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && int64(len(body)) != rel.Size {
			t.Fatalf("downloaded %d bytes, want %d", len(body), rel.Size)
		}
		return resp.StatusCode
	}
	rel = testPublishCommands(t, dir, func(active api.Release) {
		rel = active
		if code := download(true); code != http.StatusOK {
			t.Fatalf("agent download over mTLS: %d, want 200", code)
		}
	})
	// The release was yanked at the end of testPublishCommands: not served.
	if code := download(true); code != http.StatusNotFound {
		t.Fatalf("download of a yanked release: %d, want 404", code)
	}
	if code := download(false); code != http.StatusUnauthorized {
		t.Fatalf("download without a client certificate: %d, want 401", code)
	}
	// The blob is in the data dir under its digest.
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if len(ents) != 1 {
		t.Fatalf("%d blobs stored, want 1 (the refused upload must leave none)", len(ents))
	}
}

func TestPublishCommandsMinIO(t *testing.T) {
	m := testenv.StartMinIO(t)
	dir := filepath.Join(t.TempDir(), "data")
	cfg := fmt.Sprintf("blobs:\n  driver: s3\n  s3:\n    endpoint: %q\n    bucket: releases\n    insecure: true\n", m.Endpoint)
	servertest.StartInWithEnv(t, dir, cfg, map[string]string{"TRUSTAMP_S3_ACCESS_KEY": m.AccessKey, "TRUSTAMP_S3_SECRET_KEY": m.SecretKey})
	testPublishCommands(t, dir, nil)
	if _, err := os.Stat(filepath.Join(dir, "blobs")); err == nil {
		t.Fatal("an S3-configured server wrote blobs to the data dir")
	}
}
