package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
)

// TestMain lets a test run this binary as `trustamp` in a child process
// (TRUSTAMP_TEST_MAIN=1), so crash tests can SIGKILL a real server.
func TestMain(m *testing.M) {
	if os.Getenv("TRUSTAMP_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveProcess starts `trustamp serve` on dir in a child process and waits
// until it wrote its local credential (it listens by then).
func serveProcess(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cred := filepath.Join(dir, "run", "admin.json")
	os.Remove(cred)
	var logs bytes.Buffer
	cmd := exec.Command(os.Args[0], "serve", "--data", dir)
	cmd.Env = append(os.Environ(), "TRUSTAMP_TEST_MAIN=1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(cred); err == nil {
			return cmd
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("serve did not start:\n%s", logs.String())
	return nil
}

// TestRevocationSurvivesSIGKILL kills the server right after a revocation
// was acknowledged: after a restart the certificate is still refused, still
// on the CRL, and the audit chain verifies.
func TestRevocationSurvivesSIGKILL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	opampAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("opamp:\n  addr: %q\nadmin:\n  addr: \"127.0.0.1:%d\"\n", opampAddr, testenv.FreePort(t))
	if err := os.WriteFile(filepath.Join(dir, "trustamp.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	srv := serveProcess(t, dir)
	token, _, err := run(t, "token", "create", "--data", dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem"))
	a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: "wss://" + opampAddr + "/v1/opamp", CAPEM: caPEM})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Enroll(ctx, strings.TrimSpace(token)); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())

	if _, _, err := run(t, "revoke", a.UID.String(), "--reason", "keyCompromise", "--data", dir); err != nil {
		t.Fatal(err)
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()

	serveProcess(t, dir)
	a.Stop(ctx)
	err = a.Connect(ctx, a.UID, nil)
	if !errors.Is(err, loadgen.ErrConnectFailed) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("reconnect after the crash: %v, want 401", err)
	}
	b, _ := pem.Decode(a.Cert())
	leaf, _ := x509.ParseCertificate(b.Bytes)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + opampAddr + "/v1/crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range crl.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(leaf.SerialNumber) == 0
	}
	if !found {
		t.Fatal("revoked certificate missing from the CRL after the crash")
	}
	out, _, err := run(t, "audit", "verify", "--data", dir)
	if err != nil {
		t.Fatalf("audit verify after the crash: %v\n%s", err, out)
	}
	out, _, err = run(t, "report", "revocations", "--from", "1h", "--data", dir, "-o", "csv")
	if err != nil || !strings.Contains(out, a.UID.String()) || !strings.Contains(out, "keyCompromise") {
		t.Fatalf("report after the crash: %v\n%s", err, out)
	}
}
