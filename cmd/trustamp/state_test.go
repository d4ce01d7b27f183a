package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/datadir"
	"github.com/trustamp/trustamp/storage/state"
)

// copyTree copies a data dir, keeping modes.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), info.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeDigest names every file under root with its mode and content hash.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		data := []byte{}
		if !e.IsDir() {
			data, _ = os.ReadFile(p)
		}
		fmt.Fprintf(&b, "%s %v %x\n", p, info.Mode(), sha256.Sum256(data))
		return nil
	})
	return b.String()
}

// chmodTree makes every file and directory under root read-only (a-w).
func chmodTree(t *testing.T, root string, readOnly bool) {
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := e.Info()
		mode := info.Mode().Perm()
		if readOnly {
			mode &^= 0o222
		} else {
			mode |= 0o200
		}
		return os.Chmod(p, mode)
	})
}

// revokeSome writes audited entries and a checkpoint, as the running server
// does, which advances the data dir's state anchor.
func revokeSome(t *testing.T, dir string, n int) {
	t.Helper()
	ctx := context.Background()
	d, err := datadir.Open(ctx, datadir.Options{Layout: datadir.Layout{Root: dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key, err := d.AuditKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := audit.New(audit.Config{Key: key, Anchor: d})
	for i := 0; i < n; i++ {
		if err := d.Store.Update(ctx, func(tx *state.Tx) error {
			_, err := log.Append(ctx, tx, audit.Record{Actor: "admin:test", Action: "cert.revoke", Subject: fmt.Sprint(i)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := log.Checkpoint(ctx, d.Store); err != nil {
		t.Fatal(err)
	}
}

// TestServeRefusesWipedState: with the CA and keys in place, a deleted or
// emptied state.db makes serve refuse before it serves, mints a token or
// says "initialised data dir", and the message names the file and both
// recovery paths.
func TestServeRefusesWipedState(t *testing.T) {
	for name, damage := range map[string]func(db string){
		"deleted": func(db string) { os.Remove(db) },
		"emptied": func(db string) { os.Truncate(db, 0) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if _, _, err := run(t, "init", "--data", dir); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(dir, "state.db")
			damage(db)
			// Were it to start serving, the deadline stops it: a refusal
			// comes at once.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var outBuf, errBuf bytes.Buffer
			cmd := newRootCmd(&outBuf, &errBuf)
			cmd.SetArgs([]string{"serve", "--data", dir, "--opamp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"})
			err := cmd.ExecuteContext(ctx)
			out, stderr := outBuf.String(), errBuf.String()
			if err == nil {
				t.Fatal("serve started on a wiped state database")
			}
			for _, want := range []string{db, "backup", "--reinitialise-state"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not name %q", err, want)
				}
			}
			if out != "" || strings.Contains(stderr, "initialised data dir") {
				t.Fatalf("serve printed %q / %q: it initialised a new state", out, stderr)
			}
		})
	}
}

// TestAuditVerifyReadOnlyCopy: `audit verify --data` on a read-only copy of
// a data dir (chmod -R a-w; as root, byte comparison is what proves nothing
// was written) verifies it, and a copy whose database was rolled back to an
// older backup fails, naming the anchored checkpoint.
func TestAuditVerifyReadOnlyCopy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "state.db")
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	revokeSome(t, dir, 3)

	verify := func(t *testing.T, root string) (string, error) {
		t.Helper()
		chmodTree(t, root, true)
		t.Cleanup(func() { chmodTree(t, root, false) })
		before := treeDigest(t, root)
		out, _, err := run(t, "audit", "verify", "--data", root)
		if after := treeDigest(t, root); after != before {
			t.Fatalf("audit verify changed the read-only copy:\nbefore\n%s\nafter\n%s", before, after)
		}
		return out, err
	}

	good := filepath.Join(t.TempDir(), "copy")
	copyTree(t, dir, good)
	out, err := verify(t, good)
	if err != nil || !strings.Contains(out, "OK") || !strings.Contains(out, "checkpoint at entry 6") {
		t.Fatalf("verify a read-only copy: %v\n%s", err, out)
	}
	verifyAsNobody(t, dir)

	rolled := filepath.Join(t.TempDir(), "rolled-back")
	copyTree(t, dir, rolled)
	if err := os.WriteFile(filepath.Join(rolled, "state.db"), backup, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = verify(t, rolled)
	if err == nil || !strings.Contains(out, "FAILED") || !strings.Contains(out, "rolled back") {
		t.Fatalf("verify a rolled-back copy: %v\n%s", err, out)
	}
}

// verifyAsNobody runs `trustamp audit verify --data` as an unprivileged user
// on a read-only copy, where a write (or creating state.db-wal) is refused
// by the kernel: the failure operators saw. Only root can switch users, and
// a non-root run of verify above already meets real permissions.
func verifyAsNobody(t *testing.T, dir string) {
	if os.Geteuid() != 0 {
		return
	}
	const nobody = 65534
	base := t.TempDir()
	for p := base; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755) // let nobody reach the copy
	}
	root := filepath.Join(base, "ro-copy")
	copyTree(t, dir, root)
	bin := filepath.Join(base, "trustamp")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(root, func(p string, _ fs.DirEntry, _ error) error { return os.Chown(p, nobody, nobody) })
	chmodTree(t, root, true)
	t.Cleanup(func() { chmodTree(t, root, false) })
	cmd := exec.Command(bin, "audit", "verify", "--data", root)
	cmd.Env = append(os.Environ(), "TRUSTAMP_TEST_MAIN=1", "HOME="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("audit verify as an unprivileged user on a read-only copy: %v\n%s", err, out)
	}
}

// TestServeReinitialiseFlagIsDeliberate: the flag reaches Init, and on a
// database that matches its anchor it is refused instead of being a
// standing "accept anything" setting.
func TestServeReinitialiseFlagIsDeliberate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := run(t, "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"serve", "--data", dir, "--reinitialise-state", "--opamp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"})
	if err := cmd.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "nothing to reinitialise") {
		t.Fatalf("serve --reinitialise-state on a matching database: %v", err)
	}
}
