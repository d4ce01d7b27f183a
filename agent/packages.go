package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
	"golang.org/x/mod/semver"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/internal/atomicfile"
	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/signing"
)

// Package layout under <state>/packages:
//
//	state.json         what opamp-go's syncer stores (hashes, statuses)
//	versions/<v>/      an unpacked release, complete (renamed into place)
//	current            symlink to versions/<v>: the version in force; the
//	                   running version is whatever it points at
//	trial.json         {from, to} while a new version proves itself
//	                   (present after a crash: the next start finishes the
//	                   trial or rolls back)
const (
	pkgDir      = "packages"
	versionsDir = "versions"
	currentLink = "current"
	trialFile   = "trial.json"
	pkgState    = "state.json"
	contentSum  = ".trustamp-content-sha256"
)

// diskPackages is opamp-go's PackagesStateProvider on disk, for the agent's
// own (TopLevel) package only. It checks every download before it touches
// the installed version: SHA-256 against content_hash, the Sigstore bundle
// against the configured publisher keys, and the downgrade mark on a lower
// version. It then unpacks to a new directory and hands the version to
// install, which switches and may roll back.
type diskPackages struct {
	dir        string
	publishers []crypto.PublicKey
	// install switches to an unpacked version; an error (the new version
	// did not stay up) means it rolled back.
	install func(ctx context.Context, version string) error
	logf    func(format string, args ...any)
	// limits bound what one archive may unpack to (zero: the defaults).
	limits extractLimits

	mu     sync.Mutex
	st     pkgFileState
	offers map[string]*protobufs.PackageAvailable // being synced, by name
}

type pkgFileState struct {
	AllHash  []byte          `json:"all_packages_hash,omitempty"`
	Hash     []byte          `json:"hash,omitempty"` // the server's package hash of what is installed
	Exists   bool            `json:"exists"`
	Statuses json.RawMessage `json:"statuses,omitempty"`
}

func openPackages(dir string, publishers []crypto.PublicKey) (*diskPackages, error) {
	p := &diskPackages{dir: dir, publishers: publishers, offers: map[string]*protobufs.PackageAvailable{},
		logf: func(string, ...any) {}}
	if err := os.MkdirAll(filepath.Join(dir, versionsDir), 0o700); err != nil {
		return nil, fmt.Errorf("packages dir: %w", err)
	}
	// Unpacks a crash interrupted are garbage.
	if ents, err := os.ReadDir(filepath.Join(dir, versionsDir)); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				os.RemoveAll(filepath.Join(dir, versionsDir, e.Name()))
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, pkgState))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &p.st); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, pkgState), err)
		}
	}
	return p, nil
}

func (p *diskPackages) saveLocked() error {
	b, err := json.Marshal(p.st)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(p.dir, pkgState), b, 0o600)
}

// Current is the version the current link points at ("" before the first
// install) and its directory.
func (p *diskPackages) Current() (version, dir string) {
	target, err := os.Readlink(filepath.Join(p.dir, currentLink))
	if err != nil {
		return "", ""
	}
	return filepath.Base(target), filepath.Join(p.dir, versionsDir, filepath.Base(target))
}

// offer notes the offer opamp-go is about to sync, so UpdateContent knows
// its version and headers.
func (p *diskPackages) offer(pa *protobufs.PackagesAvailable) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, pkg := range pa.GetPackages() {
		p.offers[name] = pkg
	}
}

func (p *diskPackages) AllPackagesHash() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.AllHash, nil
}

func (p *diskPackages) SetAllPackagesHash(h []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.AllHash = h
	return p.saveLocked()
}

func (p *diskPackages) Packages() ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, _ := p.Current(); v != "" || p.st.Exists {
		return []string{""}, nil
	}
	return nil, nil
}

func (p *diskPackages) PackageState(name string) (types.PackageState, error) {
	if name != "" {
		return types.PackageState{}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	v, _ := p.Current()
	return types.PackageState{Exists: v != "" || p.st.Exists, Type: protobufs.PackageType_PackageType_TopLevel,
		Hash: p.st.Hash, Version: v}, nil
}

func (p *diskPackages) SetPackageState(name string, st types.PackageState) error {
	if name != "" {
		return fmt.Errorf("package %q: this agent installs only its own (top-level) package", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.Exists, p.st.Hash = true, st.Hash
	return p.saveLocked()
}

func (p *diskPackages) CreatePackage(name string, typ protobufs.PackageType) error {
	if name != "" || typ != protobufs.PackageType_PackageType_TopLevel {
		return fmt.Errorf("package %q: this agent installs only its own (top-level) package", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.Exists = true
	return p.saveLocked()
}

func (p *diskPackages) FileContentHash(name string) ([]byte, error) {
	if name != "" {
		return nil, nil
	}
	_, dir := p.Current()
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, contentSum))
	if err != nil {
		return nil, nil
	}
	return hex.DecodeString(strings.TrimSpace(string(b)))
}

func (p *diskPackages) DeletePackage(name string) error {
	// Removing the agent's own build would leave nothing to run.
	return fmt.Errorf("package %q: deleting the agent's own package is not supported", name)
}

func (p *diskPackages) LastReportedStatuses() (*protobufs.PackageStatuses, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.st.Statuses) == 0 {
		return nil, nil
	}
	var st protobufs.PackageStatuses
	if err := protojson.Unmarshal(p.st.Statuses, &st); err != nil {
		return nil, nil
	}
	return &st, nil
}

func (p *diskPackages) SetLastReportedStatuses(st *protobufs.PackageStatuses) error {
	b, err := protojson.Marshal(st)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.Statuses = b
	return p.saveLocked()
}

// UpdateContent checks a download and installs it. Every refusal leaves
// the installed version untouched and becomes InstallFailed with its
// reason.
func (p *diskPackages) UpdateContent(ctx context.Context, name string, data io.Reader, contentHash, signature []byte) error {
	if name != "" {
		return fmt.Errorf("package %q: this agent installs only its own (top-level) package", name)
	}
	p.mu.Lock()
	offer := p.offers[name]
	p.mu.Unlock()
	if offer == nil || offer.GetVersion() == "" {
		return errors.New("no offer with a version on record for this download")
	}
	version := offer.GetVersion()
	if err := validVersionName(version); err != nil {
		return err
	}
	running, _ := p.Current()
	if err := checkDowngrade(running, version, offer.GetFile().GetHeaders()); err != nil {
		return err
	}
	tmp, digest, err := p.download(data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if !bytes.Equal(digest, contentHash) {
		return fmt.Errorf("content hash mismatch: downloaded %x, offer says %x", digest, contentHash)
	}
	if err := p.verify(signature, digest); err != nil {
		return err
	}
	if err := p.unpack(tmp, version, digest); err != nil {
		return fmt.Errorf("unpack %s: %w", version, err)
	}
	p.logf("package %s verified (sha256 %x, signature by a configured publisher) and unpacked", version, digest)
	return p.install(ctx, version)
}

// checkDowngrade refuses a version lower than the running one unless the
// offer carries the server's mark for exactly that move.
func checkDowngrade(running, offered string, headers *protobufs.Headers) error {
	if running == "" || semver.Compare(canonical(offered), canonical(running)) >= 0 {
		return nil
	}
	want := extension.DowngradeMark(running, offered)
	for _, h := range headers.GetHeaders() {
		if h.GetKey() == extension.DowngradeHeader {
			if h.GetValue() == want {
				return nil
			}
			return fmt.Errorf("refusing downgrade %s -> %s: mark %q does not name this move", running, offered, h.GetValue())
		}
	}
	return fmt.Errorf("refusing downgrade %s -> %s: the offer is not marked as a deliberate downgrade (%s)", running, offered, extension.DowngradeHeader)
}

func canonical(v string) string { return "v" + strings.TrimPrefix(v, "v") }

// validVersionName refuses versions that cannot be a directory name.
func validVersionName(v string) error {
	if v == "" || v == "." || v == ".." || strings.HasPrefix(v, ".") || strings.ContainsAny(v, `/\`+"\x00") || !semver.IsValid(canonical(v)) {
		return fmt.Errorf("offered version %q is not a semantic version", v)
	}
	return nil
}

// download streams the file to disk, hashing it.
func (p *diskPackages) download(data io.Reader) (string, []byte, error) {
	f, err := os.CreateTemp(p.dir, ".download-*")
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("download: %w", err)
	}
	return f.Name(), h.Sum(nil), nil
}

// verify checks the Sigstore bundle against the configured publisher keys.
func (p *diskPackages) verify(bundle, digest []byte) error {
	if len(p.publishers) == 0 {
		return errors.New("no publisher keys configured (--publisher-key): refusing unverifiable packages")
	}
	if len(bundle) == 0 {
		return errors.New("the offer carries no signature")
	}
	var last error
	for _, pub := range p.publishers {
		if last = signing.VerifyDigest(bundle, pub, digest); last == nil {
			return nil
		}
	}
	return fmt.Errorf("signature does not verify against any configured publisher key: %w", last)
}

// unpack extracts a .tar.gz into versions/<version>, complete or not at
// all: into a hidden directory first, then one rename.
func (p *diskPackages) unpack(archive, version string, digest []byte) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	base := filepath.Join(p.dir, versionsDir)
	tmp, err := os.MkdirTemp(base, "."+version+".*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := extractTarGz(f, tmp, p.limits); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, contentSum), []byte(hex.EncodeToString(digest)+"\n"), 0o400); err != nil {
		return err
	}
	if err := syncTree(tmp); err != nil {
		return err
	}
	final := filepath.Join(base, version)
	if _, err := os.Stat(final); err == nil {
		if cur, _ := p.Current(); cur == version {
			return fmt.Errorf("version %s is the one in force; not replacing it", version)
		}
		if err := os.RemoveAll(final); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(base)
}

func (p *diskPackages) versionDir(v string) string { return filepath.Join(p.dir, versionsDir, v) }

// switchTo points current at version (one rename of a fresh symlink); ""
// removes it (back to nothing installed).
func (p *diskPackages) switchTo(version string) error {
	if version == "" {
		if err := os.Remove(filepath.Join(p.dir, currentLink)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return syncDir(p.dir)
	}
	tmp := filepath.Join(p.dir, ".current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(versionsDir, version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.dir, currentLink)); err != nil {
		return err
	}
	return syncDir(p.dir)
}

// trial is an install in progress.
type trial struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func (p *diskPackages) startTrial(t trial) error {
	b, _ := json.Marshal(t)
	return atomicfile.Write(filepath.Join(p.dir, trialFile), b, 0o600)
}

func (p *diskPackages) pendingTrial() (trial, bool) {
	b, err := os.ReadFile(filepath.Join(p.dir, trialFile))
	if err != nil {
		return trial{}, false
	}
	var t trial
	if json.Unmarshal(b, &t) != nil {
		return trial{}, false
	}
	return t, true
}

func (p *diskPackages) endTrial() error {
	if err := os.Remove(filepath.Join(p.dir, trialFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(p.dir)
}
