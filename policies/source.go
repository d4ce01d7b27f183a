package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Dir holds the policy files (*.yaml, *.yml). A missing directory is an
	// empty policy: no rules, the static configuration applies.
	Dir string
	// Check vets a compiled set against the rest of the server's
	// configuration (a certificate_profile naming a profile that does not
	// exist); an error refuses the set like a syntax error would.
	Check func(*Set) error
	// Limits bound the conditions' size, nesting and cost. The zero value
	// is the defaults.
	Limits Limits
	// Accept runs before a changed set goes live, with who asked; an error
	// (such as failing to audit the change) keeps the previous set. Nil
	// means nothing to do.
	Accept func(ctx context.Context, actor string, old, next *Set) error
	// Changed runs after a changed set went live (re-deciding what agents
	// are offered). Nil means nothing to do.
	Changed func(*Set)
	// Debounce is how long Watch waits for a burst of file events (an
	// editor's write-rename-chmod) to settle. Zero means 200ms.
	Debounce time.Duration
	Logger   *slog.Logger
}

// Source holds the policy set in force and replaces it when the files
// change. A reload that fails in any way (parse, type check, Check, Accept)
// leaves the previous set in force: a typo in a policy file must never
// take the running rules away.
type Source struct {
	cfg SourceConfig
	cur atomic.Pointer[Set]
	// mu serialises reloads, so two reloads never race to Accept.
	mu sync.Mutex
	// lastErr is the most recent refused reload, for `policy show`.
	lastErr atomic.Pointer[string]
}

// ErrRefused wraps every reason a policy set was refused.
var ErrRefused = errors.New("policy refused")

// NewSource loads Dir once. Unlike a reload, a set that does not load is an
// error: a server must not start on rules other than the ones written.
func NewSource(ctx context.Context, cfg SourceConfig, actor string) (*Source, error) {
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Source{cfg: cfg}
	s.cur.Store(&Set{rules: map[string][]*Rule{}})
	if _, _, err := s.Reload(ctx, actor); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is where the policy files are read from.
func (s *Source) Dir() string { return s.cfg.Dir }

// Current is the set in force. It never returns nil.
func (s *Source) Current() *Set { return s.cur.Load() }

// LastError is why the most recent reload was refused ("" when it was not).
func (s *Source) LastError() string {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Reload reads Dir again. It reports the set in force afterwards and
// whether it changed (files identical to the current ones are no change
// and are not accepted again).
func (s *Source) Reload(ctx context.Context, actor string) (*Set, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	next, err := s.load()
	if err == nil && sameFiles(old.Files, next.Files) {
		s.lastErr.Store(nil)
		return old, false, nil
	}
	if err == nil && s.cfg.Accept != nil {
		if aerr := s.cfg.Accept(ctx, actor, old, next); aerr != nil {
			err = fmt.Errorf("accept policies: %w", aerr)
		}
	}
	if err != nil {
		msg := err.Error()
		s.lastErr.Store(&msg)
		s.cfg.Logger.Error("policy reload refused; previous policies stay in force", "dir", s.cfg.Dir, "err", err)
		return old, false, err
	}
	s.cur.Store(next)
	s.lastErr.Store(nil)
	if s.cfg.Changed != nil {
		s.cfg.Changed(next)
	}
	s.cfg.Logger.Info("policies loaded", "dir", s.cfg.Dir, "files", len(next.Files), "rules", next.Len(), "actor", actor)
	return next, true, nil
}

func (s *Source) load() (*Set, error) {
	next, err := s.cfg.Limits.Load(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if s.cfg.Check != nil {
		if err := s.cfg.Check(next); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
	}
	return next, nil
}

// Watch reloads on every change in Dir until ctx ends. The directory must
// exist (the server creates it); Watch follows files created, written,
// renamed and removed in it, debounced.
func (s *Source) Watch(ctx context.Context, actor string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policies: %w", err)
	}
	defer w.Close()
	if err := w.Add(s.cfg.Dir); err != nil {
		return fmt.Errorf("watch policies in %s: %w", s.cfg.Dir, err)
	}
	var fire <-chan time.Time
	var timer *time.Timer
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !isPolicyFile(ev.Name) {
				continue
			}
			if timer != nil {
				timer.Stop()
			}
			timer = time.NewTimer(s.cfg.Debounce)
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.cfg.Logger.Warn("policy watcher", "dir", s.cfg.Dir, "err", err)
		case <-fire:
			fire = nil
			// Reload logs and keeps the old set on error.
			_, _, _ = s.Reload(ctx, actor)
		}
	}
}

func sameFiles(a, b []File) bool {
	return slices.Equal(a, b)
}
