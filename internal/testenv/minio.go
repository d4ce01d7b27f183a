package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// MinIO is a running MinIO server owned by one test.
type MinIO struct {
	// Endpoint is host:port, plain HTTP.
	Endpoint  string
	AccessKey string
	SecretKey string
}

// StartMinIO runs the pinned MinIO server from `make tools` on a temp dir.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin := tool(t, "minio")
	m := &MinIO{AccessKey: "trustamp-" + randomSecret(4), SecretKey: randomSecret(16)}
	dir := t.TempDir()
	port := startHTTPServer(t, "minio", func(port int) (*exec.Cmd, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "server", dir, "--address", addr,
			"--console-address", fmt.Sprintf("127.0.0.1:%d", FreePort(t)), "--quiet")
		cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+m.AccessKey,
			"MINIO_ROOT_PASSWORD="+m.SecretKey,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
			"HOME="+dir,
		)
		return cmd, "http://" + addr + "/minio/health/ready"
	})
	m.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	return m
}
