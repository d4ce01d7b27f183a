package release

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

func TestDownloads(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	fs, _ := blob.NewFS(dir)
	s, _ := newService(t, fs)
	now := time.Now()
	s.cfg.Clock = func() time.Time { return now }
	team := newKey(t)
	s.AddPublisher(ctx, "team", team.pubPEM, nil, "a")
	artifact := bytes.Repeat([]byte("0123456789"), 10_000)
	rel, err := s.Publish(ctx, Publish{Type: "otelcol", Version: "1.0.0", Platform: "linux/amd64", Bundle: team.sign(t, artifact), Actor: "a"},
		bytes.NewReader(artifact))
	if err != nil {
		t.Fatal(err)
	}
	agentOnly := func(r *http.Request) (string, error) {
		if r.Header.Get("X-Test-Agent") == "" {
			return "", errors.New("no client certificate")
		}
		return "agent-1", nil
	}
	d := s.NewDownloads(agentOnly)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/packages/{sha256}", d)
	get := func(sha, rng string, agent bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/v1/packages/"+sha, nil)
		if agent {
			req.Header.Set("X-Test-Agent", "1")
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		return w
	}
	if w := get(rel.SHA256, "", false); w.Code != http.StatusUnauthorized {
		t.Fatalf("without a client certificate: %d", w.Code)
	}
	if w := get(rel.SHA256, "", true); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), artifact) {
		t.Fatalf("full download: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := get(rel.SHA256, "bytes=10-19", true); w.Code != http.StatusPartialContent || w.Body.String() != "0123456789" ||
		w.Header().Get("Content-Range") != "bytes 10-19/100000" {
		t.Fatalf("range: %d %q %q", w.Code, w.Body.String(), w.Header().Get("Content-Range"))
	}
	if w := get(rel.SHA256, "bytes=99990-", true); w.Code != http.StatusPartialContent || w.Body.Len() != 10 {
		t.Fatalf("tail range: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := get("../../etc/passwd", "", true); w.Code == http.StatusOK {
		t.Fatal("path traversal served")
	}
	// A blob swapped in storage is caught once the check expires: not served,
	// its release quarantined.
	os.WriteFile(filepath.Join(dir, "sha256", rel.SHA256), bytes.Repeat([]byte("x"), len(artifact)), 0o600)
	if w := get(rel.SHA256, "", true); w.Code != http.StatusOK {
		t.Fatalf("within the recheck window: %d", w.Code) // cached verdict: documented window
	}
	now = now.Add(2 * time.Hour)
	if w := get(rel.SHA256, "", true); w.Code != http.StatusGone {
		t.Fatalf("tampered blob: %d, want 410", w.Code)
	}
	rs, _ := s.List(ctx, state.ReleaseFilter{SHA256: rel.SHA256})
	if len(rs) != 1 || rs[0].State != state.ReleaseQuarantined {
		t.Fatalf("release after tampering: %+v", rs)
	}
	if w := get(rel.SHA256, "", true); w.Code != http.StatusNotFound {
		t.Fatalf("quarantined release still served: %d", w.Code)
	}
}

// BenchmarkDownload200MB serves a 200 MB release from the filesystem store
// over TLS on loopback, as /v1/packages does, and reads it whole.
func BenchmarkDownload200MB(b *testing.B) {
	ctx := context.Background()
	fs, _ := blob.NewFS(filepath.Join(b.TempDir(), "blobs"))
	s, _ := newServiceTB(b, fs)
	const size = 200 << 20
	artifact := make([]byte, size)
	for i := range artifact {
		artifact[i] = byte(i)
	}
	team := newKey(b)
	s.AddPublisher(ctx, "team", team.pubPEM, nil, "a")
	rel, err := s.Publish(ctx, Publish{Type: "otelcol", Version: "1.0.0", Platform: "linux/amd64", Bundle: team.sign(b, artifact), Actor: "a"},
		bytes.NewReader(artifact))
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/packages/{sha256}", s.NewDownloads(func(*http.Request) (string, error) { return "a", nil }))
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	c := srv.Client()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(srv.URL + "/v1/packages/" + rel.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != size {
			b.Fatalf("read %d bytes", n)
		}
	}
}
