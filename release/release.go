// Package release holds what release engineers publish: the trusted
// publisher keys, and signed, checksummed agent builds stored in blob
// storage. A release is recorded only after its signature verified against a
// publisher allowed for its package type and its bytes are durable under
// their digest; a refused or failed publish leaves no record and no blob of
// its own behind.
//
// Separation of duties: the server holds publisher public keys only; signing
// happens on the release engineer's side (trustamp sign) or in their KMS.
package release

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/mod/semver"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/signing"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

// Errors callers translate at their edge.
var (
	ErrInvalid = errors.New("release: invalid request")
	// ErrUntrusted: the signature verifies against no trusted publisher.
	ErrUntrusted = errors.New("release: signature not trusted")
	// ErrWrongType: a trusted publisher signed it, but may not publish this
	// package type.
	ErrWrongType = errors.New("release: publisher not allowed for this package type")
	// ErrHashMismatch: the uploaded bytes are not the ones signed.
	ErrHashMismatch = errors.New("release: uploaded file does not match the signed digest")
	ErrConflict     = state.ErrConflict
	ErrNotFound     = state.ErrNotFound
)

// Config wires a Service.
type Config struct {
	Store *state.Store
	Audit *audit.Log
	Blobs blob.Store
	// RecheckAfter is how long a blob's hash check stays valid before it is
	// offered or served again. Zero means 1h.
	RecheckAfter time.Duration
	// Presign, when positive, makes offers carry presigned blob-store URLs
	// valid that long instead of the server's own download endpoint.
	Presign time.Duration
	// DownloadBaseURL is the https://host:port of the download endpoint.
	// Empty means the host each agent used to reach the OpAMP endpoint.
	DownloadBaseURL string
	// HaltFailureRate and HaltMinFailures halt a rollout when that share of
	// the agents offered a release, and at least that many, reported a
	// failed install. Zero means 0.2 and 3.
	HaltFailureRate float64
	HaltMinFailures int
	// CatalogTTL bounds how stale the in-memory catalog (pins, releases)
	// may be: changes made through this Service apply at once, changes made
	// by another replica within CatalogTTL. Zero means 5s.
	CatalogTTL time.Duration
	// Policies returns the policy set in force; nil (or a nil func) means
	// none: operator pins alone decide targets and nothing rolls out in
	// waves.
	Policies func() *policies.Set
	// Metrics receives counters. Nil means a private, unexported set.
	Metrics *Metrics
	Logger  *slog.Logger
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Service publishes releases, manages publishers, and decides which release
// each agent is offered.
type Service struct {
	cfg     Config
	changes chan struct{}

	mu       sync.Mutex
	verified map[string]time.Time // digest -> when its bytes last hashed right
	snap     *catalog
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Blobs == nil {
		return nil, errors.New("release: Store, Audit and Blobs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.RecheckAfter <= 0 {
		cfg.RecheckAfter = time.Hour
	}
	if cfg.HaltFailureRate <= 0 {
		cfg.HaltFailureRate = 0.2
	}
	if cfg.HaltMinFailures <= 0 {
		cfg.HaltMinFailures = 3
	}
	if cfg.CatalogTTL <= 0 {
		cfg.CatalogTTL = 5 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	return &Service{cfg: cfg, changes: make(chan struct{}, 1), verified: map[string]time.Time{}}, nil
}

var (
	namePattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	platformPattern = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+$`)
)

// AddPublisher trusts a public key (PEM) to sign releases of types (empty:
// any type). Audited.
func (s *Service) AddPublisher(ctx context.Context, name string, publicKeyPEM []byte, types []string, actor string) (state.Publisher, error) {
	if !namePattern.MatchString(name) {
		return state.Publisher{}, fmt.Errorf("%w: publisher name %q: lowercase letters, digits and ._- (max 64)", ErrInvalid, name)
	}
	for _, t := range types {
		if !namePattern.MatchString(t) {
			return state.Publisher{}, fmt.Errorf("%w: package type %q: lowercase letters, digits and ._- (max 64)", ErrInvalid, t)
		}
	}
	pub, err := signing.ParsePublicKey(publicKeyPEM)
	if err != nil {
		return state.Publisher{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	hint, err := signing.KeyHint(pub)
	if err != nil {
		return state.Publisher{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := state.Publisher{Name: name, PublicKey: string(publicKeyPEM), KeyHint: hint, Types: types, AddedAt: s.cfg.Clock(), AddedBy: actor}
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutPublisher(ctx, p); err != nil {
			if errors.Is(err, state.ErrConflict) {
				return fmt.Errorf("publisher %s exists: %w", name, ErrConflict)
			}
			return err
		}
		_, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "publisher.add", Subject: name,
			Details: map[string]any{"key_hint": hint, "types": nonNil(types)}})
		return err
	})
	if err != nil {
		return state.Publisher{}, fmt.Errorf("add publisher: %w", err)
	}
	return p, nil
}

// Publish is one release to publish.
type Publish struct {
	Type, Version, Platform string
	// Bundle is the Sigstore bundle over the artifact's SHA-256.
	Bundle []byte
	// Size is the artifact's length when known (0: unknown).
	Size  int64
	Actor string
}

// Publish verifies p's signature against the trusted publishers allowed
// for its type before reading a byte of the artifact, streams the artifact
// to blob storage under the signed digest (refused if the bytes differ),
// and records the release with its audit entry once the blob is durable.
// Publishing the same release again is idempotent; the same type, version
// and platform with other bytes is ErrConflict.
func (s *Service) Publish(ctx context.Context, p Publish, artifact io.Reader) (state.Release, error) {
	if err := p.validate(); err != nil {
		return state.Release{}, err
	}
	digest, err := signing.BundleDigest(p.Bundle)
	if err != nil {
		return state.Release{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	sha := hex.EncodeToString(digest)
	publisher, err := s.trustedSigner(ctx, p.Type, p.Bundle, digest)
	if err != nil {
		return state.Release{}, err
	}
	var existing []state.Release
	if err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		existing, err = tx.Releases(ctx, state.ReleaseFilter{Type: p.Type, Version: p.Version, Platform: p.Platform})
		return err
	}); err != nil {
		return state.Release{}, err
	}
	if len(existing) > 0 {
		if existing[0].SHA256 != sha {
			return state.Release{}, fmt.Errorf("%s %s for %s was published already with sha256 %s (this is %s): versions are immutable, publish a new version: %w",
				p.Type, p.Version, p.Platform, existing[0].SHA256, sha, ErrConflict)
		}
		return existing[0], nil
	}
	_, statErr := s.cfg.Blobs.Stat(ctx, sha)
	hadBlob := statErr == nil
	obj, err := s.cfg.Blobs.Put(ctx, artifact, blob.PutOptions{Size: p.Size, SHA256: sha})
	if errors.Is(err, blob.ErrHashMismatch) {
		return state.Release{}, fmt.Errorf("%w: %v", ErrHashMismatch, err)
	}
	if err != nil {
		return state.Release{}, fmt.Errorf("store %s %s: %w", p.Type, p.Version, err)
	}
	now := s.cfg.Clock()
	r := state.Release{ID: uuid.Must(uuid.NewV7()).String(), Type: p.Type, Version: p.Version, Platform: p.Platform,
		SHA256: sha, Size: obj.Size, Signature: p.Bundle, Publisher: publisher, PublishedAt: now, PublishedBy: p.Actor,
		State: state.ReleaseActive}
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertRelease(ctx, r); err != nil {
			return err
		}
		_, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: p.Actor, Action: "release.publish", Subject: r.ID,
			Details: map[string]any{"type": r.Type, "version": r.Version, "platform": r.Platform, "sha256": sha,
				"size": r.Size, "publisher": publisher}})
		return err
	})
	if err != nil {
		if !hadBlob {
			if derr := s.cfg.Blobs.Delete(context.WithoutCancel(ctx), sha); derr != nil {
				s.cfg.Logger.Error("remove blob of a failed publish", "sha256", sha, "err", derr)
			}
		}
		return state.Release{}, fmt.Errorf("record %s %s: %w", p.Type, p.Version, err)
	}
	s.changed()
	return r, nil
}

func (p Publish) validate() error {
	switch {
	case !namePattern.MatchString(p.Type):
		return fmt.Errorf("%w: package type %q: lowercase letters, digits and ._- (e.g. otelcol, fluent-bit)", ErrInvalid, p.Type)
	case !semver.IsValid("v" + strings.TrimPrefix(p.Version, "v")):
		return fmt.Errorf("%w: version %q is not semantic (e.g. 0.115.0)", ErrInvalid, p.Version)
	case !platformPattern.MatchString(p.Platform):
		return fmt.Errorf("%w: platform %q: want os/arch, e.g. linux/amd64", ErrInvalid, p.Platform)
	case len(p.Bundle) == 0:
		return fmt.Errorf("%w: no signature bundle", ErrInvalid)
	}
	return nil
}

// trustedSigner finds the publisher whose key verifies the bundle and who
// may publish typ.
func (s *Service) trustedSigner(ctx context.Context, typ string, bundle, digest []byte) (string, error) {
	var pubs []state.Publisher
	if err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		pubs, err = tx.Publishers(ctx, false)
		return err
	}); err != nil {
		return "", err
	}
	var wrongType string
	for _, p := range pubs {
		key, err := signing.ParsePublicKey([]byte(p.PublicKey))
		if err != nil {
			continue
		}
		if signing.VerifyDigest(bundle, key, digest) != nil {
			continue
		}
		if len(p.Types) == 0 || slices.Contains(p.Types, typ) {
			return p.Name, nil
		}
		wrongType = p.Name
	}
	if wrongType != "" {
		return "", fmt.Errorf("%w: publisher %s signed it but may not publish %s", ErrWrongType, wrongType, typ)
	}
	return "", fmt.Errorf("%w: the signature verifies against no trusted publisher (trustamp publishers add)", ErrUntrusted)
}

// List returns releases matching f.
func (s *Service) List(ctx context.Context, f state.ReleaseFilter) ([]state.Release, error) {
	var rs []state.Release
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		rs, err = tx.Releases(ctx, f)
		return err
	})
	return rs, err
}

// Yank withdraws every platform's build of typ at version. Audited.
func (s *Service) Yank(ctx context.Context, typ, version, reason, actor string) ([]state.Release, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, fmt.Errorf("%w: a yank needs a reason", ErrInvalid)
	}
	var out []state.Release
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		rs, err := tx.Releases(ctx, state.ReleaseFilter{Type: typ, Version: version})
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			return fmt.Errorf("no release %s %s: %w", typ, version, ErrNotFound)
		}
		now := s.cfg.Clock()
		for _, r := range rs {
			if r.State == state.ReleaseYanked {
				continue
			}
			if err := tx.SetReleaseState(ctx, r.ID, state.ReleaseYanked, reason, now); err != nil {
				return err
			}
			r.State, r.StateReason, r.StateChangedAt = state.ReleaseYanked, reason, now
			out = append(out, r)
			if _, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "release.yank", Subject: r.ID,
				Details: map[string]any{"type": typ, "version": version, "platform": r.Platform, "reason": reason}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		// Its agents move to what the pins now assign (the previous
		// good release when the yanked one was pinned).
		s.changed()
	}
	return out, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
