package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PackagePlaceholder in the supervised command's arguments is replaced by
// the directory of the installed version: `-- {pkg}/otelcol --config ...`.
const PackagePlaceholder = "{pkg}"

// supervisor runs the agent binary of the installed version, restarts it
// when it dies, and switches versions with a health window: a new version
// that exits within the window is rolled back.
type supervisor struct {
	command []string
	pkgs    *diskPackages
	health  time.Duration
	env     []string
	stdout  io.Writer
	stderr  io.Writer
	logf    func(format string, args ...any)

	mu      sync.Mutex
	running *process
	closed  bool
	backoff time.Duration
	restart *time.Timer
}

type process struct {
	cmd     *exec.Cmd
	version string
	started time.Time
	done    chan struct{}
	err     error
	trial   bool // an install is watching it: no automatic restart
}

const (
	stopGrace      = 5 * time.Second
	restartMin     = time.Second
	restartMax     = 30 * time.Second
	stableRunReset = time.Minute
)

// usesPackage reports whether the command runs something from the package.
func (s *supervisor) usesPackage() bool {
	for _, a := range s.command {
		if strings.Contains(a, PackagePlaceholder) {
			return true
		}
	}
	return false
}

// launch starts the command for version; s.mu held.
func (s *supervisor) launch(version string) (*process, error) {
	if len(s.command) == 0 {
		return nil, nil
	}
	dir := ""
	if version != "" {
		dir = s.pkgs.versionDir(version)
	} else if s.usesPackage() {
		return nil, nil // nothing installed yet to run
	}
	args := make([]string, len(s.command))
	for i, a := range s.command {
		args[i] = strings.ReplaceAll(a, PackagePlaceholder, dir)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Env = append(cmd.Env, "TRUSTAMP_PACKAGE_VERSION="+version, "TRUSTAMP_PACKAGE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	// Its own process group: a signal to the supervisor's terminal does
	// not bypass the supervisor's stop sequence.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	p := &process{cmd: cmd, version: version, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		s.exited(p)
	}()
	s.logf("started %s (version %s, pid %d)", args[0], orNone(version), cmd.Process.Pid)
	return p, nil
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// exited restarts the command after an unexpected exit, with backoff.
func (s *supervisor) exited(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running != p || s.closed || p.trial {
		return
	}
	s.running = nil
	if time.Since(p.started) > stableRunReset {
		s.backoff = 0
	}
	s.backoff = min(max(2*s.backoff, restartMin), restartMax)
	s.logf("version %s exited (%v); restarting in %s", orNone(p.version), p.err, s.backoff)
	s.restart = time.AfterFunc(s.backoff, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.running != nil || s.closed {
			return
		}
		v, _ := s.pkgs.Current()
		np, err := s.launch(v)
		if err != nil {
			s.logf("restart: %v", err)
			return
		}
		s.running = np
	})
}

// stopProcess asks p to stop (SIGTERM to its group), then kills it.
func stopProcess(p *process) {
	if p == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// start runs the installed version, first finishing an install a crash
// interrupted: if the new version is in force it gets its health window
// again and is rolled back if it fails it.
func (s *supervisor) start(ctx context.Context) error {
	if t, ok := s.pkgs.pendingTrial(); ok {
		cur, _ := s.pkgs.Current()
		if cur != t.To {
			s.logf("an install of %s was interrupted before it switched; staying on %s", t.To, orNone(cur))
			if err := s.pkgs.endTrial(); err != nil {
				return err
			}
		} else {
			s.logf("an install of %s was interrupted; checking it again", t.To)
			if err := s.prove(ctx, t); err != nil {
				s.logf("%v", err)
			}
			return nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, _ := s.pkgs.Current()
	p, err := s.launch(v)
	if err != nil {
		return err
	}
	s.running = p
	return nil
}

// install switches to version and keeps it only if the command stays up
// for the health window.
func (s *supervisor) install(ctx context.Context, version string) error {
	from, _ := s.pkgs.Current()
	t := trial{From: from, To: version}
	// The trial is on disk before the switch: a crash from here on is
	// finished (or rolled back) by the next start.
	if err := s.pkgs.startTrial(t); err != nil {
		return err
	}
	if err := s.pkgs.switchTo(version); err != nil {
		s.pkgs.endTrial()
		return fmt.Errorf("switch to %s: %w", version, err)
	}
	return s.prove(ctx, t)
}

// prove runs t.To for the health window; on failure it switches back to
// t.From and runs that again.
func (s *supervisor) prove(ctx context.Context, t trial) error {
	s.mu.Lock()
	if s.restart != nil {
		s.restart.Stop()
	}
	old := s.running
	s.running = nil
	s.mu.Unlock()
	stopProcess(old)

	s.mu.Lock()
	p, err := s.launch(t.To)
	if p != nil {
		p.trial = true
	}
	s.running = p
	s.mu.Unlock()
	if err == nil && p != nil {
		select {
		case <-p.done:
			err = fmt.Errorf("exited within the %s health window: %v", s.health, p.err)
		case <-time.After(s.health):
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		s.mu.Lock()
		if p != nil {
			p.trial = false
		}
		s.mu.Unlock()
		s.logf("version %s installed and running", t.To)
		return s.pkgs.endTrial()
	}
	// Roll back.
	s.mu.Lock()
	s.running = nil
	s.mu.Unlock()
	stopProcess(p)
	if serr := s.pkgs.switchTo(t.From); serr != nil {
		return fmt.Errorf("version %s failed (%v) and switching back to %s failed: %w", t.To, err, orNone(t.From), serr)
	}
	s.mu.Lock()
	back, lerr := s.launch(t.From)
	s.running = back
	s.mu.Unlock()
	if lerr != nil {
		s.logf("restart %s after rollback: %v", t.From, lerr)
	}
	if eerr := s.pkgs.endTrial(); eerr != nil {
		return eerr
	}
	return fmt.Errorf("version %s rolled back to %s: %w", t.To, orNone(t.From), err)
}

// close stops the command.
func (s *supervisor) close() {
	s.mu.Lock()
	s.closed = true
	if s.restart != nil {
		s.restart.Stop()
	}
	p := s.running
	s.running = nil
	s.mu.Unlock()
	stopProcess(p)
}
