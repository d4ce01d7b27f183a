package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/storage/state"
)

// fixedClock returns a clock that advances one second per call from a fixed
// start, so entries have distinct, predictable times.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openSQLite(t testing.TB) (*state.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := state.Open(context.Background(), state.Config{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func appendN(t testing.TB, l *Log, s *state.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		err := s.Update(ctx, func(tx *state.Tx) error {
			_, err := l.Append(ctx, tx, Record{
				Actor: "admin:test", Action: "cert.issue", Subject: fmt.Sprintf("agent-%d", i),
				Details: map[string]any{"serial": fmt.Sprintf("%04x", i), "note": "<&>"},
			})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestHashMatchesSpec recomputes an entry's hash from the package comment's
// specification by hand, so the code cannot drift from what auditors are told.
func TestHashMatchesSpec(t *testing.T) {
	prev := bytes.Repeat([]byte{0xab}, 32)
	e := Entry{
		Seq:      7,
		Time:     time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.FixedZone("x", 3600)),
		Actor:    "admin:ops",
		Action:   "cert.revoke",
		Subject:  "0190c1a2-0000-7000-8000-000000000001",
		Details:  json.RawMessage(`{ "reason": "keyCompromise", "a": [1, 2.50], "html": "<b>&" }`),
		PrevHash: prev,
	}
	canon := `[7,"2026-01-02T02:04:05.600000Z","admin:ops","cert.revoke","0190c1a2-0000-7000-8000-000000000001",` +
		`{"a":[1,2.50],"html":"<b>&","reason":"keyCompromise"}]`
	want := sha256.Sum256(append([]byte(canon), prev...))
	got, err := ComputeHash(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("hash %x, spec says %x", got, want)
	}
}

func TestAppendLinksChain(t *testing.T) {
	s, _ := openSQLite(t)
	l := New(Config{Clock: fixedClock(), Key: newKey(t)})
	appendN(t, l, s, 3)
	var rows []state.AuditRow
	s.View(context.Background(), func(tx *state.Tx) error {
		return tx.ScanAudit(context.Background(), state.AuditFilter{}, func(r state.AuditRow) error {
			rows = append(rows, r)
			return nil
		})
	})
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	if len(rows[0].PrevHash) != 0 || !bytes.Equal(rows[1].PrevHash, rows[0].Hash) || !bytes.Equal(rows[2].PrevHash, rows[1].Hash) {
		t.Fatal("entries do not link")
	}
	if rows[0].Details != `{"note":"<&>","serial":"0000"}` {
		t.Fatalf("details not canonical: %s", rows[0].Details)
	}
}

func TestAppendRejects(t *testing.T) {
	s, _ := openSQLite(t)
	l := New(Config{})
	ctx := context.Background()
	for name, r := range map[string]Record{
		"no actor":       {Action: "x"},
		"no action":      {Actor: "system"},
		"details a list": {Actor: "system", Action: "x", Details: []int{1}},
		"details a chan": {Actor: "system", Action: "x", Details: make(chan int)},
	} {
		err := s.Update(ctx, func(tx *state.Tx) error { _, err := l.Append(ctx, tx, r); return err })
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAppendRollsBackWithCaller shows the audit entry lives and dies with the
// caller's transaction.
func TestAppendRollsBackWithCaller(t *testing.T) {
	s, _ := openSQLite(t)
	l := New(Config{})
	ctx := context.Background()
	boom := errors.New("trust change failed")
	err := s.Update(ctx, func(tx *state.Tx) error {
		if _, err := l.Append(ctx, tx, Record{Actor: "system", Action: "cert.issue"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	rep, err := VerifyStore(ctx, s, nil)
	if err != nil || rep.Entries != 0 {
		t.Fatalf("entries after rollback: %d, %v", rep.Entries, err)
	}
}

func TestConcurrentAppendsKeepChainLinear(t *testing.T) {
	s, _ := openSQLite(t)
	key := newKey(t)
	l := New(Config{Key: key})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.Update(ctx, func(tx *state.Tx) error {
				_, err := l.Append(ctx, tx, Record{Actor: "system", Action: "test", Subject: fmt.Sprint(i)})
				return err
			})
			if err != nil {
				t.Error(err)
			}
			if i%5 == 0 {
				if _, _, err := l.Checkpoint(ctx, s); err != nil {
					t.Error(err)
				}
			}
		}(i)
	}
	wg.Wait()
	rep, err := VerifyStore(ctx, s, key.Public().(ed25519.PublicKey))
	if err != nil || rep.Entries != 20 {
		t.Fatalf("verify after concurrent appends: %+v, %v", rep, err)
	}
}

func TestCheckpointOnlyWhenHeadMoves(t *testing.T) {
	s, _ := openSQLite(t)
	l := New(Config{Clock: fixedClock(), Key: newKey(t)})
	ctx := context.Background()
	if _, ok, err := l.Checkpoint(ctx, s); err != nil || ok {
		t.Fatalf("checkpoint of empty chain: wrote=%v err=%v", ok, err)
	}
	appendN(t, l, s, 2)
	cp, ok, err := l.Checkpoint(ctx, s)
	if err != nil || !ok || cp.Seq != 2 {
		t.Fatalf("checkpoint: %+v wrote=%v err=%v", cp, ok, err)
	}
	if _, ok, _ := l.Checkpoint(ctx, s); ok {
		t.Fatal("checkpoint written with no new entries")
	}
	if _, _, err := New(Config{}).Checkpoint(ctx, s); err == nil {
		t.Fatal("checkpoint without a key succeeded")
	}
}

func TestRunCheckpointsTicksAndFinalises(t *testing.T) {
	s, _ := openSQLite(t)
	key := newKey(t)
	l := New(Config{Clock: fixedClock(), Key: key})
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	done := make(chan error)
	go func() { done <- l.RunCheckpoints(ctx, s, time.Hour, tick) }()

	appendN(t, l, s, 1)
	tick <- time.Time{}
	appendN(t, l, s, 1) // after the tick: only the final checkpoint covers it
	tick <- time.Time{} // returns once the first tick is processed...
	appendN(t, l, s, 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyStore(context.Background(), s, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastCheckpointSeq != 3 || rep.Checkpoints < 2 {
		t.Fatalf("report %+v: want the final checkpoint at 3 and at least 2 checkpoints", rep)
	}
}

// tamperCase alters the database behind the server's back; verify must name
// the entry (or checkpoint) where the damage is.
type tamperCase struct {
	name       string
	sql        []string
	wantSeq    int64
	checkpoint bool
	wantReason string
}

var tamperCases = []tamperCase{
	{"edit subject", []string{"UPDATE audit_entries SET subject = 'someone-else' WHERE seq = 3"}, 3, false, "hash mismatch"},
	{"edit details", []string{`UPDATE audit_entries SET details = '{"serial":"ffff"}' WHERE seq = 2`}, 2, false, "hash mismatch"},
	{"delete middle", []string{"DELETE FROM audit_entries WHERE seq = 4"}, 4, false, "missing"},
	{"delete tail past checkpoint", []string{"DELETE FROM audit_entries WHERE seq >= 5"}, 5, true, "entries were removed"},
	{"forge checkpoint", []string{"UPDATE audit_checkpoints SET head_hash = head_hash || head_hash WHERE seq = 5"}, 5, true, "signature"},
	{"delete first", []string{"DELETE FROM audit_entries WHERE seq = 1"}, 1, false, "missing"},
}

func runTamper(t *testing.T, open func(t *testing.T) (*state.Store, *sql.DB)) {
	for _, tc := range tamperCases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, raw := open(t)
			key := newKey(t)
			l := New(Config{Clock: fixedClock(), Key: key})
			appendN(t, l, s, 5)
			if _, _, err := l.Checkpoint(ctx, s); err != nil {
				t.Fatal(err)
			}
			appendN(t, l, s, 2) // 6 and 7 after the checkpoint
			pub := key.Public().(ed25519.PublicKey)
			if _, err := VerifyStore(ctx, s, pub); err != nil {
				t.Fatalf("untampered log fails: %v", err)
			}
			for _, q := range tc.sql {
				if _, err := raw.ExecContext(ctx, q); err != nil {
					t.Fatalf("tamper %q: %v", q, err)
				}
			}
			_, err := VerifyStore(ctx, s, pub)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("verify after %s: %v, want a VerifyError", tc.name, err)
			}
			if ve.Seq != tc.wantSeq || ve.Checkpoint != tc.checkpoint || !strings.Contains(ve.Reason, tc.wantReason) {
				t.Fatalf("verify named %+v, want seq %d checkpoint=%v reason ~%q", ve, tc.wantSeq, tc.checkpoint, tc.wantReason)
			}
		})
	}
}

func TestTamperDetectedSQLite(t *testing.T) {
	runTamper(t, func(t *testing.T) (*state.Store, *sql.DB) {
		s, path := openSQLite(t)
		raw, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		return s, raw
	})
}

func TestTamperDetectedPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	runTamper(t, func(t *testing.T) (*state.Store, *sql.DB) {
		dsn := pg.NewDatabase(t)
		s, err := state.Open(context.Background(), state.Config{Driver: "postgres", PostgresDSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		raw, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		return s, raw
	})
}

// TestRewrittenHistoryNeedsTheKey: an attacker who recomputes every hash after
// editing an entry passes the chain check; only the signed checkpoint catches
// it. This is why checkpoints exist.
func TestRewrittenHistoryNeedsTheKey(t *testing.T) {
	ctx := context.Background()
	s, path := openSQLite(t)
	key := newKey(t)
	l := New(Config{Clock: fixedClock(), Key: key})
	appendN(t, l, s, 4)
	if _, _, err := l.Checkpoint(ctx, s); err != nil {
		t.Fatal(err)
	}
	raw, _ := sql.Open("sqlite", path)
	defer raw.Close()
	rewriteFrom(t, raw, 2, "forged")
	if _, err := VerifyStore(ctx, s, nil); err != nil {
		t.Fatalf("precondition: a consistent rewrite should pass the chain-only check: %v", err)
	}
	_, err := VerifyStore(ctx, s, key.Public().(ed25519.PublicKey))
	var ve *VerifyError
	if !errors.As(err, &ve) || !ve.Checkpoint || ve.Seq != 4 || !strings.Contains(ve.Reason, "signature") {
		t.Fatalf("rewrite not caught by the checkpoint: %v", err)
	}
}

// rewriteFrom changes subject from seq on and recomputes every hash, as an
// attacker with database access but without the audit key would.
func rewriteFrom(t *testing.T, raw *sql.DB, from int64, subject string) {
	t.Helper()
	rows, err := raw.Query("SELECT seq, at_us, actor, action, subject, details, prev_hash FROM audit_entries ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for rows.Next() {
		var (
			e  Entry
			at int64
			d  string
		)
		rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Subject, &d, (*[]byte)(&e.PrevHash))
		e.Time, e.Details = time.UnixMicro(at).UTC(), json.RawMessage(d)
		es = append(es, e)
	}
	rows.Close()
	var prev []byte
	for _, e := range es {
		if e.Seq >= from {
			e.Subject = subject
			e.PrevHash = prev
			h, _ := ComputeHash(e)
			if _, err := raw.Exec("UPDATE audit_entries SET subject = ?, prev_hash = ?, hash = ? WHERE seq = ?", e.Subject, prev, h, e.Seq); err != nil {
				t.Fatal(err)
			}
			// The attacker also moves the checkpoint's head hash; only its
			// signature can then give the rewrite away.
			if _, err := raw.Exec("UPDATE audit_checkpoints SET head_hash = ? WHERE seq = ?", h, e.Seq); err != nil {
				t.Fatal(err)
			}
			prev = h
			continue
		}
		prev, _ = ComputeHash(e)
	}
}

func TestExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openSQLite(t)
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	l := New(Config{Clock: fixedClock(), Key: key})
	appendN(t, l, s, 3)
	l.Checkpoint(ctx, s)
	appendN(t, l, s, 3)
	l.Checkpoint(ctx, s)

	var buf bytes.Buffer
	n, err := Export(ctx, &buf, s, ExportOptions{PublicKey: pub})
	if err != nil || n != 6 {
		t.Fatalf("export: %d entries, %v", n, err)
	}
	rep, embedded, err := VerifyExport(bytes.NewReader(buf.Bytes()), pub)
	if err != nil || embedded != nil || rep.Entries != 6 || rep.Checkpoints != 2 || !rep.SignaturesChecked {
		t.Fatalf("verify export: %+v embedded=%v err=%v", rep, embedded, err)
	}
	// Without an independent key, the header's key is used and reported.
	if _, embedded, err := VerifyExport(bytes.NewReader(buf.Bytes()), nil); err != nil || embedded == nil || embedded.KeyID != KeyID(pub) {
		t.Fatalf("verify with embedded key: %v %v", embedded, err)
	}
	// A different key fails on the first checkpoint.
	other := newKey(t).Public().(ed25519.PublicKey)
	if _, _, err := VerifyExport(bytes.NewReader(buf.Bytes()), other); err == nil {
		t.Fatal("export verified under the wrong key")
	}
	// Editing one line of the export is caught and named.
	lines := strings.Split(buf.String(), "\n")
	for i, line := range lines {
		if strings.Contains(line, `"seq":4,`) && strings.Contains(line, `"type":"entry"`) {
			lines[i] = strings.Replace(line, "agent-0", "agent-9", 1)
		}
	}
	_, _, err = VerifyExport(strings.NewReader(strings.Join(lines, "\n")), pub)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != 4 {
		t.Fatalf("edited export: %v, want entry 4 named", err)
	}
}

func TestExportSinceAndCSV(t *testing.T) {
	ctx := context.Background()
	s, _ := openSQLite(t)
	key := newKey(t)
	clock := fixedClock()
	l := New(Config{Clock: clock, Key: key})
	appendN(t, l, s, 2)
	l.Checkpoint(ctx, s)
	since := clock()
	appendN(t, l, s, 3)
	l.Checkpoint(ctx, s)

	var buf bytes.Buffer
	n, err := Export(ctx, &buf, s, ExportOptions{Since: since, PublicKey: key.Public().(ed25519.PublicKey)})
	if err != nil || n != 3 {
		t.Fatalf("export since: %d, %v; want 3", n, err)
	}
	rep, _, err := VerifyExport(&buf, key.Public().(ed25519.PublicKey))
	if err != nil || rep.FirstSeq != 3 || rep.Checkpoints != 1 {
		t.Fatalf("partial export: %+v %v", rep, err)
	}
	buf.Reset()
	if n, err := Export(ctx, &buf, s, ExportOptions{Format: "csv"}); err != nil || n != 5 {
		t.Fatalf("csv: %d %v", n, err)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 6 {
		t.Fatalf("csv has %d lines, want header + 5", lines)
	}
	if _, err := Export(ctx, &buf, s, ExportOptions{Format: "xml"}); err == nil {
		t.Fatal("unknown format accepted")
	}
}

func TestVerifyExportRejectsMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"empty":           "",
		"no header":       `{"type":"entry","seq":1}`,
		"wrong format":    `{"type":"header","format":"other/v9"}`,
		"not json":        "{\"type\":\"header\",\"format\":\"trustamp-audit/v1\"}\nnot json",
		"unknown type":    "{\"type\":\"header\",\"format\":\"trustamp-audit/v1\"}\n{\"type\":\"mystery\"}",
		"late checkpoint": "{\"type\":\"header\",\"format\":\"trustamp-audit/v1\"}\n" + entryLine(t) + "\n{\"type\":\"checkpoint\",\"seq\":1}",
	} {
		if _, _, err := VerifyExport(strings.NewReader(in), nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func entryLine(t *testing.T) string {
	e := Entry{Seq: 1, Time: time.Unix(0, 0).UTC(), Actor: "system", Action: "x", Details: json.RawMessage(`{}`)}
	e.Hash, _ = ComputeHash(e)
	b, err := json.Marshal(exportEntry{Type: "entry", Entry: e})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkAuditAppend measures one audited write: a SQLite transaction that
// appends one entry (head lookup, hash, insert, commit).
func BenchmarkAuditAppend(b *testing.B) {
	s, _ := openSQLite(b)
	l := New(Config{})
	ctx := context.Background()
	details := map[string]any{"serial": "0a1b2c3d4e5f", "not_after": "2026-11-22T10:00:00Z", "profile": "default"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := s.Update(ctx, func(tx *state.Tx) error {
			_, err := l.Append(ctx, tx, Record{Actor: "system", Action: "cert.issue", Subject: "0190c1a2-0000-7000-8000-000000000001", Details: details})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuditAppendBatch100 appends 100 entries per transaction: the
// per-entry cost once the commit is amortised.
func BenchmarkAuditAppendBatch100(b *testing.B) {
	s, _ := openSQLite(b)
	l := New(Config{})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		err := s.Update(ctx, func(tx *state.Tx) error {
			for j := 0; j < 100 && i+j < b.N; j++ {
				if _, err := l.Append(ctx, tx, Record{Actor: "system", Action: "cert.issue", Subject: "x"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
