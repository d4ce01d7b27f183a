package release

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

// Authorizer decides whether a download request comes from an enrolled,
// unrevoked agent (its mTLS certificate); it returns the agent's uid.
type Authorizer func(r *http.Request) (uid string, err error)

// Downloads serves /v1/packages/{sha256}: the bytes of an active release,
// to agents only, with Range support, streamed from blob storage. Before a
// blob is served the first time (and again after RecheckAfter) its bytes
// are hashed: a blob swapped in storage is never served, and its releases
// are quarantined, audited.
type Downloads struct {
	svc       *Service
	authorize Authorizer
}

// NewDownloads returns the download handler.
func (s *Service) NewDownloads(authorize Authorizer) *Downloads {
	return &Downloads{svc: s, authorize: authorize}
}

// ErrBlobTampered means stored bytes no longer hash to their name.
var ErrBlobTampered = errors.New("release: stored blob does not match its SHA-256")

func (d *Downloads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	uid, err := d.authorize(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="trustamp"`)
		http.Error(w, "downloads need an agent's client certificate: "+err.Error(), http.StatusUnauthorized)
		return
	}
	sha := r.PathValue("sha256")
	if err := blob.CheckDigest(sha); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	rels, err := d.svc.List(ctx, state.ReleaseFilter{SHA256: sha})
	if err != nil {
		http.Error(w, "state store unavailable", http.StatusServiceUnavailable)
		return
	}
	active := false
	for _, rel := range rels {
		active = active || rel.State == state.ReleaseActive
	}
	if !active {
		http.Error(w, "no active release has this digest", http.StatusNotFound)
		return
	}
	if err := d.svc.checkBlob(ctx, sha, rels); err != nil {
		if errors.Is(err, ErrBlobTampered) {
			http.Error(w, "release quarantined: stored bytes do not match", http.StatusGone)
			return
		}
		d.svc.cfg.Logger.Error("download: check blob", "sha256", sha, "err", err)
		http.Error(w, "blob storage unavailable", http.StatusServiceUnavailable)
		return
	}
	obj, err := d.svc.cfg.Blobs.Stat(ctx, sha)
	if err != nil {
		http.Error(w, "blob storage unavailable", http.StatusServiceUnavailable)
		return
	}
	d.svc.cfg.Logger.Debug("package download", "uid", uid, "sha256", sha, "range", r.Header.Get("Range"))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"sha256:`+sha+`"`)
	w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	content := &blobSeeker{ctx: ctx, store: d.svc.cfg.Blobs, sha: sha, size: obj.Size}
	defer content.Close()
	http.ServeContent(w, r, "", time.Time{}, content)
}

// checkBlob hashes the stored blob unless it was verified recently; on a
// mismatch it quarantines every release with this digest. Offers and
// downloads share it, so a blob swapped in storage is neither offered nor
// served.
func (s *Service) checkBlob(ctx context.Context, sha string, rels []state.Release) error {
	now := s.cfg.Clock()
	s.mu.Lock()
	at, ok := s.verified[sha]
	s.mu.Unlock()
	if ok && now.Sub(at) < s.cfg.RecheckAfter {
		return nil
	}
	rc, err := s.cfg.Blobs.Get(ctx, sha, 0, -1)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, rc)
	rc.Close()
	if err != nil {
		return err
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != sha {
		s.quarantine(ctx, sha, got, rels)
		return ErrBlobTampered
	}
	s.mu.Lock()
	s.verified[sha] = now
	s.mu.Unlock()
	return nil
}

func (s *Service) quarantine(ctx context.Context, sha, got string, rels []state.Release) {
	reason := "stored blob hashes to " + got
	err := s.cfg.Store.Update(context.WithoutCancel(ctx), func(tx *state.Tx) error {
		for _, rel := range rels {
			if rel.State == state.ReleaseQuarantined {
				continue
			}
			if err := tx.SetReleaseState(ctx, rel.ID, state.ReleaseQuarantined, reason, s.cfg.Clock()); err != nil {
				return err
			}
			if _, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "system:downloads", Action: "release.quarantine", Subject: rel.ID,
				Details: map[string]any{"type": rel.Type, "version": rel.Version, "platform": rel.Platform, "sha256": sha, "stored_sha256": got}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.cfg.Logger.Error("quarantine tampered release", "sha256", sha, "err", err)
	}
	s.changed()
	s.cfg.Logger.Error("blob tampered in storage: releases quarantined", "sha256", sha, "stored_sha256", got)
}

// blobSeeker is an io.ReadSeeker over a blob for http.ServeContent: a read
// after a seek opens a ranged Get from the new offset.
type blobSeeker struct {
	ctx   context.Context
	store blob.Store
	sha   string
	size  int64
	off   int64
	rc    io.ReadCloser
}

func (b *blobSeeker) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	if b.rc == nil {
		rc, err := b.store.Get(b.ctx, b.sha, b.off, -1)
		if err != nil {
			return 0, err
		}
		b.rc = rc
	}
	n, err := b.rc.Read(p)
	b.off += int64(n)
	return n, err
}

func (b *blobSeeker) Seek(offset int64, whence int) (int64, error) {
	var next int64
	switch whence {
	case io.SeekStart:
		next = offset
	case io.SeekCurrent:
		next = b.off + offset
	case io.SeekEnd:
		next = b.size + offset
	}
	if next < 0 {
		return 0, errors.New("blob: seek before start")
	}
	if next != b.off && b.rc != nil {
		b.rc.Close()
		b.rc = nil
	}
	b.off = next
	return next, nil
}

func (b *blobSeeker) Close() error {
	if b.rc == nil {
		return nil
	}
	err := b.rc.Close()
	b.rc = nil
	return err
}
