package release

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

// Agent is what targeting knows of one agent.
type Agent struct {
	UID string
	// Type is its package type (service.name, or the package.type label);
	// Platform is <os.type>/<host.arch> (or the package.platform label).
	Type, Platform string
	// Version is what it reports running for its top-level package ("" when
	// unknown).
	Version string
	Labels  map[string]string
	// Host is the host:port it reached the OpAMP endpoint at: the default
	// base of download URLs, so they work behind any load balancer it went
	// through.
	Host string
	// Policy is the agent as policy rules see it.
	Policy policies.Agent
}

// AgentFrom is the targeting view of an agent as policies see it.
func AgentFrom(p policies.Agent) Agent {
	return Agent{UID: p.UID, Type: p.Type, Platform: p.Platform, Version: p.Packages[""], Labels: p.Labels, Policy: p}
}

// Offer is the release an agent should run. Its download URL is not part
// of it: the caller asks DownloadURL only when the offer is to be sent (a
// presigned URL differs on every call, and most calls change nothing).
type Offer struct {
	Release state.Release
	// Downgrade marks a deliberate move below the version the agent runs
	// (an operator pin, or a yanked current release); agents refuse lower
	// versions without it. From is that running version.
	Downgrade bool
	From      string
	// Rule says what chose the release, for `agents show` and the record.
	Rule string
	// Wave names the rollout wave the agent is in, when a rollout rule
	// governs the release ("" otherwise).
	Wave string

	start *state.RolloutStart // a rollout this decision starts
}

// catalog is an in-memory view of pins, releases and rollout starts:
// targeting runs on every agent message and must not query the database
// each time.
type catalog struct {
	pins     map[string][]state.Pin              // by type, most specific selector first
	releases map[string]map[string]state.Release // by type+"\x00"+platform, then version
	loaded   int64                               // Clock().UnixNano() at load

	mu     sync.Mutex
	starts map[string]time.Time // by rolloutKey
}

func rolloutKey(typ, version, rule string) string {
	return typ + "\x00" + canonicalVersion(version) + "\x00" + rule
}

func (c *catalog) started(key string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.starts[key]
	return t, ok
}

func (c *catalog) setStarted(key string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts[key] = t
}

// Changes signals (coalesced) that pins, releases or policies changed
// through this Service: the OpAMP server then re-offers to its connected
// agents.
func (s *Service) Changes() <-chan struct{} { return s.changes }

// PoliciesChanged is called when a new policy set goes live: every
// connected agent's target is decided again.
func (s *Service) PoliciesChanged() { s.changed() }

// changed drops the cached catalog and signals Changes.
func (s *Service) changed() {
	s.mu.Lock()
	s.snap = nil
	s.mu.Unlock()
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// policies is the policy set in force (nil: none).
func (s *Service) policies() *policies.Set {
	if s.cfg.Policies == nil {
		return nil
	}
	return s.cfg.Policies()
}

func (s *Service) catalog(ctx context.Context) (*catalog, error) {
	now := s.cfg.Clock().UnixNano()
	s.mu.Lock()
	c := s.snap
	s.mu.Unlock()
	if c != nil && now-c.loaded < int64(s.cfg.CatalogTTL) {
		return c, nil
	}
	var (
		pins   []state.Pin
		rels   []state.Release
		starts []state.RolloutStart
	)
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		if pins, err = tx.Pins(ctx); err != nil {
			return err
		}
		if starts, err = tx.RolloutStarts(ctx); err != nil {
			return err
		}
		rels, err = tx.Releases(ctx, state.ReleaseFilter{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load release catalog: %w", err)
	}
	c = newCatalog(pins, rels, now)
	for _, st := range starts {
		c.starts[rolloutKey(st.Type, st.Version, st.Rule)] = st.StartedAt
	}
	s.mu.Lock()
	s.snap = c
	s.mu.Unlock()
	return c, nil
}

// newCatalog indexes pins (most specific selector first within a type) and
// releases (by type and platform, then canonical version).
func newCatalog(pins []state.Pin, rels []state.Release, loaded int64) *catalog {
	c := &catalog{pins: map[string][]state.Pin{}, releases: map[string]map[string]state.Release{}, loaded: loaded,
		starts: map[string]time.Time{}}
	for _, p := range pins {
		c.pins[p.Type] = append(c.pins[p.Type], p)
	}
	for _, ps := range c.pins {
		sort.SliceStable(ps, func(i, j int) bool { return selectorSize(ps[i].Selector) > selectorSize(ps[j].Selector) })
	}
	for _, r := range rels {
		k := r.Type + "\x00" + r.Platform
		if c.releases[k] == nil {
			c.releases[k] = map[string]state.Release{}
		}
		c.releases[k][canonicalVersion(r.Version)] = r
	}
	return c
}

// decide picks an agent's release: the first package_target policy rule
// that matches it, else the most specific operator pin. It reports false
// when the agent should be offered nothing new; the Offer's Rule then says
// why. prior is what it was offered last (nil: nothing). set may be nil.
//
// An upgrade that a rollout rule governs waits for the agent's wave; a
// downgrade never waits (it is a rollback or a deliberate pin).
func (c *catalog) decide(a Agent, prior *state.AgentPackage, set *policies.Set, now time.Time) (Offer, bool) {
	rels := c.releases[a.Type+"\x00"+a.Platform]
	var (
		chosen   state.Release
		rule     string
		explicit bool
	)
	if r := set.Target(a.Policy, now); r != nil {
		rule, explicit = "policy "+r.Ref(), r.Target.AllowDowngrade
		var ok bool
		if r.Target.Version != "" {
			chosen, ok = rels[canonicalVersion(r.Target.Version)]
			if !ok {
				return Offer{Rule: rule + ": no build of " + r.Target.Version + " for " + a.Platform}, false
			}
		} else if chosen, ok = channelHead(rels, r.Target.Channel); !ok {
			return Offer{Rule: rule + ": no release in channel " + r.Target.Channel + " for " + a.Platform}, false
		}
	} else {
		pin, ok := c.pin(a)
		if !ok {
			return Offer{}, false
		}
		// A pin is an operator's explicit choice: lower than what an agent
		// runs is a deliberate downgrade.
		rule, explicit = "pin "+pinName(pin), true
		if chosen, ok = rels[canonicalVersion(pin.Version)]; !ok {
			return Offer{Rule: rule + ": no build for " + a.Platform}, false
		}
	}
	o, ok := resolve(a, prior, rels, chosen, rule, explicit)
	if !ok || o.Downgrade {
		return o, ok
	}
	return c.gate(a, prior, set, o, now)
}

// resolve applies release states and the downgrade rule to the chosen
// release.
func resolve(a Agent, prior *state.AgentPackage, rels map[string]state.Release, chosen state.Release, rule string, explicit bool) (Offer, bool) {
	o := Offer{Release: chosen, Rule: rule}
	switch chosen.State {
	case state.ReleaseActive:
	case state.ReleaseHalted:
		// A halted rollout makes no new offers; who has it keeps it.
		if prior == nil || prior.SHA256 != chosen.SHA256 {
			return Offer{Rule: rule + ": rollout halted"}, false
		}
	default:
		// The chosen release was withdrawn: fall back to the newest active
		// release below it.
		prev, ok := previousActive(rels, chosen.Version)
		if !ok {
			return Offer{Rule: rule + ": " + string(chosen.State) + ", no earlier active release"}, false
		}
		o.Release, o.Rule, explicit = prev, rule+" ("+chosen.Version+" "+string(chosen.State)+"): previous release", false
	}
	if a.Version != "" && compareVersions(o.Release.Version, a.Version) < 0 {
		// Lower than what the agent runs: only deliberately, or away from
		// a withdrawn release.
		current, known := rels[canonicalVersion(a.Version)]
		withdrawn := known && current.State != state.ReleaseActive && current.State != state.ReleaseHalted
		if !explicit && !withdrawn {
			return Offer{Rule: o.Rule + ": downgrade from " + a.Version + " refused (allow_downgrade is not set)"}, false
		}
		o.Downgrade, o.From = true, a.Version
	}
	return o, true
}

// gate holds back an upgrade until the agent's wave of the rollout rule
// governing the release opens. An agent already offered the release, or
// already running it, is never held back: waves only ever widen.
func (c *catalog) gate(a Agent, prior *state.AgentPackage, set *policies.Set, o Offer, now time.Time) (Offer, bool) {
	if (prior != nil && prior.SHA256 == o.Release.SHA256) ||
		(a.Version != "" && canonicalVersion(a.Version) == canonicalVersion(o.Release.Version)) {
		return o, true
	}
	view := releaseView(o.Release)
	rr := set.Rollout(view, now)
	if rr == nil || !rr.Takes(a.Policy, view, now) {
		return o, true
	}
	key := rolloutKey(o.Release.Type, o.Release.Version, rr.Name)
	started, ok := c.started(key)
	if !ok {
		started = now
		o.start = &state.RolloutStart{Type: o.Release.Type, Version: o.Release.Version, Rule: rr.Name, StartedAt: now}
	}
	wave := rr.Wave(a.UID)
	o.Wave = fmt.Sprintf("rollout %s wave %d/%d", rr.Ref(), wave+1, len(rr.Waves))
	if wave >= rr.OpenWaves(started, now) {
		opens := started.Add(time.Duration(wave) * rr.Soak).UTC().Format(time.RFC3339)
		return Offer{Rule: o.Rule + "; " + o.Wave + " opens at " + opens, start: o.start}, false
	}
	o.Rule += "; " + o.Wave
	return o, true
}

// releaseView is a release as rollout rules see it. Its channel label is
// derived from the version (see channelOf).
func releaseView(r state.Release) policies.Release {
	return policies.Release{Type: r.Type, Version: r.Version, Labels: map[string]string{"channel": channelOf(r.Version)}}
}

// channelOf names the channel a version belongs to: "stable" without a
// pre-release part, else the pre-release's leading letters ("1.2.0-beta.1"
// is "beta", "2.0.0-rc1" is "rc"). Channels come from versions rather than
// from labels set at publish time so a signed version cannot be moved to
// another channel after the fact.
func channelOf(version string) string {
	pre := strings.TrimPrefix(semver.Prerelease(canonicalVersion(version)), "-")
	if pre == "" {
		return "stable"
	}
	end := strings.IndexFunc(pre, func(r rune) bool { return r < 'a' || r > 'z' })
	if end == 0 {
		return pre
	}
	if end > 0 {
		pre = pre[:end]
	}
	return pre
}

// channelHead is the newest release in a channel that is active or halted
// (a halted head stops new offers instead of falling back: a rollout halt
// must not turn into an offer of something else). "latest" is every
// channel.
func channelHead(rels map[string]state.Release, channel string) (state.Release, bool) {
	var best state.Release
	found := false
	for _, r := range rels {
		if r.State != state.ReleaseActive && r.State != state.ReleaseHalted {
			continue
		}
		if channel != "latest" && channelOf(r.Version) != channel {
			continue
		}
		if !found || compareVersions(r.Version, best.Version) > 0 {
			best, found = r, true
		}
	}
	return best, found
}

// pin is the most specific pin whose selector the agent's labels match.
func (c *catalog) pin(a Agent) (state.Pin, bool) {
	for _, p := range c.pins[a.Type] {
		if selectorMatches(p.Selector, a.Labels) {
			return p, true
		}
	}
	return state.Pin{}, false
}

func previousActive(rels map[string]state.Release, below string) (state.Release, bool) {
	var best state.Release
	found := false
	for _, r := range rels {
		if r.State != state.ReleaseActive || compareVersions(r.Version, below) >= 0 {
			continue
		}
		if !found || compareVersions(r.Version, best.Version) > 0 {
			best, found = r, true
		}
	}
	return best, found
}

// Offer decides what an agent should run, checks the stored bytes, and
// records the offer when it differs from prior. It reports false when there
// is nothing (new) to offer; the returned row is what is now on record.
func (s *Service) Offer(ctx context.Context, a Agent, prior *state.AgentPackage) (Offer, *state.AgentPackage, bool, error) {
	c, err := s.catalog(ctx)
	if err != nil {
		return Offer{}, prior, false, err
	}
	o, ok := c.decide(a, prior, s.policies(), s.cfg.Clock())
	if o.start != nil {
		if err := s.startRollout(ctx, c, *o.start); err != nil {
			return Offer{}, prior, false, err
		}
		if !ok {
			// The rollout started with this decision; the agent's wave
			// may be open now that the start is the recorded one.
			o, ok = c.decide(a, prior, s.policies(), s.cfg.Clock())
		}
	}
	if !ok {
		return o, prior, false, nil
	}
	if err := s.checkBlob(ctx, o.Release.SHA256, []state.Release{o.Release}); err != nil {
		if errors.Is(err, ErrBlobTampered) {
			return Offer{}, prior, false, nil
		}
		return Offer{}, prior, false, fmt.Errorf("check blob of %s %s: %w", o.Release.Type, o.Release.Version, err)
	}
	if prior != nil && prior.SHA256 == o.Release.SHA256 {
		// The same release as before is the same offer, downgrade mark
		// included: once installed the agent runs that version and a fresh
		// decision would no longer call it a downgrade, but a changed offer
		// would make it install again.
		o.Downgrade, o.From = prior.Downgrade, prior.From
		return o, prior, true, nil
	}
	now := s.cfg.Clock()
	row := &state.AgentPackage{UID: a.UID, Type: a.Type, Version: o.Release.Version, SHA256: o.Release.SHA256,
		State: state.PackageOffered, Rule: o.Rule, Downgrade: o.Downgrade, From: o.From, OfferedAt: now, UpdatedAt: now}
	if err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutAgentPackage(ctx, *row) }); err != nil {
		return Offer{}, prior, false, fmt.Errorf("record offer of %s %s to %s: %w", a.Type, o.Release.Version, a.UID, err)
	}
	s.cfg.Metrics.Offers.WithLabelValues(a.Type, o.Release.Version).Inc()
	return o, row, true, nil
}

// startRollout records a rollout's start (the earliest on record wins, so
// replicas agree) and remembers it in the catalog.
func (s *Service) startRollout(ctx context.Context, c *catalog, st state.RolloutStart) error {
	var got state.RolloutStart
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) (err error) {
		got, err = tx.StartRollout(ctx, st)
		return err
	})
	if err != nil {
		return fmt.Errorf("start rollout of %s %s: %w", st.Type, st.Version, err)
	}
	c.setStarted(rolloutKey(st.Type, st.Version, st.Rule), got.StartedAt)
	if got.StartedAt.Equal(st.StartedAt) {
		s.cfg.Logger.Info("rollout started", "type", st.Type, "version", st.Version, "rule", st.Rule)
	}
	return nil
}

// Decide is what an agent would be offered under set, without recording
// anything: `policy simulate` shows it before a policy goes live.
func (s *Service) Decide(ctx context.Context, a Agent, prior *state.AgentPackage, set *policies.Set) (Offer, bool, error) {
	c, err := s.catalog(ctx)
	if err != nil {
		return Offer{}, false, err
	}
	o, ok := c.decide(a, prior, set, s.cfg.Clock())
	o.start = nil
	return o, ok, nil
}

// DownloadURL is where agent a downloads the blob sha: a presigned
// object-storage URL when configured and the store has them, else the
// server's own mTLS endpoint.
func (s *Service) DownloadURL(ctx context.Context, a Agent, sha string) (string, error) {
	if s.cfg.Presign > 0 {
		u, err := s.cfg.Blobs.Presign(ctx, sha, s.cfg.Presign)
		if err != nil && !errors.Is(err, blob.ErrNotSupported) {
			return "", fmt.Errorf("presign %s: %w", sha, err)
		}
		if err == nil {
			return u, nil
		}
	}
	base := s.cfg.DownloadBaseURL
	if base == "" {
		if a.Host == "" {
			return "", errors.New("no download base URL: set packages.download_base_url")
		}
		base = "https://" + a.Host
	}
	return strings.TrimSuffix(base, "/") + "/v1/packages/" + url.PathEscape(sha), nil
}

// Status is what an agent reported about the release it was offered.
type Status struct {
	Version string // the version offered that the status is about
	State   string // one of state.Package*
	Message string
}

// Report records an agent's progress on its offer; a failure that takes the
// release's failure rate past the threshold halts its rollout (audited).
func (s *Service) Report(ctx context.Context, a Agent, prior *state.AgentPackage, st Status) (*state.AgentPackage, error) {
	if prior == nil || canonicalVersion(st.Version) != canonicalVersion(prior.Version) ||
		(prior.State == st.State && prior.Message == st.Message) {
		return prior, nil
	}
	row := *prior
	row.State, row.Message, row.UpdatedAt = st.State, st.Message, s.cfg.Clock()
	if err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutAgentPackage(ctx, row) }); err != nil {
		return prior, fmt.Errorf("record package status of %s: %w", a.UID, err)
	}
	switch st.State {
	case state.PackageInstalled:
		s.cfg.Metrics.Installs.WithLabelValues(row.Type, row.Version).Inc()
	case state.PackageFailed:
		s.cfg.Metrics.Failures.WithLabelValues(row.Type, row.Version).Inc()
		if err := s.maybeHalt(ctx, row.Type, row.Version); err != nil {
			s.cfg.Logger.Error("check rollout failure rate", "type", row.Type, "version", row.Version, "err", err)
		}
	}
	return &row, nil
}

// maybeHalt halts the rollout of typ at version when its failures pass the
// threshold. The count and the state change share one transaction, so two
// replicas cannot both halt it.
//
// A rollout policy rule governing the release sets the rate (its
// halt_failure_rate); packages.halt_failure_rate applies otherwise.
func (s *Service) maybeHalt(ctx context.Context, typ, version string) error {
	rate := s.cfg.HaltFailureRate
	if rr := s.policies().Rollout(releaseView(state.Release{Type: typ, Version: version}), s.cfg.Clock()); rr != nil && rr.HaltFailureRate > 0 {
		rate = rr.HaltFailureRate
	}
	halted := false
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		rows, err := tx.AgentPackages(ctx, "", typ, version)
		if err != nil {
			return err
		}
		failed := 0
		for _, r := range rows {
			if r.State == state.PackageFailed {
				failed++
			}
		}
		if failed < s.cfg.HaltMinFailures || float64(failed) < rate*float64(len(rows)) {
			return nil
		}
		rels, err := tx.Releases(ctx, state.ReleaseFilter{Type: typ, Version: version})
		if err != nil {
			return err
		}
		reason := fmt.Sprintf("%d of %d agents failed to install (threshold %.0f%%, at least %d)",
			failed, len(rows), 100*rate, s.cfg.HaltMinFailures)
		for _, r := range rels {
			if r.State != state.ReleaseActive {
				continue
			}
			if err := tx.SetReleaseState(ctx, r.ID, state.ReleaseHalted, reason, s.cfg.Clock()); err != nil {
				return err
			}
			if _, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "system:rollouts", Action: "release.halt", Subject: r.ID,
				Details: map[string]any{"type": typ, "version": version, "platform": r.Platform, "failed": failed,
					"offered": len(rows), "reason": reason}}); err != nil {
				return err
			}
			halted = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if halted {
		s.cfg.Metrics.Halts.WithLabelValues(typ, version).Inc()
		s.cfg.Logger.Warn("rollout halted: too many failed installs", "type", typ, "version", version)
		s.changed()
	}
	return nil
}

// AgentPackages returns what one agent was last offered, by type.
func (s *Service) AgentPackages(ctx context.Context, uid string) ([]state.AgentPackage, error) {
	var out []state.AgentPackage
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		out, err = tx.AgentPackages(ctx, uid, "", "")
		return err
	})
	return out, err
}

// Rollout is the progress of one release across the agents offered it.
type Rollout struct {
	Type, Version string
	Releases      []state.Release
	Counts        map[string]int // by state.Package* state
	Failures      []state.AgentPackage
}

// Rollout reports how far typ at version got.
func (s *Service) Rollout(ctx context.Context, typ, version string) (Rollout, error) {
	r := Rollout{Type: typ, Version: version, Counts: map[string]int{}}
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) error {
		rels, err := tx.Releases(ctx, state.ReleaseFilter{Type: typ, Version: version})
		if err != nil {
			return err
		}
		if len(rels) == 0 {
			return fmt.Errorf("no release %s %s: %w", typ, version, ErrNotFound)
		}
		r.Releases = rels
		rows, err := tx.AgentPackages(ctx, "", typ, version)
		if err != nil {
			return err
		}
		for _, row := range rows {
			r.Counts[row.State]++
			if row.State == state.PackageFailed {
				r.Failures = append(r.Failures, row)
			}
		}
		return nil
	})
	return r, err
}

// Promote pins typ to version for the agents whose labels match selector
// (nil: the type's default channel). The version must have an active
// build; a lower version than before is a deliberate downgrade for the
// agents it covers. Audited.
func (s *Service) Promote(ctx context.Context, typ, version string, selector map[string]string, actor string) (state.Pin, error) {
	if !namePattern.MatchString(typ) {
		return state.Pin{}, fmt.Errorf("%w: package type %q", ErrInvalid, typ)
	}
	sel, err := canonicalSelector(selector)
	if err != nil {
		return state.Pin{}, err
	}
	pin := state.Pin{Type: typ, Selector: sel, Version: version, PinnedAt: s.cfg.Clock(), PinnedBy: actor}
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		rels, err := tx.Releases(ctx, state.ReleaseFilter{Type: typ, Version: version})
		if err != nil {
			return err
		}
		active := slices.ContainsFunc(rels, func(r state.Release) bool { return r.State == state.ReleaseActive })
		if !active {
			return fmt.Errorf("no active release %s %s to promote (publish it first; yanked, halted and quarantined releases cannot be promoted): %w",
				typ, version, ErrNotFound)
		}
		pin.Version = rels[0].Version
		pins, err := tx.Pins(ctx)
		if err != nil {
			return err
		}
		previous := ""
		for _, p := range pins {
			if p.Type == typ && p.Selector == sel {
				previous = p.Version
			}
		}
		if err := tx.PutPin(ctx, pin); err != nil {
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "release.promote", Subject: typ + "@" + pin.Version,
			Details: map[string]any{"type": typ, "version": pin.Version, "selector": sel, "previous": previous}})
		return err
	})
	if err != nil {
		return state.Pin{}, fmt.Errorf("promote %s %s: %w", typ, version, err)
	}
	s.changed()
	return pin, nil
}

// Pins lists the pins in force.
func (s *Service) Pins(ctx context.Context) ([]state.Pin, error) {
	var out []state.Pin
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		out, err = tx.Pins(ctx)
		return err
	})
	return out, err
}

func pinName(p state.Pin) string {
	if p.Selector == "" {
		return p.Type + "@" + p.Version
	}
	return p.Type + "@" + p.Version + " [" + p.Selector + "]"
}

// canonicalSelector renders labels as "k=v,k2=v2" sorted by key.
func canonicalSelector(sel map[string]string) (string, error) {
	keys := slices.Sorted(maps.Keys(sel))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "=,") || strings.ContainsAny(sel[k], "=,") {
			return "", fmt.Errorf("%w: label %q=%q: keys and values may not contain '=' or ','", ErrInvalid, k, sel[k])
		}
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ","), nil
}

func selectorSize(sel string) int {
	if sel == "" {
		return 0
	}
	return strings.Count(sel, ",") + 1
}

func selectorMatches(sel string, labels map[string]string) bool {
	if sel == "" {
		return true
	}
	for _, kv := range strings.Split(sel, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func canonicalVersion(v string) string { return "v" + strings.TrimPrefix(v, "v") }

func compareVersions(a, b string) int {
	return semver.Compare(canonicalVersion(a), canonicalVersion(b))
}
