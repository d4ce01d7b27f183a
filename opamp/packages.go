package opamp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/release"
	"github.com/trustamp/trustamp/storage/state"
)

// Packages decides and records what agents are offered; release.Service is
// one.
type Packages interface {
	Offer(ctx context.Context, a release.Agent, prior *state.AgentPackage) (release.Offer, *state.AgentPackage, bool, error)
	DownloadURL(ctx context.Context, a release.Agent, sha256 string) (string, error)
	Report(ctx context.Context, a release.Agent, prior *state.AgentPackage, st release.Status) (*state.AgentPackage, error)
	AgentPackages(ctx context.Context, uid string) ([]state.AgentPackage, error)
	Changes() <-chan struct{}
}

// Labels that override what an agent says about itself for targeting: a
// fleet whose agents report no (or a misleading) service.name or platform
// is labelled at enrollment instead.
const (
	LabelPackageType     = "package.type"
	LabelPackagePlatform = "package.platform"
)

// packageState is one connection's view of its agent's packages.
type packageState struct {
	mu       sync.Mutex
	loaded   bool
	prior    *state.AgentPackage        // what was last offered, as recorded
	sent     []byte                     // all_packages_hash the agent has (reported or sent here)
	statuses *protobufs.PackageStatuses // last reported
	// agent is the targeting view of the agent (re-offers from other
	// goroutines must not read conn.agent), rebuilt when a message brings
	// what it is made of: a description or package statuses. described
	// when it says what it is and runs on; ok when it also accepts
	// packages.
	agent         release.Agent
	viewed        bool
	described, ok bool
}

// offerPackages records the agent's package statuses and puts a
// packages_available offer in resp when its target differs from what the
// agent has.
func (c *conn) offerPackages(ctx context.Context, msg *protobufs.AgentToServer, resp *protobufs.ServerToAgent) {
	if c.s.cfg.Packages == nil || c.agent == nil {
		return
	}
	c.pkg.mu.Lock()
	defer c.pkg.mu.Unlock()
	if msg.PackageStatuses != nil {
		c.pkg.statuses = msg.PackageStatuses
		if h := msg.PackageStatuses.ServerProvidedAllPackagesHash; len(h) > 0 && c.pkg.sent == nil && settled(msg.PackageStatuses) {
			c.pkg.sent = h
		}
	}
	if !c.pkg.viewed || msg.AgentDescription != nil || msg.PackageStatuses != nil {
		// Not on every heartbeat: it parses the stored description.
		c.pkg.agent, c.pkg.described = c.packageAgent()
		c.pkg.viewed = true
	}
	c.pkg.ok = c.pkg.described && c.agent.Capabilities&uint64(protobufs.AgentCapabilities_AgentCapabilities_AcceptsPackages) != 0
	if pa := c.computeOffer(ctx, msg.PackageStatuses != nil); pa != nil {
		resp.PackagesAvailable = pa
	}
}

// settled reports whether the agent finished with every package it was
// offered (installed, or failed for good). An agent that restarted in the
// middle of a download or install reports the offer's hash too, but only a
// fresh offer makes opamp-go's syncer pick the work up again: it is sent
// once more.
func settled(st *protobufs.PackageStatuses) bool {
	for _, ps := range st.GetPackages() {
		switch ps.GetStatus() {
		case protobufs.PackageStatusEnum_PackageStatusEnum_Installed, protobufs.PackageStatusEnum_PackageStatusEnum_InstallFailed:
		default:
			return false
		}
	}
	return true
}

// computeOffer runs with c.pkg.mu held; it returns an offer to send, or nil.
func (c *conn) computeOffer(ctx context.Context, report bool) *protobufs.PackagesAvailable {
	a := c.pkg.agent
	if !c.pkg.ok {
		return nil
	}
	pk := c.s.cfg.Packages
	if !c.pkg.loaded {
		rows, err := pk.AgentPackages(ctx, a.UID)
		if err != nil {
			c.s.log.Error("load agent packages", "uid", a.UID, "err", err)
			return nil
		}
		for i := range rows {
			if rows[i].Type == a.Type {
				c.pkg.prior = &rows[i]
			}
		}
		c.pkg.loaded = true
	}
	if report && c.pkg.prior != nil {
		if ps := c.pkg.statuses.GetPackages()[""]; ps != nil {
			st := release.Status{Version: ps.ServerOfferedVersion, State: packageStatus(ps), Message: ps.ErrorMessage}
			row, err := pk.Report(ctx, a, c.pkg.prior, st)
			if err != nil {
				c.s.log.Error("record package status", "uid", a.UID, "err", err)
			}
			c.pkg.prior = row
		}
	}
	o, row, ok, err := pk.Offer(ctx, a, c.pkg.prior)
	if err != nil {
		c.s.log.Error("offer packages", "uid", a.UID, "err", err)
		return nil
	}
	c.pkg.prior = row
	if !ok {
		return nil
	}
	pa := packagesAvailable(o)
	if bytes.Equal(pa.AllPackagesHash, c.pkg.sent) {
		return nil
	}
	u, err := pk.DownloadURL(ctx, a, o.Release.SHA256)
	if err != nil {
		c.s.log.Error("download URL for package offer", "uid", a.UID, "err", err)
		return nil
	}
	pa.Packages[""].File.DownloadUrl = u
	c.pkg.sent = pa.AllPackagesHash
	c.s.log.Info("package offered", "uid", a.UID, "type", a.Type, "version", o.Release.Version,
		"downgrade", o.Downgrade, "rule", o.Rule)
	return pa
}

// packageAgent is what targeting needs of this connection's agent; false
// when it does not say what it is or runs on.
func (c *conn) packageAgent() (release.Agent, bool) {
	if c.pkg.statuses == nil && len(c.agent.PackageStatuses) > 0 {
		var st protobufs.PackageStatuses
		if protojson.Unmarshal(c.agent.PackageStatuses, &st) == nil {
			c.pkg.statuses = &st
		}
	}
	a := release.AgentFrom(PolicyAgent(*c.agent))
	a.Host = c.host
	return a, a.Type != "" && a.Platform != ""
}

func packageStatus(ps *protobufs.PackageStatus) string {
	switch ps.Status {
	case protobufs.PackageStatusEnum_PackageStatusEnum_Installed:
		if ps.ServerOfferedVersion == "" || ps.AgentHasVersion == ps.ServerOfferedVersion {
			return state.PackageInstalled
		}
		return state.PackageOffered
	case protobufs.PackageStatusEnum_PackageStatusEnum_Downloading:
		return state.PackageDownloading
	case protobufs.PackageStatusEnum_PackageStatusEnum_Installing:
		return state.PackageInstalling
	case protobufs.PackageStatusEnum_PackageStatusEnum_InstallFailed:
		return state.PackageFailed
	default:
		return state.PackageOffered
	}
}

// packagesAvailable builds the offer, without its download URL: the
// agent's own build as the top-level package under the empty name. The
// hashes cover what the agent acts on (version, content hash, downgrade
// mark) and not the URL, whose presigned query changes on every call.
func packagesAvailable(o release.Offer) *protobufs.PackagesAvailable {
	content, _ := hex.DecodeString(o.Release.SHA256)
	file := &protobufs.DownloadableFile{ContentHash: content, Signature: o.Release.Signature}
	h := sha256.New()
	h.Write([]byte("trustamp-package\x00" + o.Release.Type + "\x00" + o.Release.Version + "\x00" + o.Release.SHA256))
	if o.Downgrade {
		mark := extension.DowngradeMark(o.From, o.Release.Version)
		file.Headers = &protobufs.Headers{Headers: []*protobufs.Header{{Key: extension.DowngradeHeader, Value: mark}}}
		h.Write([]byte("\x00downgrade\x00" + mark))
	}
	pkgHash := h.Sum(nil)
	all := sha256.Sum256(append([]byte("trustamp-packages\x00\x00"), pkgHash...))
	return &protobufs.PackagesAvailable{
		Packages: map[string]*protobufs.PackageAvailable{"": {
			Type: protobufs.PackageType_PackageType_TopLevel, Version: o.Release.Version, File: file, Hash: pkgHash,
		}},
		AllPackagesHash: all[:],
	}
}

// RunPackages re-offers packages to this replica's connected agents when
// the release catalog changes here, and every PackageRefresh for changes
// made on other replicas, until ctx ends.
func (s *Server) RunPackages(ctx context.Context) error {
	if s.cfg.Packages == nil {
		return nil
	}
	tick := time.NewTicker(s.cfg.PackageRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Packages.Changes():
		case <-tick.C:
		}
		s.refreshPackages(ctx)
	}
}

// refreshPackages sends each connected agent its offer when it changed.
func (s *Server) refreshPackages(ctx context.Context) {
	for _, c := range s.conns.all() {
		if ctx.Err() != nil {
			return
		}
		c.pkg.mu.Lock()
		pa := c.computeOffer(ctx, false) // nothing before the agent's first message
		c.pkg.mu.Unlock()
		if pa == nil {
			continue
		}
		msg := &protobufs.ServerToAgent{InstanceUid: c.uid[:], Capabilities: s.capabilities(), PackagesAvailable: pa}
		if err := c.live.Send(ctx, msg); err != nil {
			s.log.Warn("send package offer", "uid", c.uid, "err", err)
			c.pkg.mu.Lock()
			c.pkg.sent = nil // resend on its next message
			c.pkg.mu.Unlock()
			continue
		}
		s.metrics.Messages.WithLabelValues("out").Inc()
	}
}
