package revocation

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trustamp/trustamp/policies"
)

const (
	autoWindow  = time.Hour        // what event.count counts over
	autoRepeat  = 10 * time.Minute // one action per agent and rule within
	autoTimeout = 30 * time.Second
	autoMaxKeys = 100_000 // tracked uid/kind pairs before pruning
)

// AutoConfig wires an Auto.
type AutoConfig struct {
	Service  *Service
	Policies func() *policies.Set
	Logger   *slog.Logger
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Auto applies auto_revoke policy rules to security events: the first rule
// that matches revokes the agent (all its certificates, quarantined) or
// quarantines it for review, as "policy:<rule>".
//
// Event counts (event.count: how many such events the agent had in the last
// hour) are kept in memory per replica: an agent reconnecting through
// several replicas is counted on each. The same rule does not act on the
// same agent again within 10 minutes, so a revoked agent's reconnect
// attempts do not pile up audit entries.
type Auto struct {
	cfg AutoConfig

	mu    sync.Mutex
	seen  map[string][]time.Time // uid + kind -> event times within the window
	acted map[string]time.Time   // uid + rule -> when it last acted
	wg    sync.WaitGroup
}

// NewAuto returns an Auto.
func NewAuto(cfg AutoConfig) *Auto {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Auto{cfg: cfg, seen: map[string][]time.Time{}, acted: map[string]time.Time{}}
}

// Event reports a security event about agent a. It returns at once; a
// matching rule acts in the background (the event usually arrives inside
// the very connection the action closes). It reports the rule that will
// act, or nil.
func (au *Auto) Event(ctx context.Context, a policies.Agent, kind string, detail map[string]string) *policies.Rule {
	if au == nil || au.cfg.Policies == nil {
		return nil
	}
	now := au.cfg.Clock()
	count := au.count(a.UID, kind, now)
	r := au.cfg.Policies().AutoRevoke(a, policies.Event{Kind: kind, Count: count, Detail: detail}, now)
	if r == nil || !au.claim(a.UID, r.Name, now) {
		return nil
	}
	note := fmt.Sprintf("auto_revoke rule %s: %s (%d in the last hour)", r.Ref(), kind, count)
	au.wg.Add(1)
	go func() {
		defer au.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), autoTimeout)
		defer cancel()
		if err := au.act(ctx, a.UID, r, note); err != nil {
			au.cfg.Logger.Error("auto_revoke", "uid", a.UID, "rule", r.Ref(), "event", kind, "err", err)
			au.unclaim(a.UID, r.Name)
		}
	}()
	return r
}

func (au *Auto) act(ctx context.Context, uid string, r *policies.Rule, note string) error {
	actor := "policy:" + r.Name
	if r.Action == "quarantine" {
		reason := r.Reason
		if reason == "" {
			reason = "policy"
		}
		fresh, err := au.cfg.Service.Quarantine(ctx, uid, reason, actor, note)
		if err == nil && fresh {
			au.cfg.Logger.Warn("agent quarantined by policy", "uid", uid, "rule", r.Ref())
		}
		return err
	}
	res, err := au.cfg.Service.Revoke(ctx, Request{UIDs: []string{uid}, Reason: r.Reason, Note: note, Actor: actor})
	if err != nil {
		return err
	}
	au.cfg.Logger.Warn("agent revoked by policy", "uid", uid, "rule", r.Ref(), "certificates", len(res.Revoked),
		"closed_connections", res.ClosedConnections)
	return nil
}

// count records an event and returns how many of its kind the agent had
// within the window, this one included.
func (au *Auto) count(uid, kind string, now time.Time) int {
	au.mu.Lock()
	defer au.mu.Unlock()
	key := uid + "\x00" + kind
	ts := au.seen[key]
	keep := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < autoWindow {
			keep = append(keep, t)
		}
	}
	keep = append(keep, now)
	au.seen[key] = keep
	if len(au.seen) > autoMaxKeys {
		au.prune(now)
	}
	return len(keep)
}

// prune drops keys whose events all left the window (bounds memory under
// a flood of refused uids).
func (au *Auto) prune(now time.Time) {
	for k, ts := range au.seen {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= autoWindow {
			delete(au.seen, k)
		}
	}
	for k, t := range au.acted {
		if now.Sub(t) >= autoRepeat {
			delete(au.acted, k)
		}
	}
}

// claim reports whether rule may act on uid now, and marks it.
func (au *Auto) claim(uid, rule string, now time.Time) bool {
	au.mu.Lock()
	defer au.mu.Unlock()
	key := uid + "\x00" + rule
	if t, ok := au.acted[key]; ok && now.Sub(t) < autoRepeat {
		return false
	}
	au.acted[key] = now
	return true
}

func (au *Auto) unclaim(uid, rule string) {
	au.mu.Lock()
	defer au.mu.Unlock()
	delete(au.acted, uid+"\x00"+rule)
}

// Wait blocks until every action started so far has finished (shutdown,
// tests).
func (au *Auto) Wait() { au.wg.Wait() }
