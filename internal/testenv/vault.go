package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Vault is a running Vault dev server owned by one test: in memory, unsealed,
// plain HTTP on loopback, with a random root token.
type Vault struct {
	Addr  string // http://127.0.0.1:PORT
	Token string
}

// StartVault runs the Vault built by `make tools` (tools/vault) in dev mode.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	bin := tool(t, "vault")
	v := &Vault{Token: "root-" + randomSecret(12)}
	home := t.TempDir()
	port := startHTTPServer(t, "vault", func(port int) (*exec.Cmd, string) {
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
	return v
}
