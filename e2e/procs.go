package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is one process the scenario started, logging to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts name with its output in logDir/<name>.log.
func startProc(logDir, name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// kill is SIGKILL to the process alone (not its children: the agent's
// supervised command must die with it on its own).
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls ok until it holds or timeout passes; the error names what
// was awaited and the last failure.
func waitFor(ctx context.Context, what string, timeout time.Duration, ok func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		done, err := ok()
		if done {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
			}
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startMinIO runs a MinIO server on a fresh directory and waits until its
// S3 API answers (its ready endpoint answers before buckets work).
func startMinIO(ctx context.Context, bin, dir, logDir string) (p *proc, endpoint, access, secret string, err error) {
	port, err := freePort()
	if err != nil {
		return nil, "", "", "", err
	}
	console, err := freePort()
	if err != nil {
		return nil, "", "", "", err
	}
	access, secret = "trustamp-demo", "demo-secret-"+fmt.Sprint(time.Now().UnixNano())
	endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	p, err = startProc(logDir, "minio", []string{"MINIO_ROOT_USER=" + access, "MINIO_ROOT_PASSWORD=" + secret,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "HOME=" + dir}, bin,
		"server", filepath.Join(dir, "data"), "--address", endpoint, "--console-address", fmt.Sprintf("127.0.0.1:%d", console), "--quiet")
	if err != nil {
		return nil, "", "", "", err
	}
	err = waitFor(ctx, "MinIO's S3 API", 60*time.Second, func() (bool, error) {
		select {
		case <-p.done:
			return false, errors.New("minio exited: " + lastLines(p.logText(), 5))
		default:
		}
		resp, err := http.Get("http://" + endpoint + "/")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusServiceUnavailable, nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, "", "", "", err
	}
	return p, endpoint, access, secret, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command to completion and returns its stdout; the error
// carries stderr.
func run(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	return runIn(ctx, "", env, bin, args...)
}

// runIn is run in directory dir ("" for the current one).
func runIn(ctx context.Context, dir string, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}
