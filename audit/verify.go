package audit

import (
	"bytes"
	"crypto/ed25519"
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
}

// Verifier checks a chain fed to it in order, without holding it in memory.
// Give it the checkpoints first (they are few), then every entry, then call
// Finish.
type Verifier struct {
	pub      ed25519.PublicKey
	pending  map[int64]Checkpoint
	report   Report
	prevHash []byte
	started  bool
}

// NewVerifier returns a Verifier that checks checkpoint signatures against
// pub; a nil pub checks the chain only.
func NewVerifier(pub ed25519.PublicKey) *Verifier {
	return &Verifier{pub: pub, pending: map[int64]Checkpoint{}, report: Report{SignaturesChecked: pub != nil}}
}

// AddCheckpoint registers a checkpoint to be matched against the chain.
func (v *Verifier) AddCheckpoint(c Checkpoint) error {
	if v.started {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: "checkpoint given after entries (checkpoints must come first)"}
	}
	if v.pub != nil && !c.verifySignature(v.pub) {
		return &VerifyError{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf("signature does not verify under audit key %s (checkpoint names key %s)", KeyID(v.pub), c.KeyID)}
	}
	v.pending[c.Seq] = c
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
	if c, ok := v.pending[e.Seq]; ok {
		if !bytes.Equal(c.HeadHash, got) {
			return &VerifyError{Seq: e.Seq, Checkpoint: true, Reason: fmt.Sprintf("signed head %x differs from the chain's %x (history was rewritten)", []byte(c.HeadHash), got)}
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
