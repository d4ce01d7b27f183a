package policies

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const profileRule = `
rules:
  - name: prod
    kind: certificate_profile
    when: agent.labels["env"] == "prod"
    profile: %s
`

func writePolicy(t *testing.T, dir, name, body string) {
	t.Helper()
	// Write then rename, as editors and config management do.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func profileOf(s *Source) string {
	r := s.Current().Profile(Agent{Labels: map[string]string{"env": "prod"}}, Cert{}, now)
	if r == nil {
		return ""
	}
	return r.Profile
}

type accepted struct {
	actor      string
	old, files []File
}

func newTestSource(t *testing.T, dir string, log *[]accepted) *Source {
	t.Helper()
	s, err := NewSource(context.Background(), SourceConfig{Dir: dir, Debounce: 20 * time.Millisecond,
		Check: func(s *Set) error { return s.CheckProfiles([]string{"default", "short", "long"}) },
		Accept: func(_ context.Context, actor string, old, next *Set) error {
			*log = append(*log, accepted{actor, old.Files, next.Files})
			return nil
		}}, "test:start")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A refused reload keeps the previous set, whatever the reason; an
// accepted one is announced with the file hashes, once per change.
func TestSourceReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writePolicy(t, dir, "certs.yaml", strings.ReplaceAll(profileRule, "%s", "short"))
	var log []accepted
	s := newTestSource(t, dir, &log)
	if got := profileOf(s); got != "short" {
		t.Fatalf("profile %q after start, want short", got)
	}
	if len(log) != 1 || log[0].actor != "test:start" || len(log[0].files) != 1 || log[0].files[0].Name != "certs.yaml" {
		t.Fatalf("start accepted %+v", log)
	}

	for name, body := range map[string]string{
		"syntax":          "rules: [",
		"type error":      strings.NewReplacer(`agent.labels["env"] == "prod"`, `agent.labels["env"] == 3`, "%s", "short").Replace(profileRule),
		"unknown profile": strings.ReplaceAll(profileRule, "%s", "nonesuch"),
	} {
		writePolicy(t, dir, "certs.yaml", body)
		_, changed, err := s.Reload(ctx, "test:reload")
		if !errors.Is(err, ErrRefused) || changed {
			t.Fatalf("%s: reload gave changed=%v err=%v, want refused", name, changed, err)
		}
		if !strings.Contains(err.Error(), "certs.yaml") || s.LastError() == "" {
			t.Fatalf("%s: error %q does not name the file (last error %q)", name, err, s.LastError())
		}
		if got := profileOf(s); got != "short" {
			t.Fatalf("%s: profile %q after a refused reload, want the previous short", name, got)
		}
	}
	if len(log) != 1 {
		t.Fatalf("refused sets were accepted: %+v", log)
	}

	writePolicy(t, dir, "certs.yaml", strings.ReplaceAll(profileRule, "%s", "long"))
	if _, changed, err := s.Reload(ctx, "admin:x"); err != nil || !changed {
		t.Fatalf("good reload: changed=%v err=%v", changed, err)
	}
	if got := profileOf(s); got != "long" || s.LastError() != "" {
		t.Fatalf("profile %q (last error %q) after reload, want long", got, s.LastError())
	}
	if len(log) != 2 || log[1].actor != "admin:x" || log[1].old[0].SHA256 == log[1].files[0].SHA256 {
		t.Fatalf("reload accepted %+v", log)
	}
	// The same files again are no change, and not accepted again.
	if _, changed, err := s.Reload(ctx, "admin:x"); err != nil || changed || len(log) != 2 {
		t.Fatalf("unchanged reload: changed=%v err=%v accepted=%d", changed, err, len(log))
	}

	// An Accept failure (the audit log is down) refuses the set too.
	s.cfg.Accept = func(context.Context, string, *Set, *Set) error { return errors.New("audit unavailable") }
	writePolicy(t, dir, "certs.yaml", strings.ReplaceAll(profileRule, "%s", "short"))
	if _, _, err := s.Reload(ctx, "admin:x"); err == nil || profileOf(s) != "long" {
		t.Fatalf("reload with a failing Accept: err=%v profile=%q", err, profileOf(s))
	}
}

// Watch picks a change up without a restart, and keeps the previous set
// when the file is broken.
func TestSourceWatch(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "certs.yaml", strings.ReplaceAll(profileRule, "%s", "short"))
	var log []accepted
	s := newTestSource(t, dir, &log)
	changed := make(chan *Set, 4)
	s.cfg.Changed = func(set *Set) { changed <- set }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, "test:watch") }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// The watcher may not be registered yet: write until it reacts.
	deadline := time.After(20 * time.Second)
	for profileOf(s) != "long" {
		writePolicy(t, dir, "certs.yaml", strings.ReplaceAll(profileRule, "%s", "long"))
		select {
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("the change was not picked up")
		}
	}
	if last := log[len(log)-1]; last.actor != "test:watch" {
		t.Fatalf("watch reload accepted as %q", last.actor)
	}
	writePolicy(t, dir, "certs.yaml", "rules: [")
	for s.LastError() == "" {
		select {
		case <-deadline:
			t.Fatal("the broken file was not noticed")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := profileOf(s); got != "long" {
		t.Fatalf("profile %q after a broken file, want the previous long", got)
	}
}
