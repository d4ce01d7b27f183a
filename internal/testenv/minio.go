package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
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
	waitS3(t, m.Endpoint)
	return m
}

// waitS3 waits until the S3 API itself answers: MinIO's ready endpoint can
// say 200 while bucket calls still fail with XMinioServerNotInitialized
// (503). An anonymous request is refused (403) once it is initialized.
func waitS3(t testing.TB, endpoint string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + endpoint + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: minio at %s: S3 API not initialized after 60s (last: %v)", endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
