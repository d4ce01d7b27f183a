package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
)

// Keys move from the data dir to Vault KV while the fleet keeps its
// certificates: after the move (and with the age key files gone) the server
// runs on the keys in Vault, across restarts, and old and new agents chain
// to the same root.
func TestKeysMigrateToVaultKV(t *testing.T) {
	v := testenv.StartVault(t)
	root := filepath.Join(t.TempDir(), "data")
	vaultConf := "keys:\n  custody: %s\n  vault_kv:\n    path: fleet-a/keys\nvault:\n  address: " + v.Addr + "\n"
	env := map[string]string{"TRUSTAMP_VAULT_TOKEN": v.Token}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var first *loadgen.Agent
	t.Run("age", func(t *testing.T) {
		e := servertest.StartInWithEnv(t, root, strings.Replace(vaultConf, "%s", "age", 1), env)
		tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{Uses: 1})
		if err != nil {
			t.Fatal(err)
		}
		first, _ = loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.URL("ws"), CAPEM: e.CAPEM})
		if err := first.Enroll(ctx, tok.Token); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}

	t.Setenv("TRUSTAMP_VAULT_TOKEN", v.Token)
	out, _, err := run(t, "keys", "migrate", "--to", "vault-kv", "--data", root, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var moved []datadir.MigratedKey
	if err := json.Unmarshal([]byte(out), &moved); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range moved {
		names[m.Name] = m.Result == "copied" && len(m.Fingerprint) == 64
	}
	for _, want := range []string{"audit", "root-ca", "intermediate-ca"} {
		if !names[want] {
			t.Fatalf("migrated %+v, want %s copied", moved, want)
		}
	}
	// Again: nothing to copy, nothing replaced.
	out, _, err = run(t, "keys", "migrate", "--to", "vault-kv", "--data", root)
	if err != nil || !strings.Contains(out, "already present") || strings.Contains(out, "copied") {
		t.Fatalf("second migration: %v\n%s", err, out)
	}
	if _, _, err := run(t, "keys", "migrate", "--to", "nowhere", "--data", root); err == nil {
		t.Fatal("migration to an unknown custodian accepted")
	}
	// Nothing private stays in the data dir.
	files, _ := filepath.Glob(filepath.Join(root, "keys", "*.key.age"))
	for _, f := range files {
		if err := os.Rename(f, f+".moved"); err != nil {
			t.Fatal(err)
		}
	}

	var second *loadgen.Agent
	for i, name := range []string{"vault", "vault after restart"} {
		t.Run(name, func(t *testing.T) {
			e := servertest.StartInWithEnv(t, root, strings.Replace(vaultConf, "%s", "vault-kv", 1), env)
			if got := e.Dir.Keys.Custody(); got != "vault-kv" {
				t.Fatalf("custody %s", got)
			}
			if i == 0 {
				tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{Uses: 1})
				if err != nil {
					t.Fatal(err)
				}
				second, _ = loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.URL("ws"), CAPEM: e.CAPEM})
				if err := second.Enroll(ctx, tok.Token); err != nil {
					t.Fatal(err)
				}
			}
			// Both agents' certificates, one from the age-era intermediate
			// key, one from the key in Vault, pass this server's mTLS
			// check (an unknown package is 404, not 401).
			for _, a := range []*loadgen.Agent{first, second} {
				if code := mtlsGet(t, e, a, "/v1/packages/"+strings.Repeat("0", 64)); code != 404 {
					t.Fatalf("agent %s: %d, want 404 (authenticated)", a.UID, code)
				}
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(e.CAPEM)
			for _, a := range []*loadgen.Agent{first, second} {
				leaf := leafCert(t, a.Cert())
				inter, _ := os.ReadFile(filepath.Join(root, "ca", "intermediate.pem"))
				ipool := x509.NewCertPool()
				ipool.AppendCertsFromPEM(inter)
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: ipool,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Fatalf("agent certificate does not chain to the root: %v", err)
				}
			}
		})
		if t.Failed() {
			return
		}
	}
	// The move is on the audit record, by fingerprint only.
	out, _, err = run(t, "audit", "export", "--data", root)
	if err != nil || !strings.Contains(out, "keys.migrate") || strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("audit export: %v", err)
	}
}

// mtlsGet requests path on the OpAMP listener with a's client certificate.
func mtlsGet(t *testing.T, e *servertest.Env, a *loadgen.Agent, path string) int {
	t.Helper()
	pair, err := tls.X509KeyPair(a.Cert(), a.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get("https://" + e.OpAMPAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func leafCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
