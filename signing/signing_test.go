package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

var updateVector = flag.Bool("update-vector", false, "rewrite testdata/ with a fresh key, artifact and bundle")

func TestSignVerifyRoundTrip(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	artifact := bytes.Repeat([]byte("otelcol 0.115.0\n"), 100_000)
	signed, err := s.Sign(context.Background(), bytes.NewReader(artifact))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(artifact)
	if !bytes.Equal(signed.SHA256, sum[:]) || signed.Size != int64(len(artifact)) {
		t.Fatal("digest or size wrong")
	}
	// The bundle is a v0.3 message-signature bundle with a public-key hint
	// and no transparency-log entry, as `cosign verify-blob --bundle` reads.
	var doc map[string]any
	if err := json.Unmarshal(signed.Bundle, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["mediaType"] != "application/vnd.dev.sigstore.bundle.v0.3+json" || doc["messageSignature"] == nil {
		t.Fatalf("bundle shape: %s", signed.Bundle)
	}
	vm, _ := doc["verificationMaterial"].(map[string]any)
	if pk, _ := vm["publicKey"].(map[string]any); pk == nil || pk["hint"] == "" || vm["tlogEntries"] != nil {
		t.Fatalf("verification material: %v", vm)
	}
	if d, err := BundleDigest(signed.Bundle); err != nil || !bytes.Equal(d, sum[:]) {
		t.Fatalf("BundleDigest: %x %v", d, err)
	}
	if _, err := Verify(signed.Bundle, key.Public(), bytes.NewReader(artifact)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// The raw signature is base64 ASN.1 ECDSA over the SHA-256, as
	// `cosign verify-blob --signature` expects.
	raw, err := base64.StdEncoding.DecodeString(string(signed.Raw))
	if err != nil || !ecdsa.VerifyASN1(&key.PublicKey, sum[:], raw) {
		t.Fatalf("raw signature does not verify: %v", err)
	}
	var sig struct{ R, S asn1.RawValue }
	if _, err := asn1.Unmarshal(raw, &sig); err != nil {
		t.Fatalf("raw signature is not ASN.1: %v", err)
	}

	// Refusals: another artifact, another key, a damaged bundle.
	tampered := append(bytes.Clone(artifact), '!')
	if _, err := Verify(signed.Bundle, key.Public(), bytes.NewReader(tampered)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered artifact: %v, want ErrBadSignature", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := Verify(signed.Bundle, other.Public(), bytes.NewReader(artifact)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v, want ErrBadSignature", err)
	}
	if _, err := Verify([]byte(`{"mediaType":"nope"}`), key.Public(), bytes.NewReader(artifact)); err == nil {
		t.Fatal("garbage bundle accepted")
	}
}

func TestEd25519Refused(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := NewSigner(priv); err == nil || !strings.Contains(err.Error(), "cosign") {
		t.Fatalf("Ed25519: %v, want a refusal explaining cosign interop", err)
	}
}

func TestGenerateAndLoadKey(t *testing.T) {
	dir := t.TempDir()
	kp, err := GenerateKey(dir, "publisher", KeyProtection{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(kp.Private); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(kp.Private); bytes.Contains(b, []byte("PRIVATE KEY-----")) {
		t.Fatal("private key written in the clear")
	}
	if _, err := GenerateKey(dir, "publisher", KeyProtection{Passphrase: []byte("x")}); err == nil {
		t.Fatal("GenerateKey overwrote an existing key")
	}
	if _, err := LoadPrivateKey(kp.Private, KeyUnlock{Passphrase: []byte("wrong")}); err == nil {
		t.Fatal("wrong passphrase accepted")
	}
	if _, err := LoadPrivateKey(kp.Private, KeyUnlock{}); err == nil || !strings.Contains(err.Error(), "TRUSTAMP_KEY_PASSPHRASE") {
		t.Fatalf("no passphrase: %v", err)
	}
	key, err := LoadPrivateKey(kp.Private, KeyUnlock{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(kp.Public)
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSigner(key)
	signed, _ := s.Sign(context.Background(), strings.NewReader("x"))
	if _, err := Verify(signed.Bundle, pub, strings.NewReader("x")); err != nil {
		t.Fatalf("key from file does not verify its own bundle: %v", err)
	}
	if _, err := GenerateKey(dir, "none", KeyProtection{}); err == nil {
		t.Fatal("GenerateKey wrote an unprotected key")
	}
}

// TestVector keeps the bundle format stable: a bundle made once and checked
// in (testdata/artifact.txt, .sigstore.json, publisher.pub) must verify
// forever. Regenerate only on purpose: go test ./signing -update-vector.
func TestVector(t *testing.T) {
	dir := "testdata"
	if *updateVector {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, _ := NewSigner(key)
		artifact := []byte("trustamp test vector: a release artifact\n")
		signed, err := s.Sign(context.Background(), bytes.NewReader(artifact))
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := cryptoutils.MarshalPublicKeyToPEM(key.Public())
		os.WriteFile(filepath.Join(dir, "artifact.txt"), artifact, 0o644)
		os.WriteFile(filepath.Join(dir, "artifact.txt"+BundleSuffix), signed.Bundle, 0o644)
		os.WriteFile(filepath.Join(dir, "artifact.txt.sig"), signed.Raw, 0o644)
		os.WriteFile(filepath.Join(dir, "publisher.pub"), pub, 0o644)
	}
	artifact, err := os.ReadFile(filepath.Join(dir, "artifact.txt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := os.ReadFile(filepath.Join(dir, "artifact.txt"+BundleSuffix))
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "publisher.pub"))
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bundle, pub, bytes.NewReader(artifact)); err != nil {
		t.Fatalf("checked-in test vector no longer verifies: %v", err)
	}
	if _, err := Verify(bundle, pub, bytes.NewReader(append(artifact, ' '))); err == nil {
		t.Fatal("test vector verifies a different artifact")
	}
}
