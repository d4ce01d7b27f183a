package loadgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
)

// PackagesConfig makes a simulated agent accept packages: it declares
// AcceptsPackages and ReportsPackageStatuses, describes itself with
// service.name, service.version, os.type and host.arch, and installs offers
// through opamp-go's own package syncer into memory.
type PackagesConfig struct {
	Type     string // service.name
	Version  string // service.version, and the top-level package it starts with
	OS, Arch string // os.type, host.arch
	// Verify checks a downloaded file (already checked against its
	// content_hash) and its offer before it is installed; an error is
	// reported to the server as InstallFailed with its message. Nil accepts
	// everything that hashes right.
	Verify func(offer *protobufs.PackageAvailable, content []byte) error
	// OnOffer sees every packages_available the agent receives.
	OnOffer func(*protobufs.PackagesAvailable)
	// OnInstalled is called after a version was installed.
	OnInstalled func(version string, content []byte)
}

// memPackages is an in-memory types.PackagesStateProvider.
type memPackages struct {
	cfg *PackagesConfig

	mu       sync.Mutex
	allHash  []byte
	states   map[string]types.PackageState
	content  map[string][]byte
	statuses *protobufs.PackageStatuses
	offered  map[string]*protobufs.PackageAvailable // the offer being synced, by name
}

func newMemPackages(cfg *PackagesConfig) *memPackages {
	return &memPackages{cfg: cfg,
		states:  map[string]types.PackageState{"": {Exists: true, Type: protobufs.PackageType_PackageType_TopLevel, Version: cfg.Version}},
		content: map[string][]byte{},
		offered: map[string]*protobufs.PackageAvailable{},
		statuses: &protobufs.PackageStatuses{Packages: map[string]*protobufs.PackageStatus{
			"": {Name: "", AgentHasVersion: cfg.Version, Status: protobufs.PackageStatusEnum_PackageStatusEnum_Installed},
		}},
	}
}

func (m *memPackages) AllPackagesHash() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allHash, nil
}

func (m *memPackages) SetAllPackagesHash(h []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allHash = h
	return nil
}

func (m *memPackages) Packages() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.states {
		out = append(out, name)
	}
	return out, nil
}

func (m *memPackages) PackageState(name string) (types.PackageState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.states[name], nil
}

func (m *memPackages) SetPackageState(name string, st types.PackageState) error {
	m.mu.Lock()
	st.Exists = true
	m.states[name] = st
	content := m.content[name]
	m.mu.Unlock()
	if m.cfg.OnInstalled != nil {
		m.cfg.OnInstalled(st.Version, content)
	}
	return nil
}

func (m *memPackages) CreatePackage(name string, typ protobufs.PackageType) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[name] = types.PackageState{Exists: true, Type: typ}
	return nil
}

func (m *memPackages) FileContentHash(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.content[name]
	if !ok {
		return nil, nil
	}
	sum := sha256.Sum256(c)
	return sum[:], nil
}

// UpdateContent checks the download before keeping it: the bytes must hash
// to content_hash (opamp-go does not check), then Verify must accept them.
func (m *memPackages) UpdateContent(_ context.Context, name string, data io.Reader, contentHash, _ []byte) error {
	b, err := io.ReadAll(data)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	sum := sha256.Sum256(b)
	if !bytes.Equal(sum[:], contentHash) {
		return fmt.Errorf("content hash mismatch: got %x, offer says %x", sum, contentHash)
	}
	m.mu.Lock()
	offer := m.offered[name]
	m.mu.Unlock()
	if m.cfg.Verify != nil {
		if offer == nil {
			return errors.New("no offer on record for this package")
		}
		if err := m.cfg.Verify(offer, b); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.content[name] = b
	m.mu.Unlock()
	return nil
}

func (m *memPackages) DeletePackage(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.states, name)
	delete(m.content, name)
	return nil
}

func (m *memPackages) LastReportedStatuses() (*protobufs.PackageStatuses, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statuses, nil
}

func (m *memPackages) SetLastReportedStatuses(st *protobufs.PackageStatuses) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.statuses = st
	return nil
}

// offer notes what is about to be synced, so UpdateContent can show Verify
// the offer (version, signature, headers) the bytes belong to.
func (m *memPackages) offer(pa *protobufs.PackagesAvailable) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, p := range pa.Packages {
		m.offered[name] = p
	}
}

// Installed returns the version and bytes of the agent's top-level package.
func (a *Agent) Installed() (string, []byte) {
	if a.pkgs == nil {
		return "", nil
	}
	a.pkgs.mu.Lock()
	defer a.pkgs.mu.Unlock()
	return a.pkgs.states[""].Version, a.pkgs.content[""]
}
