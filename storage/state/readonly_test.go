package state_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/trustamp/trustamp/storage/state"
)

// snapshot names every file in dir with its size, mode and content hash.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		out[e.Name()] = fmt.Sprintf("%v %d %x", info.Mode(), len(b), sha256.Sum256(b))
	}
	return out
}

// TestReadOnlyChangesNothing opens a closed database read-only, as `audit
// verify --data` does on a copy of a data dir: it reads the rows and leaves
// the directory byte for byte as it was (no -wal, no -shm, no migration).
// Run as root, a chmod would not stop a write, so the test compares bytes.
func TestReadOnlyChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := state.Open(ctx, state.Config{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *state.Tx) error { return tx.SetMeta(ctx, "k", "v") }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before := snapshot(t, dir)
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	ro, err := state.Open(ctx, state.Config{SQLitePath: path, ReadOnly: true})
	if err != nil {
		t.Fatalf("open a read-only copy: %v", err)
	}
	err = ro.View(ctx, func(tx *state.Tx) error {
		v, err := tx.Meta(ctx, "k")
		if err == nil && v != "v" {
			err = fmt.Errorf("meta k = %q", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Update(ctx, func(tx *state.Tx) error { return tx.SetMeta(ctx, "k", "w") }); err == nil {
		t.Error("a read-only store accepted a write")
	}
	ro.Close()
	os.Chmod(path, 0o600)
	after := snapshot(t, dir)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("a read-only open changed the directory:\nbefore %v\nafter  %v", before, after)
	}
}

func TestReadOnlyEmptyOrMissing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	os.WriteFile(empty, nil, 0o600)
	if _, err := state.Open(ctx, state.Config{SQLitePath: empty, ReadOnly: true}); !errors.Is(err, state.ErrNoSchema) {
		t.Fatalf("empty file: %v, want ErrNoSchema", err)
	}
	missing := filepath.Join(dir, "missing.db")
	if _, err := state.Open(ctx, state.Config{SQLitePath: missing, ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a read-only open created the file")
	}
}
