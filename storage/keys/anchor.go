package keys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/internal/vaultclient"
)

// MaxAnchorSize bounds the state anchor record: it holds an id and one
// signed checkpoint, a few hundred bytes.
const MaxAnchorSize = 64 << 10

// AnchorStore keeps one small record beside the keys: the data dir's state
// anchor (which state database it owns and the latest signed audit
// checkpoint). It lives with the keys, not in the database, so a database
// that is lost, emptied or replaced cannot also rewrite what it must match.
// AgeStore and VaultKV implement it; other custodians are discovered by type
// assertion.
type AnchorStore interface {
	// ReadAnchor returns the record, or ErrNotFound when none was written.
	ReadAnchor(ctx context.Context) ([]byte, error)
	// UpdateAnchor calls fn with the current record (nil when none) and
	// stores what fn returns; a nil result leaves the record unchanged. A
	// concurrent update by another process never interleaves with this one
	// unnoticed: Vault's check-and-set retries fn on the newer record.
	UpdateAnchor(ctx context.Context, fn func(current []byte) ([]byte, error)) error
}

// anchorFile is the age store's anchor, next to the encrypted keys. It is
// not secret (no key material) but lives in the 0700 keys directory.
const anchorFile = "state-anchor.json"

// ReadAnchor reads DIR/state-anchor.json.
func (s *AgeStore) ReadAnchor(ctx context.Context) ([]byte, error) {
	return readAnchorFile(filepath.Join(s.dir, anchorFile))
}

func readAnchorFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("keys: state anchor %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: state anchor: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxAnchorSize+1))
	if err != nil {
		return nil, fmt.Errorf("keys: state anchor %s: %w", p, err)
	}
	if len(b) > MaxAnchorSize {
		return nil, fmt.Errorf("keys: state anchor %s is larger than %d bytes", p, MaxAnchorSize)
	}
	return b, nil
}

// UpdateAnchor rewrites DIR/state-anchor.json atomically (write, sync,
// rename). Updates through one AgeStore are serialised; replicas sharing one
// data dir from several processes can interleave, and the worst outcome is
// an anchor naming an older (still valid) checkpoint, because callers only
// ever move it forward.
func (s *AgeStore) UpdateAnchor(ctx context.Context, fn func([]byte) ([]byte, error)) error {
	p := filepath.Join(s.dir, anchorFile)
	s.anchorMu.Lock()
	defer s.anchorMu.Unlock()
	cur, err := readAnchorFile(p)
	next, err := nextAnchor(cur, err, fn)
	if err != nil || next == nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("keys: state anchor: %w", err)
	}
	if err := atomicfile.Write(p, next, 0o600); err != nil {
		return fmt.Errorf("keys: state anchor: %w", err)
	}
	return nil
}

// nextAnchor is the step both stores share in UpdateAnchor: what was read
// (no anchor yet is nil), passed to fn, whose answer must fit MaxAnchorSize.
// A nil answer with no error means "leave it as it is".
func nextAnchor(cur []byte, readErr error, fn func([]byte) ([]byte, error)) ([]byte, error) {
	if errors.Is(readErr, ErrNotFound) {
		cur, readErr = nil, nil
	}
	if readErr != nil {
		return nil, readErr
	}
	next, err := fn(cur)
	if err != nil || next == nil {
		return nil, err
	}
	if len(next) > MaxAnchorSize {
		return nil, fmt.Errorf("keys: state anchor is larger than %d bytes", MaxAnchorSize)
	}
	return next, nil
}

// anchorSecret is the anchor's name under the store's path. It does not
// match the key name pattern, so List never reports it as a key.
const anchorSecret = "_state-anchor"

// ReadAnchor reads the anchor secret from Vault.
func (s *VaultKV) ReadAnchor(ctx context.Context) ([]byte, error) {
	b, _, err := s.readAnchor(ctx)
	return b, err
}

func (s *VaultKV) readAnchor(ctx context.Context) ([]byte, int, error) {
	p := s.cfg.Path + "/" + anchorSecret
	var secret *vault.KVSecret
	err := s.client.Do(ctx, func(c *vault.Client) (err error) {
		secret, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
		return err
	})
	if errors.Is(err, vault.ErrSecretNotFound) {
		return nil, 0, fmt.Errorf("keys: state anchor in vault %s/%s: %w", s.cfg.Mount, p, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("keys: read state anchor from vault %s/%s: %s", s.cfg.Mount, p, vaultclient.ErrorText(err))
	}
	version := 0
	if secret.VersionMetadata != nil {
		version = secret.VersionMetadata.Version
	}
	str, _ := secret.Data["anchor"].(string)
	if str == "" {
		// A deleted (soft) version reads as no data.
		return nil, version, fmt.Errorf("keys: state anchor in vault %s/%s: %w", s.cfg.Mount, p, ErrNotFound)
	}
	if len(str) > MaxAnchorSize {
		return nil, 0, fmt.Errorf("keys: state anchor in vault %s/%s is larger than %d bytes", s.cfg.Mount, p, MaxAnchorSize)
	}
	return []byte(str), version, nil
}

// UpdateAnchor writes the anchor secret with check-and-set on the version it
// read, retrying fn when another replica wrote in between.
func (s *VaultKV) UpdateAnchor(ctx context.Context, fn func([]byte) ([]byte, error)) error {
	p := s.cfg.Path + "/" + anchorSecret
	for range 5 {
		cur, version, err := s.readAnchor(ctx)
		next, err := nextAnchor(cur, err, fn)
		if err != nil || next == nil {
			return err
		}
		err = s.client.Do(ctx, func(c *vault.Client) error {
			_, err := c.KVv2(s.cfg.Mount).Put(ctx, p, map[string]any{"anchor": string(next)}, vault.WithCheckAndSet(version))
			return err
		})
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "check-and-set") {
			return fmt.Errorf("keys: write state anchor to vault %s/%s: %s", s.cfg.Mount, p, vaultclient.ErrorText(err))
		}
	}
	return fmt.Errorf("keys: write state anchor to vault %s/%s: lost the check-and-set race 5 times", s.cfg.Mount, p)
}
