package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
)

// VerifyError names the first entry or checkpoint that does not check.
type VerifyError struct {
	// Seq is the sequence number of the bad entry, or of the checkpoint.
	Seq int64
	// Checkpoint is true when the failure is in a checkpoint, not an entry.
	Checkpoint bool
	Reason     string
}

func (e *VerifyError) Error() string {
	what := "entry"
	if e.Checkpoint {
		what = "checkpoint at entry"
	}
	return fmt.Sprintf("audit: %s %d: %s", what, e.Seq, e.Reason)
}

// Report summarises a successful verification.
type Report struct {
	Entries  int64    `json:"entries"`
	FirstSeq int64    `json:"first_seq"`
	LastSeq  int64    `json:"last_seq"`
	HeadHash HexBytes `json:"head_hash"`
	// Checkpoints counts checkpoints whose signature and head hash checked.
	Checkpoints int `json:"checkpoints"`
	// SignaturesChecked is false when no public key was given, in which case
	// only the chain's internal consistency was checked.
	SignaturesChecked bool `json:"signatures_checked"`
	// LastCheckpointSeq is the highest signed entry; entries after it are
	// protected by the chain only until the next checkpoint.
	LastCheckpointSeq int64 `json:"last_checkpoint_seq"`
	// AnchoredSeq is the entry of the checkpoint kept outside the database
	// (the state anchor) that the chain was required to contain; 0 when no
	// anchor was given.
	AnchoredSeq int64 `json:"anchored_seq,omitempty"`
}

// MaxCheckpoints bounds how many checkpoints one verification holds while
// it waits for their entries (one a minute is about 525,000 a year).
const MaxCheckpoints = 4 << 20

// Verifier checks a chain fed to it in order, without holding it in memory.
// Give it the checkpoints first (they are few), then every entry, then call
// Finish.
type Verifier struct {
	pub      ed25519.PublicKey
	pending  map[int64][sha256.Size]byte // checkpoint seq -> signed head
	report   Report
	prevHash []byte
	started  bool

	anchor       *Checkpoint
	anchorSource string
	anchorSeen   bool
}

// NewVerifier returns a Verifier that checks checkpoint signatures against
// pub; a nil pub checks the chain only.
func NewVerifier(pub ed25519.PublicKey) *Verifier {
	return &Verifier{pub: pub, pending: map[int64][sha256.Size]byte{}, report: Report{SignaturesChecked: pub != nil}}
}

// RequireAnchor makes the chain prove it contains c, the checkpoint kept
// outside the database (source names where, for messages): a chain that
// ends before c.Seq was truncated or rolled back to an older copy, and one
// whose entry c.Seq hashes differently was replaced. Call it before the
// first entry.
func (v *Verifier) RequireAnchor(c Checkpoint, source string) error {
	if v.started {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: "anchor given after entries"}
	}
	if v.pub != nil && !c.VerifySignature(v.pub) {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf("the checkpoint anchored in %s does not verify under audit key %s", source, KeyID(v.pub))}
	}
	v.anchor, v.anchorSource = &c, source
	v.report.AnchoredSeq = c.Seq
	return nil
}

// AddCheckpoint registers a checkpoint to be matched against the chain.
func (v *Verifier) AddCheckpoint(c Checkpoint) error {
	if v.started {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: "checkpoint given after entries (checkpoints must come first)"}
	}
	if v.pub != nil && !c.VerifySignature(v.pub) {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf("signature does not verify under audit key %s (checkpoint names key %s)", KeyID(v.pub), c.KeyID)}
	}
	if len(c.HeadHash) != sha256.Size {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf("head hash is %d bytes, want %d", len(c.HeadHash), sha256.Size)}
	}
	if _, dup := v.pending[c.Seq]; !dup && len(v.pending) >= MaxCheckpoints {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf("more than %d checkpoints", MaxCheckpoints)}
	}
	v.pending[c.Seq] = [sha256.Size]byte(c.HeadHash)
	return nil
}

// Entry checks the next entry of the chain.
func (v *Verifier) Entry(e Entry) error {
	if !v.started {
		v.started = true
		v.report.FirstSeq = e.Seq
		if e.Seq == 1 && len(e.PrevHash) != 0 {
			return &VerifyError{Seq: e.Seq, Reason: "first entry has a non-empty prev_hash"}
		}
		// An export that starts after seq 1 is anchored by its first
		// prev_hash, and (when signatures are checked) by its checkpoints.
		for seq := range v.pending {
			if seq < e.Seq {
				delete(v.pending, seq)
			}
		}
	} else {
		if want := v.report.LastSeq + 1; e.Seq != want {
			return &VerifyError{Seq: want, Reason: fmt.Sprintf("missing: the chain jumps from %d to %d (entries deleted or reordered)", v.report.LastSeq, e.Seq)}
		}
		if !bytes.Equal(e.PrevHash, v.prevHash) {
			return &VerifyError{Seq: e.Seq, Reason: fmt.Sprintf("prev_hash %x does not match entry %d's hash %x (an earlier entry was replaced)", []byte(e.PrevHash), v.report.LastSeq, v.prevHash)}
		}
	}
	got, err := ComputeHash(e)
	if err != nil {
		return &VerifyError{Seq: e.Seq, Reason: err.Error()}
	}
	if !bytes.Equal(got, e.Hash) {
		return &VerifyError{Seq: e.Seq, Reason: fmt.Sprintf("hash mismatch: stored %x, content hashes to %x (the entry was altered after it was written)", []byte(e.Hash), got)}
	}
	if a := v.anchor; a != nil && a.Seq == e.Seq {
		if !bytes.Equal(a.HeadHash, got) {
			return &VerifyError{Seq: e.Seq, Checkpoint: true, Reason: fmt.Sprintf("the checkpoint anchored in %s signs head %x but the chain has %x here (the database holds another history)", v.anchorSource, []byte(a.HeadHash), got)}
		}
		v.anchorSeen = true
	}
	if c, ok := v.pending[e.Seq]; ok {
		if !bytes.Equal(c[:], got) {
			return &VerifyError{Seq: e.Seq, Checkpoint: true, Reason: fmt.Sprintf("signed head %x differs from the chain's %x (history was rewritten)", c[:], got)}
		}
		delete(v.pending, e.Seq)
		v.report.Checkpoints++
		v.report.LastCheckpointSeq = e.Seq
	}
	v.prevHash = got
	v.report.LastSeq = e.Seq
	v.report.HeadHash = got
	v.report.Entries++
	return nil
}

// Finish reports checkpoints that named entries the chain does not have:
// the sign of entries deleted from the end.
func (v *Verifier) Finish() (Report, error) {
	if a := v.anchor; a != nil && !v.anchorSeen {
		return v.report, &VerifyError{Seq: a.Seq, Checkpoint: true, Reason: fmt.Sprintf(
			"the chain ends at entry %d but the checkpoint anchored in %s signs entry %d: the log was truncated or the database rolled back to an older copy",
			v.report.LastSeq, v.anchorSource, a.Seq)}
	}
	var first *VerifyError
	for seq := range v.pending {
		if first == nil || seq < first.Seq {
			first = &VerifyError{Seq: seq, Checkpoint: true,
				Reason: fmt.Sprintf("signed checkpoint names an entry the chain does not have (chain ends at %d: entries were removed)", v.report.LastSeq)}
		}
	}
	if first != nil {
		return v.report, first
	}
	return v.report, nil
}
