package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// Checkpoint is a signed statement "the chain's entry Seq has hash HeadHash".
type Checkpoint struct {
	Seq       int64     `json:"seq"`
	HeadHash  HexBytes  `json:"head_hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature HexBytes  `json:"signature"`
}

// signedMessage is the exact byte string the audit key signs; the domain
// prefix keeps a checkpoint signature from being valid for anything else.
func (c Checkpoint) signedMessage() []byte {
	return fmt.Appendf(nil, "trustamp audit checkpoint v1\n%d\n%x\n%s\n", c.Seq, []byte(c.HeadHash), c.Time.UTC().Format(TimeFormat))
}

// VerifySignature reports whether c is signed by pub.
func (c Checkpoint) VerifySignature(pub ed25519.PublicKey) bool {
	return ed25519.Verify(pub, c.signedMessage(), c.Signature)
}

func checkpointFromRow(r state.CheckpointRow) Checkpoint {
	return Checkpoint{Seq: r.Seq, HeadHash: r.HeadHash, Time: r.Time, KeyID: r.KeyID, Signature: r.Signature}
}

// KeyID names an audit public key: the first 8 bytes of the SHA-256 of its
// PKIX encoding, in hex.
func KeyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// MarshalPublicKey encodes an audit public key as PEM, the form auditors keep.
func MarshalPublicKey(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKey decodes a PEM audit public key.
func ParsePublicKey(pemBytes []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("audit: public key: not a PEM PUBLIC KEY")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: public key is %T, want Ed25519", k)
	}
	return pub, nil
}
