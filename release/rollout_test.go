package release

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

func testCatalog(pins []state.Pin, rels ...state.Release) *catalog { return newCatalog(pins, rels, 0) }

func rel(version string, st state.ReleaseState) state.Release {
	return state.Release{Type: "otelcol", Version: version, Platform: "linux/amd64", SHA256: "sha-" + version, State: st}
}

func TestDecide(t *testing.T) {
	agent := Agent{UID: "a", Type: "otelcol", Platform: "linux/amd64", Version: "1.1.0", Labels: map[string]string{"region": "eu", "env": "prod"}}
	pin := func(sel, v string) state.Pin { return state.Pin{Type: "otelcol", Selector: sel, Version: v} }
	tests := []struct {
		name      string
		pins      []state.Pin
		rels      []state.Release
		agent     Agent
		prior     *state.AgentPackage
		want      string // version offered, "" for nothing
		downgrade bool
		rule      string // substring of the rule
	}{
		{name: "nothing pinned", rels: []state.Release{rel("1.2.0", state.ReleaseActive)}, agent: agent},
		{name: "default channel", pins: []state.Pin{pin("", "1.2.0")}, rels: []state.Release{rel("1.2.0", state.ReleaseActive)},
			agent: agent, want: "1.2.0", rule: "pin otelcol@1.2.0"},
		{name: "most specific pin wins", agent: agent, want: "1.3.0", rule: "env=prod,region=eu",
			pins: []state.Pin{pin("", "1.2.0"), pin("region=eu", "1.2.1"), pin("env=prod,region=eu", "1.3.0"), pin("region=us", "1.4.0")},
			rels: []state.Release{rel("1.2.0", state.ReleaseActive), rel("1.2.1", state.ReleaseActive), rel("1.3.0", state.ReleaseActive), rel("1.4.0", state.ReleaseActive)}},
		{name: "selector not matching falls to default", agent: agent, want: "1.2.0",
			pins: []state.Pin{pin("", "1.2.0"), pin("region=us", "1.4.0")},
			rels: []state.Release{rel("1.2.0", state.ReleaseActive), rel("1.4.0", state.ReleaseActive)}},
		{name: "no build for the platform", pins: []state.Pin{pin("", "1.2.0")}, agent: agent, rule: "no build",
			rels: []state.Release{{Type: "otelcol", Version: "1.2.0", Platform: "linux/arm64", State: state.ReleaseActive}}},
		{name: "pinned release yanked: previous active release", agent: Agent{Type: "otelcol", Platform: "linux/amd64", Version: "1.0.0"},
			pins: []state.Pin{pin("", "1.3.0")}, want: "1.2.0", rule: "previous release",
			rels: []state.Release{rel("1.0.0", state.ReleaseActive), rel("1.2.0", state.ReleaseActive), rel("1.2.5", state.ReleaseQuarantined), rel("1.3.0", state.ReleaseYanked), rel("1.4.0", state.ReleaseActive)}},
		{name: "pinned release yanked, nothing earlier", agent: agent, pins: []state.Pin{pin("", "1.3.0")}, rule: "no earlier",
			rels: []state.Release{rel("1.3.0", state.ReleaseYanked), rel("1.4.0", state.ReleaseActive)}},
		{name: "explicit pin lower is a marked downgrade", agent: agent, pins: []state.Pin{pin("", "1.0.0")}, want: "1.0.0", downgrade: true,
			rels: []state.Release{rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseActive)}},
		{name: "fallback below a good running version is refused", agent: Agent{Type: "otelcol", Platform: "linux/amd64", Version: "1.2.0"}, pins: []state.Pin{pin("", "1.3.0")}, rule: "refused",
			rels: []state.Release{rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseActive), rel("1.3.0", state.ReleaseYanked)}},
		{name: "fallback below a yanked running version is a downgrade", agent: agent, pins: []state.Pin{pin("", "1.1.0")},
			want: "1.0.0", downgrade: true, rels: []state.Release{rel("1.0.0", state.ReleaseActive), rel("1.1.0", state.ReleaseYanked)}},
		{name: "halted: no new offers", agent: agent, pins: []state.Pin{pin("", "1.2.0")}, rule: "halted",
			rels: []state.Release{rel("1.2.0", state.ReleaseHalted)}},
		{name: "halted: who has it keeps it", agent: agent, pins: []state.Pin{pin("", "1.2.0")}, want: "1.2.0",
			prior: &state.AgentPackage{SHA256: "sha-1.2.0"}, rels: []state.Release{rel("1.2.0", state.ReleaseHalted)}},
		{name: "v-prefixed versions compare", agent: Agent{Type: "otelcol", Platform: "linux/amd64", Version: "v1.10.0"},
			pins: []state.Pin{pin("", "1.9.0")}, want: "1.9.0", downgrade: true, rels: []state.Release{rel("1.9.0", state.ReleaseActive)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok := testCatalog(tt.pins, tt.rels...).decide(tt.agent, tt.prior, nil, time.Time{})
			got := ""
			if ok {
				got = o.Release.Version
			}
			if got != tt.want || o.Downgrade != tt.downgrade || !strings.Contains(o.Rule, tt.rule) {
				t.Fatalf("offered %q (downgrade %v, rule %q), want %q (downgrade %v, rule ~%q)", got, o.Downgrade, o.Rule, tt.want, tt.downgrade, tt.rule)
			}
			if o.Downgrade && o.From != tt.agent.Version {
				t.Fatalf("downgrade from %q, want %q", o.From, tt.agent.Version)
			}
		})
	}
}

func TestSelectors(t *testing.T) {
	sel, err := canonicalSelector(map[string]string{"region": "eu", "env": "prod"})
	if err != nil || sel != "env=prod,region=eu" {
		t.Fatalf("canonical %q %v", sel, err)
	}
	if _, err := canonicalSelector(map[string]string{"a,b": "c"}); err == nil {
		t.Fatal("a key with a comma was accepted")
	}
	if !selectorMatches("env=prod", map[string]string{"env": "prod", "x": "y"}) || selectorMatches("env=prod", map[string]string{"env": "dev"}) ||
		selectorMatches("env=prod,region=eu", map[string]string{"env": "prod"}) || !selectorMatches("", nil) {
		t.Fatal("selector matching")
	}
}

// A failure past the threshold halts the release on every platform, once.
func TestReportHaltsRollout(t *testing.T) {
	ctx := context.Background()
	s, store := newService(t, fsBlobs(t))
	s.cfg.HaltMinFailures, s.cfg.HaltFailureRate = 2, 0.5
	k := newKey(t)
	if _, err := s.AddPublisher(ctx, "rel", k.pubPEM, nil, "admin:t"); err != nil {
		t.Fatal(err)
	}
	content := []byte("build")
	for _, platform := range []string{"linux/amd64", "linux/arm64"} {
		if _, err := s.Publish(ctx, Publish{Type: "otelcol", Version: "2.0.0", Platform: platform, Bundle: k.sign(t, content), Actor: "admin:t"}, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Promote(ctx, "otelcol", "2.0.0", nil, "admin:t"); err != nil {
		t.Fatal(err)
	}
	rows := map[string]*state.AgentPackage{}
	for _, uid := range []string{"a1", "a2", "a3", "a4"} {
		a := Agent{UID: uid, Type: "otelcol", Platform: "linux/amd64", Host: "h:1"}
		_, row, ok, err := s.Offer(ctx, a, nil)
		if err != nil || !ok || row.State != state.PackageOffered {
			t.Fatalf("offer to %s: %v %v %+v", uid, ok, err, row)
		}
		rows[uid] = row
	}
	fail := func(uid string) {
		t.Helper()
		row, err := s.Report(ctx, Agent{UID: uid, Type: "otelcol"}, rows[uid], Status{Version: "2.0.0", State: state.PackageFailed, Message: "bad signature"})
		if err != nil {
			t.Fatal(err)
		}
		rows[uid] = row
	}
	states := func() []state.ReleaseState {
		rs, _ := s.List(ctx, state.ReleaseFilter{Type: "otelcol"})
		var out []state.ReleaseState
		for _, r := range rs {
			out = append(out, r.State)
		}
		return out
	}
	fail("a1")
	if st := states(); st[0] != state.ReleaseActive {
		t.Fatalf("halted after 1 of 4 failures: %v", st)
	}
	// A status about another version does not count.
	if row, _ := s.Report(ctx, Agent{UID: "a2"}, rows["a2"], Status{Version: "1.0.0", State: state.PackageFailed}); row.State != state.PackageOffered {
		t.Fatalf("status about another version recorded: %+v", row)
	}
	fail("a2")
	if st := states(); st[0] != state.ReleaseHalted || st[1] != state.ReleaseHalted {
		t.Fatalf("after 2 of 4 failures states %v, want both platforms halted", st)
	}
	// A new agent is not offered it; one that had it keeps it.
	if _, _, ok, _ := s.Offer(ctx, Agent{UID: "a5", Type: "otelcol", Platform: "linux/amd64", Host: "h:1"}, nil); ok {
		t.Fatal("halted release offered to a new agent")
	}
	if _, _, ok, _ := s.Offer(ctx, Agent{UID: "a3", Type: "otelcol", Platform: "linux/amd64", Host: "h:1"}, rows["a3"]); !ok {
		t.Fatal("agent already given the halted release lost its offer")
	}
	fail("a3") // no second halt entry
	var halts int
	store.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			if r.Action == "release.halt" {
				halts++
			}
			return nil
		})
	})
	if halts != 2 {
		t.Fatalf("%d release.halt audit entries, want 2 (one per platform, once)", halts)
	}
	ro, err := s.Rollout(ctx, "otelcol", "2.0.0")
	if err != nil || ro.Counts[state.PackageFailed] != 3 || ro.Counts[state.PackageOffered] != 1 || len(ro.Failures) != 3 {
		t.Fatalf("rollout %+v %v", ro, err)
	}
}

func TestPromoteRefusesMissingOrWithdrawn(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, fsBlobs(t))
	if _, err := s.Promote(ctx, "otelcol", "9.9.9", nil, "admin:t"); err == nil || !strings.Contains(err.Error(), "no active release") {
		t.Fatalf("promote of a missing release: %v", err)
	}
	if _, err := s.Promote(ctx, "otelcol", "1.0.0", map[string]string{"a=b": "c"}, "admin:t"); err == nil {
		t.Fatal("bad selector accepted")
	}
}
