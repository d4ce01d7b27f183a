// Package blob keeps release artifacts, content-addressed by SHA-256 under
// "sha256/<hex>": the key is the hash, so a stored object can always be
// checked against its name, and publishing the same bytes twice stores them
// once. Two backends hold to one contract (blobtest): the filesystem (the
// embedded default, under the data dir) and S3-compatible object storage
// through minio-go (MinIO, AWS S3).
//
// Put streams: the artifact is hashed as it is written and never held in
// memory whole.
package blob

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

// Errors callers test with errors.Is.
var (
	ErrNotFound = errors.New("blob: not found")
	// ErrHashMismatch: the bytes did not hash to the SHA-256 the caller
	// expected. Nothing is left stored.
	ErrHashMismatch = errors.New("blob: content does not match the expected SHA-256")
	// ErrNotSupported: the backend cannot do this (presigned URLs on the
	// filesystem).
	ErrNotSupported = errors.New("blob: not supported by this backend")
	// ErrInvalidRange: a Get asked for bytes outside the object.
	ErrInvalidRange = errors.New("blob: range outside the object")
)

// Object describes a stored blob.
type Object struct {
	// SHA256 is the lowercase hex digest, also the blob's name.
	SHA256 string
	Size   int64
}

// Key is where the object lives in its backend.
func (o Object) Key() string { return Key(o.SHA256) }

// Key is the content address of a digest.
func Key(sha256hex string) string { return "sha256/" + sha256hex }

// PutOptions tune a Put.
type PutOptions struct {
	// Size is the content length when known (-1 or 0: unknown). S3 uploads
	// of a known size need no buffering beyond one part.
	Size int64
	// SHA256, when set, is the digest the content must have (a release's
	// signature names it). The object is then written straight to its final
	// name and removed again if the bytes do not match.
	SHA256 string
}

// Store is a blob backend.
type Store interface {
	// Put stores r's bytes, hashing them as they stream, and returns the
	// object. It is durable when Put returns.
	Put(ctx context.Context, r io.Reader, opts PutOptions) (Object, error)
	// Get reads length bytes from offset (length < 0: to the end).
	Get(ctx context.Context, sha256hex string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's size, or ErrNotFound.
	Stat(ctx context.Context, sha256hex string) (Object, error)
	// Presign returns a URL anyone can GET the object from until expiry,
	// or ErrNotSupported.
	Presign(ctx context.Context, sha256hex string, expiry time.Duration) (string, error)
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, sha256hex string) error
}

var digestPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CheckDigest refuses anything but 64 lowercase hex digits, so a digest
// can never name a path outside the store.
func CheckDigest(sha256hex string) error {
	if !digestPattern.MatchString(sha256hex) {
		return fmt.Errorf("blob: %q is not a SHA-256 digest (64 lowercase hex digits)", sha256hex)
	}
	return nil
}

func digestOf(sum []byte) string { return hex.EncodeToString(sum) }
