package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
)

// fixedKey is a P-256 key derived from name: the same in every run, so
// seeds and crashers stay meaningful, and never a key anyone uses.
func fixedKey(t testing.TB, name string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("trustamp signing test key: " + name))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// dsseKeypair signs whole payloads (DSSE's pre-authentication encoding),
// where keypair signs digests: to make in-toto bundles for the seeds.
type dsseKeypair struct{ *keypair }

func (k dsseKeypair) SignData(ctx context.Context, data []byte) ([]byte, []byte, error) {
	sig, err := k.s.signer.SignMessage(bytes.NewReader(data), options.WithContext(ctx))
	sum := sha256.Sum256(data)
	return sig, sum[:], err
}

// bundleFixture: a publisher key the verifier trusts, which signs only
// digest; an untrusted one, which signs other; a stranger key, which signs
// nothing.
type bundleFixture struct {
	trusted, untrusted, stranger *Signer
	digest, other                []byte
}

func newBundleFixture(t testing.TB) bundleFixture {
	t.Helper()
	var f bundleFixture
	for _, s := range []struct {
		dst  **Signer
		name string
	}{{&f.trusted, "trusted"}, {&f.untrusted, "untrusted"}, {&f.stranger, "stranger"}} {
		signer, err := NewSigner(fixedKey(t, s.name))
		if err != nil {
			t.Fatal(err)
		}
		*s.dst = signer
	}
	d := sha256.Sum256([]byte("otelcol 0.115.0 linux/amd64\n"))
	o := sha256.Sum256([]byte("otelcol 0.115.0 linux/amd64, another build\n"))
	f.digest, f.other = d[:], o[:]
	return f
}

// sign is s's bundle over the artifact whose digest is digest.
func (f bundleFixture) sign(t testing.TB, s *Signer, digest []byte) []byte {
	t.Helper()
	b, err := sign.Bundle(&digestContent{digest: digest}, &keypair{s: s}, sign.BundleOptions{Context: context.Background()})
	if err != nil {
		t.Fatal(err)
	}
	j, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// dsse is s's DSSE bundle of an in-toto statement naming digest.
func (f bundleFixture) dsse(t testing.TB, s *Signer, digest []byte) []byte {
	t.Helper()
	stmt := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"otelcol","digest":{"sha256":"%s"}}],`+
		`"predicateType":"https://trustamp.dev/release/v1","predicate":{"version":"0.115.0"}}`, hex.EncodeToString(digest))
	b, err := sign.Bundle(&sign.DSSEData{Data: []byte(stmt), PayloadType: "application/vnd.in-toto+json"},
		dsseKeypair{&keypair{s: s}}, sign.BundleOptions{Context: context.Background()})
	if err != nil {
		t.Fatal(err)
	}
	j, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (f bundleFixture) seeds(t testing.TB) map[string][]byte {
	valid := f.sign(t, f.trusted, f.digest)
	vector, err := os.ReadFile(filepath.Join("testdata", "artifact.txt"+BundleSuffix))
	if err != nil {
		t.Fatal(err)
	}
	realB64 := b64(f.digest)
	return map[string][]byte{
		"valid":                valid,
		"untrusted key":        f.sign(t, f.untrusted, f.digest),
		"other digest":         f.sign(t, f.untrusted, f.other),
		"digest swapped":       bytes.Replace(valid, []byte(realB64), []byte(b64(f.other)), 1),
		"dsse":                 f.dsse(t, f.trusted, f.digest),
		"dsse other digest":    f.dsse(t, f.untrusted, f.other),
		"test vector":          vector,
		"v0.1 media type":      bytes.Replace(valid, []byte("bundle.v0.3+json"), []byte("bundle+json;version=0.1"), 1),
		"v0.2 media type":      bytes.Replace(valid, []byte("bundle.v0.3+json"), []byte("bundle+json;version=0.2"), 1),
		"sha512 digest":        bytes.Replace(valid, []byte("SHA2_256"), []byte("SHA2_512"), 1),
		"certificate material": bytes.Replace(valid, []byte(`"publicKey":{"hint":`), []byte(`"certificate":{"rawBytes":`), 1),
		"no signature":         []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"x"}},"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"` + realB64 + `"}}}`),
		"null":                 []byte("null"),
		"empty object":         []byte("{}"),
		"empty":                {},
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestBundleRefusals: each forged or damaged bundle is refused on the path
// publishing takes (BundleDigest, then VerifyDigest against the trusted
// key and the digest the bundle names), and the valid one passes it.
func TestBundleRefusals(t *testing.T) {
	f := newBundleFixture(t)
	seeds := f.seeds(t)
	publish := func(b []byte) error {
		d, err := BundleDigest(b)
		if err != nil {
			return err
		}
		return VerifyDigest(b, f.trusted.Public(), d)
	}
	if err := publish(seeds["valid"]); err != nil {
		t.Fatalf("valid bundle: %v", err)
	}
	for name, want := range map[string]string{
		"untrusted key":        "signature does not verify",
		"digest swapped":       "signature does not verify",
		"dsse":                 "no SHA-256 message signature",
		"test vector":          "signature does not verify",
		"sha512 digest":        "no SHA-256 message signature",
		"other digest":         "signature does not verify",
		"certificate material": "signature does not verify",
		"no signature":         "signature does not verify",
		"null":                 "not a Sigstore bundle",
		"empty":                "not a Sigstore bundle",
	} {
		if err := publish(seeds[name]); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, want)
		}
	}
	if err := VerifyDigest(seeds["valid"], f.trusted.Public(), f.other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a bundle verified for another artifact's digest: %v", err)
	}
	// Bounded before parsing: a valid bundle padded past the limit.
	big := append(bytes.Clone(seeds["valid"]), bytes.Repeat([]byte(" "), MaxBundleSize)...)
	if _, err := BundleDigest(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("BundleDigest of %d bytes: %v, want a refusal naming the limit", len(big), err)
	}
	if err := VerifyDigest(big, f.trusted.Public(), f.digest); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("VerifyDigest of %d bytes: %v, want a refusal naming the limit", len(big), err)
	}
}

// FuzzBundleVerify feeds arbitrary bundles to what publishing and the agent
// do with them. Whatever the input: no panic; BundleDigest yields 32 bytes
// or an error; and a bundle verifies only over the one digest the trusted
// key signed, and only for the trusted key: never for another digest, never
// for a key that signed nothing (so a hint, a swapped digest or a
// re-labelled algorithm cannot make a signature count).
func FuzzBundleVerify(f *testing.F) {
	fx := newBundleFixture(f)
	seeds := fx.seeds(f)
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		f.Add(seeds[name])
	}
	trusted, stranger := fx.trusted.Public(), fx.stranger.Public()
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := BundleDigest(b)
		if err == nil && len(d) != sha256.Size {
			t.Fatalf("BundleDigest returned %d bytes", len(d))
		}
		if err == nil && VerifyDigest(b, trusted, d) == nil && !bytes.Equal(d, fx.digest) {
			t.Fatalf("publish path: verified over %x, which the trusted key never signed", d)
		}
		if VerifyDigest(b, trusted, fx.other) == nil {
			t.Fatal("verified over a digest the trusted key never signed")
		}
		if VerifyDigest(b, stranger, fx.digest) == nil {
			t.Fatal("verified with a key that signed nothing")
		}
		if len(b) > MaxBundleSize && (err == nil || VerifyDigest(b, trusted, fx.digest) == nil) {
			t.Fatalf("a %d-byte bundle was parsed", len(b))
		}
	})
}
