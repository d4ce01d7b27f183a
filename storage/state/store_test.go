package state_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/storage/state/statetest"
)

func TestSQLite(t *testing.T) {
	statetest.Run(t, func(t *testing.T) (*state.Store, state.Config) {
		cfg := state.Config{Driver: "sqlite", SQLitePath: filepath.Join(t.TempDir(), "state.db")}
		s, err := state.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s, cfg
	})
}

// TestPostgres runs the same contract against a real PostgreSQL server.
func TestPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	statetest.Run(t, func(t *testing.T) (*state.Store, state.Config) {
		cfg := state.Config{Driver: "postgres", PostgresDSN: pg.NewDatabase(t)}
		s, err := state.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s, cfg
	})
}
