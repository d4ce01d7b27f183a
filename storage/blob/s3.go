package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates an S3-compatible bucket.
type S3Config struct {
	// Endpoint is host[:port], without a scheme.
	Endpoint string
	Bucket   string
	Region   string
	// AccessKey and SecretKey; empty means the environment's
	// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER/...).
	AccessKey, SecretKey string
	// Insecure uses plain HTTP (a loopback MinIO in tests). TLS otherwise.
	Insecure bool
	// Transport overrides the HTTP transport (custom CA bundles).
	Transport http.RoundTripper
	// Retention, when positive, puts every stored release blob under S3
	// object lock (governance mode) for that long once its digest checked,
	// so nobody without the bypass permission can overwrite or delete it.
	// The bucket must have object lock enabled; a missing bucket is
	// created with it.
	Retention time.Duration
	// Clock returns the current time for retention dates. Nil means
	// time.Now.
	Clock func() time.Time
}

// S3 stores blobs in a bucket as sha256/<hex>.
type S3 struct {
	c         *minio.Client
	bucket    string
	retention time.Duration
	clock     func() time.Time
}

// NewS3 connects to the bucket, creating it when missing.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("blob: s3 needs an endpoint and a bucket")
	}
	creds := credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	if cfg.AccessKey == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: cfg.Transport})
	if err != nil {
		return nil, fmt.Errorf("blob: s3 client for %s: %w", cfg.Endpoint, err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("blob: s3 bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok {
		err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region, ObjectLocking: cfg.Retention > 0})
		if err != nil {
			return nil, fmt.Errorf("blob: create bucket %s: %w", cfg.Bucket, err)
		}
	} else if cfg.Retention > 0 {
		enabled, _, _, _, err := c.GetObjectLockConfig(ctx, cfg.Bucket)
		if err != nil || enabled != "Enabled" {
			return nil, fmt.Errorf("blob: retention is set but bucket %s has no object lock (it can only be enabled when a bucket is created): %v", cfg.Bucket, err)
		}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &S3{c: c, bucket: cfg.Bucket, retention: cfg.Retention, clock: cfg.Clock}, nil
}

// Put implements Store. With an expected digest the upload goes straight to
// its final key and is removed if the bytes differ; without one it goes to
// uploads/<uuid> and is copied server-side once the digest is known.
func (s *S3) Put(ctx context.Context, r io.Reader, opts PutOptions) (Object, error) {
	size := opts.Size
	if size <= 0 {
		size = -1
	}
	key := "uploads/" + uuid.NewString()
	if opts.SHA256 != "" {
		if err := CheckDigest(opts.SHA256); err != nil {
			return Object{}, err
		}
		key = Key(opts.SHA256)
	}
	h := sha256.New()
	// A request body is a stream, not a ReaderAt: without concurrent stream
	// parts minio-go uploads its parts one after another. Three 32 MiB
	// buffers (96 MiB per upload in flight) bring a stream to the speed of
	// an upload from a file (BENCHMARKS.md). Payload signing is off: over
	// TLS the transport protects the bytes, and this store hashes the whole
	// stream itself and refuses a mismatch; signing cost a fifth of the
	// throughput on plain HTTP.
	info, err := s.c.PutObject(ctx, s.bucket, key, &hashingReader{r: r, h: h}, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream", ConcurrentStreamParts: true, NumThreads: 3, PartSize: 32 << 20, DisableContentSha256: true})
	if err != nil {
		return Object{}, fmt.Errorf("blob: upload to s3://%s/%s: %w", s.bucket, key, err)
	}
	obj := Object{SHA256: digestOf(h.Sum(nil)), Size: info.Size}
	cleanup := func() { s.c.RemoveObject(context.WithoutCancel(ctx), s.bucket, key, minio.RemoveObjectOptions{}) }
	if opts.SHA256 != "" {
		if obj.SHA256 != opts.SHA256 {
			cleanup()
			return Object{}, fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, obj.SHA256, opts.SHA256)
		}
		return obj, s.lock(ctx, key)
	}
	defer cleanup()
	_, err = s.c.CopyObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: Key(obj.SHA256)},
		minio.CopySrcOptions{Bucket: s.bucket, Object: key})
	if err != nil {
		return Object{}, fmt.Errorf("blob: s3 copy to %s: %w", Key(obj.SHA256), err)
	}
	return obj, s.lock(ctx, Key(obj.SHA256))
}

// lock puts a stored blob under retention, once its digest checked: bytes
// that turned out wrong are never locked in.
func (s *S3) lock(ctx context.Context, key string) error {
	if s.retention <= 0 {
		return nil
	}
	mode := minio.Governance
	until := s.clock().Add(s.retention).UTC()
	err := s.c.PutObjectRetention(ctx, s.bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until})
	if err != nil {
		return fmt.Errorf("blob: object lock on s3://%s/%s: %w", s.bucket, key, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, sha256hex string, offset, length int64) (io.ReadCloser, error) {
	st, err := s.Stat(ctx, sha256hex)
	if err != nil {
		return nil, err
	}
	if offset < 0 || offset > st.Size || (length >= 0 && offset+length > st.Size) {
		return nil, fmt.Errorf("%w: %d+%d of %d bytes", ErrInvalidRange, offset, length, st.Size)
	}
	if length < 0 {
		length = st.Size - offset
	}
	if length == 0 {
		return io.NopCloser(eofReader{}), nil
	}
	var o minio.GetObjectOptions
	if offset > 0 || length < st.Size {
		if err := o.SetRange(offset, offset+length-1); err != nil {
			return nil, err
		}
	}
	obj, err := s.c.GetObject(ctx, s.bucket, Key(sha256hex), o)
	if err != nil {
		return nil, fmt.Errorf("blob: s3 get %s: %w", sha256hex, err)
	}
	return obj, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, sha256hex string) (Object, error) {
	if err := CheckDigest(sha256hex); err != nil {
		return Object{}, err
	}
	info, err := s.c.StatObject(ctx, s.bucket, Key(sha256hex), minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return Object{}, fmt.Errorf("%w: %s", ErrNotFound, sha256hex)
		}
		return Object{}, fmt.Errorf("blob: s3 stat %s: %w", sha256hex, err)
	}
	return Object{SHA256: sha256hex, Size: info.Size}, nil
}

// Presign implements Store.
func (s *S3) Presign(ctx context.Context, sha256hex string, expiry time.Duration) (string, error) {
	if err := CheckDigest(sha256hex); err != nil {
		return "", err
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, Key(sha256hex), expiry, url.Values{})
	if err != nil {
		return "", fmt.Errorf("blob: presign %s: %w", sha256hex, err)
	}
	return u.String(), nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, sha256hex string) error {
	if err := CheckDigest(sha256hex); err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, Key(sha256hex), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("blob: s3 delete %s: %w", sha256hex, err)
	}
	return nil
}

type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
