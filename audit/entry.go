// Package audit is trustamp's tamper-evident log of trust operations. Each
// entry's hash covers its content and the previous entry's hash, so altering,
// removing or reordering any entry breaks every hash after it; periodic
// checkpoints sign the head of the chain with the server's Ed25519 audit key,
// so an attacker who rewrites the whole chain from some point on cannot
// produce matching signatures without that key.
//
// The encoding that is hashed is specified here (and in README.md) so that an
// auditor can recompute it with any tool:
//
//	canonical(e) = JSON array, no whitespace, HTML characters not escaped:
//	  [seq, time, actor, action, subject, details]
//	  seq     decimal integer
//	  time    RFC 3339 string in UTC with exactly 6 fractional digits
//	  details the details object with keys sorted, no whitespace
//	hash(e) = SHA-256(canonical(e) || prev_hash)   (prev_hash empty for seq 1)
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// TimeFormat is the canonical time encoding: microseconds, the precision every
// state backend stores exactly.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// Entry is one audit record as exported and verified.
type Entry struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Subject  string          `json:"subject"`
	Details  json.RawMessage `json:"details"`
	PrevHash HexBytes        `json:"prev_hash"`
	Hash     HexBytes        `json:"hash"`
}

// HexBytes marshals as a lowercase hex string, the form auditors compare.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	out, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("audit: hex: %w", err)
	}
	*h = out
	return nil
}

// String returns the hex form.
func (h HexBytes) String() string { return hex.EncodeToString(h) }

// ComputeHash returns hash(e) as specified in the package comment. It depends
// only on the content fields and PrevHash, never on e.Hash.
func ComputeHash(e Entry) ([]byte, error) {
	details, err := canonicalJSON(e.Details)
	if err != nil {
		return nil, fmt.Errorf("audit: entry %d: details: %w", e.Seq, err)
	}
	fields := []any{e.Seq, e.Time.UTC().Format(TimeFormat), e.Actor, e.Action, e.Subject, json.RawMessage(details)}
	canon, err := marshalNoEscape(fields)
	if err != nil {
		return nil, fmt.Errorf("audit: entry %d: %w", e.Seq, err)
	}
	h := sha256.New()
	h.Write(canon)
	h.Write(e.PrevHash)
	return h.Sum(nil), nil
}

// canonicalJSON re-encodes a JSON value with object keys sorted and no
// insignificant whitespace; numbers keep their literal form. Empty input is
// the empty object.
func canonicalJSON(raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return marshalNoEscape(v)
}

// marshalNoEscape is json.Marshal without HTML escaping (< > & stay as they
// are), so the canonical form is what other JSON tools produce too.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func fromRow(r state.AuditRow) Entry {
	return Entry{
		Seq:      r.Seq,
		Time:     r.Time,
		Actor:    r.Actor,
		Action:   r.Action,
		Subject:  r.Subject,
		Details:  json.RawMessage(r.Details),
		PrevHash: r.PrevHash,
		Hash:     r.Hash,
	}
}
