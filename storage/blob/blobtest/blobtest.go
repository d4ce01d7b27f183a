// Package blobtest is the contract every blob backend meets; each backend's
// test calls Run with a function that opens a fresh, empty store.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/blob"
)

// Run runs the contract suite against stores made by open.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	ctx := context.Background()
	payload := make([]byte, 3<<20+17) // several S3 parts' worth is not needed; odd size catches off-by-ones
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	digest := hex.EncodeToString(sum[:])

	t.Run("PutGetStat", func(t *testing.T) {
		s := open(t)
		obj, err := s.Put(ctx, bytes.NewReader(payload), blob.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if obj.SHA256 != digest || obj.Size != int64(len(payload)) || obj.Key() != "sha256/"+digest {
			t.Fatalf("put: %+v, want %s and %d bytes", obj, digest, len(payload))
		}
		st, err := s.Stat(ctx, digest)
		if err != nil || st.Size != int64(len(payload)) {
			t.Fatalf("stat: %+v %v", st, err)
		}
		if got := read(t, s, digest, 0, -1); !bytes.Equal(got, payload) {
			t.Fatal("get returned different bytes")
		}
		if got := read(t, s, digest, 1000, 4096); !bytes.Equal(got, payload[1000:1000+4096]) {
			t.Fatal("range get returned different bytes")
		}
		if got := read(t, s, digest, int64(len(payload))-5, -1); !bytes.Equal(got, payload[len(payload)-5:]) {
			t.Fatal("tail range returned different bytes")
		}
		if _, err := s.Get(ctx, digest, int64(len(payload)), 1); !errors.Is(err, blob.ErrInvalidRange) {
			t.Fatalf("range past the end: %v, want ErrInvalidRange", err)
		}
		// The same bytes again: the same object, no error.
		if again, err := s.Put(ctx, bytes.NewReader(payload), blob.PutOptions{Size: int64(len(payload))}); err != nil || again != obj {
			t.Fatalf("second put: %+v %v", again, err)
		}
	})

	t.Run("ExpectedDigest", func(t *testing.T) {
		s := open(t)
		if _, err := s.Put(ctx, bytes.NewReader(payload), blob.PutOptions{SHA256: digest, Size: int64(len(payload))}); err != nil {
			t.Fatal(err)
		}
		other := strings.Repeat("ab", 32)
		_, err := s.Put(ctx, bytes.NewReader([]byte("not the release")), blob.PutOptions{SHA256: other})
		if !errors.Is(err, blob.ErrHashMismatch) {
			t.Fatalf("put with a wrong digest: %v, want ErrHashMismatch", err)
		}
		if _, err := s.Stat(ctx, other); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("a mismatched upload left an object under the expected digest: %v", err)
		}
	})

	t.Run("NotFoundAndDelete", func(t *testing.T) {
		s := open(t)
		missing := strings.Repeat("0", 64)
		if _, err := s.Stat(ctx, missing); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat of a missing blob: %v", err)
		}
		if _, err := s.Get(ctx, missing, 0, -1); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("get of a missing blob: %v", err)
		}
		obj, err := s.Put(ctx, strings.NewReader("small"), blob.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, obj.SHA256); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, obj.SHA256); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat after delete: %v", err)
		}
		if err := s.Delete(ctx, obj.SHA256); err != nil {
			t.Fatalf("deleting a missing blob: %v", err)
		}
	})

	t.Run("BadDigestsRefused", func(t *testing.T) {
		s := open(t)
		for _, d := range []string{"", "../../etc/passwd", strings.Repeat("A", 64), strings.Repeat("a", 63)} {
			if _, err := s.Stat(ctx, d); err == nil {
				t.Errorf("stat %q accepted", d)
			}
			if _, err := s.Get(ctx, d, 0, -1); err == nil {
				t.Errorf("get %q accepted", d)
			}
			if err := s.Delete(ctx, d); err == nil {
				t.Errorf("delete %q accepted", d)
			}
		}
	})

	t.Run("CancelledPutStoresNothing", func(t *testing.T) {
		s := open(t)
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: bytes.NewReader(payload), n: 1 << 20, cancel: cancel}
		if _, err := s.Put(cctx, r, blob.PutOptions{SHA256: digest}); err == nil {
			t.Fatal("put with a context cancelled midway succeeded")
		}
		if _, err := s.Stat(ctx, digest); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("a cancelled put left a blob: %v", err)
		}
	})

	t.Run("Presign", func(t *testing.T) {
		s := open(t)
		obj, err := s.Put(ctx, strings.NewReader("presigned"), blob.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := s.Presign(ctx, obj.SHA256, time.Minute)
		if errors.Is(err, blob.ErrNotSupported) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != "presigned" {
			t.Fatalf("GET presigned URL: %s %q", resp.Status, b)
		}
	})
}

func read(t *testing.T, s blob.Store, digest string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), digest, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cancelAfter cancels its context after n bytes were read: an upload cut
// off midway.
type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.read >= c.n {
		c.cancel()
		return 0, context.Canceled
	}
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
