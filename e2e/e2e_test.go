package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustamp/trustamp/internal/testenv"
)

// TestScenario runs the demo's scenario with real processes: every step
// waits for its effect (enrollment, rotation, upgrade with an agent killed
// mid-install, downgrade, an agent killed mid-rotation, revocation that
// spares the others, the report and audit verification) and fails naming
// what did not happen.
func TestScenario(t *testing.T) {
	minio := testenv.Tool(t, "minio")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "trustamp")
	build := exec.Command("go", "build", "-o", bin, "./cmd/trustamp")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build trustamp: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	err = Run(ctx, Config{Trustamp: bin, MinIO: minio, RepoRoot: root, Work: filepath.Join(work, "run"), Out: testWriter{t}})
	if err != nil {
		for _, name := range []string{"server", "agent-1", "agent-2", "agent-3"} {
			b, _ := os.ReadFile(filepath.Join(work, "run", "logs", name+".log"))
			t.Logf("--- %s log (tail) ---\n%s", name, lastLines(string(b), 40))
		}
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
