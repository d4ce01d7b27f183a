package state

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestPutAgentBackstop: whatever path writes an agent row, a JSON field
// nested past MaxAgentJSONDepth or larger than MaxAgentJSONBytes is refused
// with ErrTooLarge and the stored row is unchanged, so every row stays
// encodable by the listings.
func TestPutAgentBackstop(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{SQLitePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ok := Agent{UID: "a1", Description: []byte(`{"identifying_attributes":[{"key":"k","value":{"string_value":"[{not nesting"}}]}`)}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutAgent(ctx, ok) }); err != nil {
		t.Fatalf("normal description: %v", err)
	}
	deep := strings.Repeat("[", MaxAgentJSONDepth+1) + strings.Repeat("]", MaxAgentJSONDepth+1)
	for name, a := range map[string]Agent{
		"deep description": {UID: "a1", Description: []byte(deep)},
		"deep health":      {UID: "a1", Health: []byte(deep)},
		"huge statuses":    {UID: "a1", PackageStatuses: []byte(`"` + strings.Repeat("x", MaxAgentJSONBytes) + `"`)},
	} {
		err := s.Update(ctx, func(tx *Tx) error { return tx.PutAgent(ctx, a) })
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", name, err)
		}
	}
	var got Agent
	s.View(ctx, func(tx *Tx) (err error) { got, err = tx.Agent(ctx, "a1"); return err })
	if string(got.Description) != string(ok.Description) {
		t.Fatalf("refused writes changed the row: %s", got.Description)
	}
}
