// Package testenv starts real servers (PostgreSQL, MinIO, Vault) for tests,
// on loopback, on random free ports, in throwaway directories, stopped in
// t.Cleanup. Support for a system is only claimed when a test ran against the
// real thing; fakes do not count.
//
// The binaries come from `make tools`, which installs them pinned under
// ToolsDir. When one is missing the test fails, saying so; it skips only when
// TRUSTAMP_ALLOW_SKIP=1, so CI (which always runs `make tools`) never skips
// silently.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ToolsDir is where `make tools` installs binaries: $TRUSTAMP_TOOLS_DIR, or
// $HOME/.cache/trustamp/tools. Pinned versions live in versioned
// subdirectories; bin/ holds links to the current ones.
func ToolsDir() string {
	if d := os.Getenv("TRUSTAMP_TOOLS_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "trustamp-tools")
	}
	return filepath.Join(home, ".cache", "trustamp", "tools")
}

// missing fails (or, with TRUSTAMP_ALLOW_SKIP=1, skips) a test whose real
// server is not installed.
func missing(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("testenv: %s is not installed: run `make tools` (it installs pinned binaries under %s)", what, ToolsDir())
	if os.Getenv("TRUSTAMP_ALLOW_SKIP") == "1" {
		t.Skip("SKIPPED, NOT TESTED: " + msg)
	}
	t.Fatal(msg)
}

// Tool returns the path of an installed tool binary, or ends the test.
func Tool(t testing.TB, name string) string { return tool(t, name) }

// tool returns the path of an installed tool binary, or ends the test.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), "bin", name)
	if _, err := os.Stat(p); err != nil {
		missing(t, name)
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago. Starting a
// server on it can still race with another process; start helpers retry.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// randomSecret returns n random bytes as hex, for throwaway passwords.
func randomSecret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// process is a server started for one test.
type process struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, log: new(bytes.Buffer), done: make(chan error, 1)}
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	// Own process group, so a stop reaches children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// stop asks the process to exit and kills it if it has not within 10s.
func (p *process) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitHTTPWith polls url with client until it answers 200, the process
// exits, or 60s pass.
func (p *process) waitHTTPWith(client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited before ready (%v); output:\n%s", err, p.log.String())
		case <-ctx.Done():
			return errors.New("not ready after 60s; output:\n" + p.log.String())
		case <-tick.C:
		}
	}
}

// startHTTPServer starts a server built by newCmd on a fresh port, waiting
// for health on the URL it names; it retries when the port was taken.
func startHTTPServer(t testing.TB, what string, newCmd func(port int) (*exec.Cmd, string)) int {
	port, _ := startHTTPProcess(t, what, newCmd)
	return port
}

// startHTTPSServer is startHTTPServer for a server on TLS whose
// certificate chains to root.
func startHTTPSServer(t testing.TB, what string, root *x509.Certificate, newCmd func(port int) (*exec.Cmd, string)) int {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	port, _ := startProcessWaiting(t, what, client, newCmd)
	return port
}

// startHTTPProcess is startHTTPServer that also returns the process.
func startHTTPProcess(t testing.TB, what string, newCmd func(port int) (*exec.Cmd, string)) (int, *process) {
	return startProcessWaiting(t, what, http.DefaultClient, newCmd)
}

func startProcessWaiting(t testing.TB, what string, client *http.Client, newCmd func(port int) (*exec.Cmd, string)) (int, *process) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := FreePort(t)
		cmd, healthURL := newCmd(port)
		p, err := startProcess(cmd)
		if err != nil {
			t.Fatalf("testenv: start %s: %v", what, err)
		}
		if err := p.waitHTTPWith(client, healthURL); err != nil {
			p.stop()
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		return port, p
	}
	t.Fatalf("testenv: %s did not start: %v", what, lastErr)
	return 0, nil
}
