package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// FS stores blobs as files under Dir/sha256/<hex>, written to a temporary
// file, fsynced and renamed into place, so a crash never leaves a partial
// blob under a digest's name.
type FS struct {
	dir string
}

// NewFS opens (creating 0700) a filesystem store at dir.
func NewFS(dir string) (*FS, error) {
	for _, d := range []string{dir, filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob: %w", err)
		}
	}
	return &FS{dir: dir}, nil
}

func (s *FS) path(sha256hex string) string { return filepath.Join(s.dir, "sha256", sha256hex) }

// Put implements Store.
func (s *FS) Put(ctx context.Context, r io.Reader, opts PutOptions) (Object, error) {
	if opts.SHA256 != "" {
		if err := CheckDigest(opts.SHA256); err != nil {
			return Object{}, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return Object{}, fmt.Errorf("blob: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Object{}, fmt.Errorf("blob: write: %w", err)
	}
	obj := Object{SHA256: digestOf(h.Sum(nil)), Size: n}
	if opts.SHA256 != "" && opts.SHA256 != obj.SHA256 {
		return Object{}, fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, obj.SHA256, opts.SHA256)
	}
	if err := os.Rename(tmp.Name(), s.path(obj.SHA256)); err != nil {
		return Object{}, fmt.Errorf("blob: store %s: %w", obj.SHA256, err)
	}
	if d, err := os.Open(filepath.Join(s.dir, "sha256")); err == nil {
		d.Sync() // the rename itself survives a crash
		d.Close()
	}
	return obj, nil
}

// Get implements Store.
func (s *FS) Get(ctx context.Context, sha256hex string, offset, length int64) (io.ReadCloser, error) {
	if err := CheckDigest(sha256hex); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(sha256hex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sha256hex)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: %w", err)
	}
	if offset < 0 || offset > fi.Size() || (length >= 0 && offset+length > fi.Size()) {
		f.Close()
		return nil, fmt.Errorf("%w: %d+%d of %d bytes", ErrInvalidRange, offset, length, fi.Size())
	}
	if length < 0 {
		length = fi.Size() - offset
	}
	return readCloser{io.NewSectionReader(f, offset, length), f}, nil
}

// Stat implements Store.
func (s *FS) Stat(_ context.Context, sha256hex string) (Object, error) {
	if err := CheckDigest(sha256hex); err != nil {
		return Object{}, err
	}
	fi, err := os.Stat(s.path(sha256hex))
	if errors.Is(err, fs.ErrNotExist) {
		return Object{}, fmt.Errorf("%w: %s", ErrNotFound, sha256hex)
	}
	if err != nil {
		return Object{}, fmt.Errorf("blob: %w", err)
	}
	return Object{SHA256: sha256hex, Size: fi.Size()}, nil
}

// Presign implements Store: the filesystem has no URLs of its own; the
// server streams such blobs itself.
func (s *FS) Presign(context.Context, string, time.Duration) (string, error) {
	return "", ErrNotSupported
}

// Delete implements Store.
func (s *FS) Delete(_ context.Context, sha256hex string) error {
	if err := CheckDigest(sha256hex); err != nil {
		return err
	}
	if err := os.Remove(s.path(sha256hex)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: %w", err)
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
