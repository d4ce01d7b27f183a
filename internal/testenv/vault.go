package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Vault is a running Vault dev server owned by one test: in memory, unsealed,
// plain HTTP on loopback, with a random root token.
type Vault struct {
	Addr  string // http://127.0.0.1:PORT
	Token string
	proc  *process
}

// StartVault runs the Vault built by `make tools` (tools/vault) in dev mode.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	bin := tool(t, "vault")
	v := &Vault{Token: "root-" + randomSecret(12)}
	home := t.TempDir()
	port, proc := startHTTPProcess(t, "vault", func(port int) (*exec.Cmd, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "server", "-dev",
			"-dev-listen-address="+addr,
			"-dev-root-token-id="+v.Token,
			"-dev-no-store-token")
		// HOME keeps Vault's token helper away from the real home directory;
		// VAULT_* from the caller's shell must not leak into the server.
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		return cmd, "http://" + addr + "/v1/sys/health"
	})
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	v.proc = proc
	return v
}

// Pause freezes the Vault process (SIGSTOP): connections are accepted by
// the kernel but nothing answers, the worst kind of outage for a client
// without timeouts. The dev server keeps its in-memory state, unlike a
// restart. Resume (also run at cleanup) thaws it.
func (v *Vault) Pause(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-v.proc.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-v.proc.cmd.Process.Pid, syscall.SIGCONT) })
}

// Resume thaws a paused Vault.
func (v *Vault) Resume(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-v.proc.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// API calls Vault's HTTP API with the root token (test setup: enable
// engines, write policies) and returns the decoded answer.
func (v *Vault) API(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", v.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("testenv: vault %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	out := map[string]any{}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
