package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/blob/blobtest"
)

func TestFS(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.NewFS(filepath.Join(t.TempDir(), "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFSLeavesNoTempFiles: failed puts clean up after themselves.
func TestFSLeavesNoTempFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(context.Background(), errReader{}, blob.PutOptions{})
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("temp files left: %v", ents)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, os.ErrClosed }

// TestS3 runs the contract against a real MinIO from `make tools`.
func TestS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	n := 0
	blobtest.Run(t, func(t *testing.T) blob.Store {
		n++
		s, err := blob.NewS3(context.Background(), blob.S3Config{Endpoint: m.Endpoint, Bucket: "releases-" + string(rune('a'+n)),
			AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestS3WrongCredentials(t *testing.T) {
	m := testenv.StartMinIO(t)
	_, err := blob.NewS3(context.Background(), blob.S3Config{Endpoint: m.Endpoint, Bucket: "x", AccessKey: m.AccessKey,
		SecretKey: "wrong-secret-key", Insecure: true})
	if err == nil {
		t.Fatal("wrong credentials accepted")
	}
}

// BenchmarkPut200MB stores a 200 MB artifact: to the filesystem store, to
// MinIO through the S3 store (with the digest known, as a signed release
// gives it, and without), and with a plain minio-go PutObject of the same
// bytes in the same run, the baseline the S3 store should stay within 80% of.
func BenchmarkPut200MB(b *testing.B) {
	const size = 200 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	digest := hex.EncodeToString(sum[:])
	ctx := context.Background()
	m := testenv.StartMinIO(b)
	s3, err := blob.NewS3(ctx, blob.S3Config{Endpoint: m.Endpoint, Bucket: "bench", AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	plain, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		b.Fatal(err)
	}
	fs, err := blob.NewFS(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, put func() error) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				if err := put(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("minio-go-PutObject", func() error {
		_, err := plain.PutObject(ctx, "bench", "plain", bytes.NewReader(payload), size, minio.PutObjectOptions{})
		return err
	})
	run("s3-known-digest", func() error {
		_, err := s3.Put(ctx, onlyReader{bytes.NewReader(payload)}, blob.PutOptions{Size: size, SHA256: digest})
		return err
	})
	run("s3-unknown-digest", func() error {
		_, err := s3.Put(ctx, onlyReader{bytes.NewReader(payload)}, blob.PutOptions{Size: size})
		return err
	})
	run("fs", func() error {
		_, err := fs.Put(ctx, onlyReader{bytes.NewReader(payload)}, blob.PutOptions{Size: size})
		return err
	})
}

// onlyReader hides Seek and ReadAt, as a request body does.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
