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
	"strings"
	"testing"
	"time"

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

// TestS3Retention: with retention, stored blobs are under object lock once
// their digest checked, and cannot be deleted (a version) without bypass;
// the contract still holds on such a bucket.
func TestS3Retention(t *testing.T) {
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	open := func(bucket string) (*blob.S3, error) {
		return blob.NewS3(ctx, blob.S3Config{Endpoint: m.Endpoint, Bucket: bucket, AccessKey: m.AccessKey, SecretKey: m.SecretKey,
			Insecure: true, Retention: time.Hour})
	}
	n := 0
	blobtest.Run(t, func(t *testing.T) blob.Store {
		n++
		s, err := open("locked-" + string(rune('a'+n)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	s, err := open("locked")
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("release bytes")
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])
	if _, err := s.Put(ctx, bytes.NewReader(content), blob.PutOptions{SHA256: digest}); err != nil {
		t.Fatal(err)
	}
	mc, _ := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	mode, until, err := mc.GetObjectRetention(ctx, "locked", blob.Key(digest), "")
	if err != nil || mode == nil || *mode != minio.Governance || until == nil || until.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("retention %v %v %v, want governance for about an hour", mode, until, err)
	}
	info, err := mc.StatObject(ctx, "locked", blob.Key(digest), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.RemoveObject(ctx, "locked", blob.Key(digest), minio.RemoveObjectOptions{VersionID: info.VersionID}); err == nil {
		t.Fatal("a locked release blob was deleted")
	}
	// Bytes that do not match their digest are refused and never locked.
	if _, err := s.Put(ctx, bytes.NewReader([]byte("evil")), blob.PutOptions{SHA256: strings.Repeat("ab", 32)}); err == nil {
		t.Fatal("mismatching bytes accepted")
	}
	// A bucket without object lock is refused when retention is asked for.
	if _, err := blob.NewS3(ctx, blob.S3Config{Endpoint: m.Endpoint, Bucket: "plain", AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := open("plain"); err == nil || !strings.Contains(err.Error(), "object lock") {
		t.Fatalf("retention on a bucket without object lock: %v", err)
	}
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
