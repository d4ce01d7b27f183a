package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// ExportFormat is the name of the JSON Lines export format, in its header.
const ExportFormat = "trustamp-audit/v1"

// Viewer runs a read-only transaction; *state.Store is one.
type Viewer interface {
	View(ctx context.Context, fn func(*state.Tx) error) error
}

// ExportOptions selects what Export writes.
type ExportOptions struct {
	// Since skips entries recorded before it. Zero exports everything.
	Since time.Time
	// Format is "jsonl" (default; verifiable) or "csv" (for spreadsheets;
	// entries only, no checkpoints).
	Format string
	// PublicKey, when set, is written into the JSONL header so the export
	// names the key that signed its checkpoints. Verification should still
	// use a key obtained independently.
	PublicKey ed25519.PublicKey
	// Now stamps the header. Zero means time.Now().
	Now time.Time
}

// Export writes the log from one consistent snapshot, streaming entries.
// It returns how many entries it wrote.
func Export(ctx context.Context, w io.Writer, store Viewer, opts ExportOptions) (int64, error) {
	var n int64
	err := store.View(ctx, func(tx *state.Tx) error {
		var err error
		switch opts.Format {
		case "", "jsonl":
			n, err = exportJSONL(ctx, w, tx, opts)
		case "csv":
			n, err = exportCSV(ctx, w, tx, opts)
		default:
			err = fmt.Errorf("unknown format %q (want jsonl or csv)", opts.Format)
		}
		return err
	})
	if err != nil {
		return n, fmt.Errorf("audit: export: %w", err)
	}
	return n, nil
}

type exportHeader struct {
	Type       string    `json:"type"`
	Format     string    `json:"format"`
	ExportedAt time.Time `json:"exported_at"`
	Since      string    `json:"since,omitempty"`
	KeyID      string    `json:"key_id,omitempty"`
	PublicKey  string    `json:"public_key,omitempty"`
}

type exportCheckpoint struct {
	Type string `json:"type"`
	Checkpoint
}

type exportEntry struct {
	Type string `json:"type"`
	Entry
}

func exportJSONL(ctx context.Context, w io.Writer, tx *state.Tx, opts ExportOptions) (int64, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	h := exportHeader{Type: "header", Format: ExportFormat, ExportedAt: now.UTC()}
	if !opts.Since.IsZero() {
		h.Since = opts.Since.UTC().Format(time.RFC3339Nano)
	}
	if opts.PublicKey != nil {
		h.KeyID = KeyID(opts.PublicKey)
		h.PublicKey = string(MarshalPublicKey(opts.PublicKey))
	}
	if err := enc.Encode(h); err != nil {
		return 0, err
	}
	// The first exported entry decides which checkpoints matter; entries are
	// streamed, so find it first.
	first := int64(0)
	errFound := errors.New("found")
	err := tx.ScanAudit(ctx, state.AuditFilter{Since: opts.Since}, func(r state.AuditRow) error {
		first = r.Seq
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return 0, err
	}
	if first == 0 {
		return 0, bw.Flush()
	}
	cps, err := tx.Checkpoints(ctx, first)
	if err != nil {
		return 0, err
	}
	for _, c := range cps {
		if err := enc.Encode(exportCheckpoint{Type: "checkpoint", Checkpoint: checkpointFromRow(c)}); err != nil {
			return 0, err
		}
	}
	var n int64
	err = tx.ScanAudit(ctx, state.AuditFilter{FromSeq: first}, func(r state.AuditRow) error {
		n++
		return enc.Encode(exportEntry{Type: "entry", Entry: fromRow(r)})
	})
	if err != nil {
		return n, err
	}
	return n, bw.Flush()
}

func exportCSV(ctx context.Context, w io.Writer, tx *state.Tx, opts ExportOptions) (int64, error) {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"seq", "time", "actor", "action", "subject", "details", "prev_hash", "hash"}); err != nil {
		return 0, err
	}
	var n int64
	err := tx.ScanAudit(ctx, state.AuditFilter{Since: opts.Since}, func(r state.AuditRow) error {
		n++
		e := fromRow(r)
		return cw.Write([]string{
			strconv.FormatInt(e.Seq, 10), e.Time.Format(TimeFormat), e.Actor, e.Action, e.Subject,
			string(e.Details), e.PrevHash.String(), e.Hash.String(),
		})
	})
	if err != nil {
		return n, err
	}
	cw.Flush()
	return n, cw.Error()
}

// VerifyStore verifies the whole chain and every checkpoint in the database,
// from one consistent snapshot.
func VerifyStore(ctx context.Context, store Viewer, pub ed25519.PublicKey) (Report, error) {
	return VerifyStoreAnchored(ctx, store, pub, nil, "")
}

// VerifyStoreAnchored is VerifyStore that also requires the chain to contain
// anchor, the latest checkpoint kept outside the database (source names
// where): a database rolled back to before it fails. A nil anchor is
// VerifyStore.
func VerifyStoreAnchored(ctx context.Context, store Viewer, pub ed25519.PublicKey, anchor *Checkpoint, source string) (Report, error) {
	v := NewVerifier(pub)
	if anchor != nil {
		if err := v.RequireAnchor(*anchor, source); err != nil {
			return Report{AnchoredSeq: anchor.Seq}, err
		}
	}
	var (
		report Report
		verr   error
	)
	err := store.View(ctx, func(tx *state.Tx) error {
		cps, err := tx.Checkpoints(ctx, 0)
		if err != nil {
			return err
		}
		for _, c := range cps {
			if err := v.AddCheckpoint(checkpointFromRow(c)); err != nil {
				verr = err
				return nil
			}
		}
		err = tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error { return v.Entry(fromRow(r)) })
		var ve *VerifyError
		if errors.As(err, &ve) {
			verr = err
			return nil
		}
		if err != nil {
			return err
		}
		report, verr = v.Finish()
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	if verr == nil && report.FirstSeq > 1 {
		// (An anchored chain that is empty fails in Finish, naming the anchor.)
		verr = &VerifyError{Seq: 1, Reason: fmt.Sprintf("missing: the chain starts at %d", report.FirstSeq)}
	}
	return report, verr
}

// ExportKey is the public key named in an export's header, for callers that
// have no independent copy. Trusting it proves only that the export is
// self-consistent, not who signed it.
type ExportKey struct {
	KeyID     string
	PublicKey ed25519.PublicKey
}

// MaxExportLine bounds one line of a JSON Lines export (one entry, with its
// details): memory while verifying is this plus the checkpoints
// (MaxCheckpoints), whatever the size of the file.
const MaxExportLine = 16 << 20

// VerifyExport verifies a JSON Lines export. With a nil pub it uses the key in
// the export's header (and says so in the returned ExportKey), since the
// alternative is not to check signatures at all. Entries are streamed: memory
// is bounded by MaxExportLine and MaxCheckpoints.
func VerifyExport(r io.Reader, pub ed25519.PublicKey) (Report, *ExportKey, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), MaxExportLine)
	var (
		v        *Verifier
		embedded *ExportKey
		line     int
	)
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &kind); err != nil {
			return Report{}, embedded, fmt.Errorf("audit: export line %d: %w", line, err)
		}
		if v == nil && kind.Type != "header" {
			return Report{}, nil, fmt.Errorf("audit: export line %d: want a %s header first, got %q", line, ExportFormat, kind.Type)
		}
		switch kind.Type {
		case "header":
			if v != nil {
				return Report{}, embedded, fmt.Errorf("audit: export line %d: second header", line)
			}
			var h exportHeader
			if err := json.Unmarshal(raw, &h); err != nil {
				return Report{}, nil, fmt.Errorf("audit: export line %d: %w", line, err)
			}
			if h.Format != ExportFormat {
				return Report{}, nil, fmt.Errorf("audit: export line %d: format %q, want %q", line, h.Format, ExportFormat)
			}
			key := pub
			if key == nil && h.PublicKey != "" {
				k, err := ParsePublicKey([]byte(h.PublicKey))
				if err != nil {
					return Report{}, nil, fmt.Errorf("audit: export line %d: %w", line, err)
				}
				key, embedded = k, &ExportKey{KeyID: KeyID(k), PublicKey: k}
			}
			v = NewVerifier(key)
		case "checkpoint":
			var c exportCheckpoint
			if err := json.Unmarshal(raw, &c); err != nil {
				return Report{}, embedded, fmt.Errorf("audit: export line %d: %w", line, err)
			}
			if err := v.AddCheckpoint(c.Checkpoint); err != nil {
				return Report{}, embedded, err
			}
		case "entry":
			var e exportEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				return Report{}, embedded, fmt.Errorf("audit: export line %d: %w", line, err)
			}
			if err := v.Entry(e.Entry); err != nil {
				return Report{}, embedded, err
			}
		default:
			return Report{}, embedded, fmt.Errorf("audit: export line %d: unknown record type %q", line, kind.Type)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Report{}, embedded, fmt.Errorf("audit: export line %d is longer than %d bytes: %w", line+1, MaxExportLine, err)
		}
		return Report{}, embedded, fmt.Errorf("audit: read export: %w", err)
	}
	if v == nil {
		return Report{}, nil, errors.New("audit: export is empty")
	}
	rep, err := v.Finish()
	return rep, embedded, err
}
