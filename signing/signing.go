// Package signing signs and verifies release artifacts in the formats cosign
// users already check: a Sigstore bundle (message signature over the
// artifact's SHA-256, public-key hint, no transparency-log entry), the form
// `cosign verify-blob --key PUB --bundle FILE.sigstore.json` reads, and the
// classic base64 ASN.1 signature for `cosign verify-blob --signature`.
//
// Bundles are built and checked with sigstore-go on top of sigstore's
// signers, never by hand. The artifact is streamed once to compute its
// digest and only the digest is signed, so a 1 GB build is never held in
// memory.
//
// Keys: ECDSA P-256 (the default, what cosign generates), P-384 and RSA.
// Ed25519 is refused: cosign verifies Ed25519 keys as Ed25519ph over the
// whole artifact, which a digest signature cannot match, so such bundles
// would not interoperate.
package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
)

// BundleSuffix is appended to an artifact's name for its bundle.
const BundleSuffix = ".sigstore.json"

// MaxBundleSize bounds a bundle before it is parsed. trustamp's bundles are
// about 1 KiB; a keyless one with a certificate chain, transparency-log
// entry and timestamp stays under 16 KiB.
const MaxBundleSize = 256 << 10

// ErrBadSignature means a bundle or signature does not verify: the
// artifact, the key or the signature is not what it claims.
var ErrBadSignature = errors.New("signing: signature does not verify")

// Signer signs artifact digests with one key.
type Signer struct {
	signer signature.Signer
	pub    crypto.PublicKey
	alg    signature.AlgorithmDetails
}

// NewSigner wraps a private key (a crypto.Signer from a PEM file, or a KMS
// key's signer).
func NewSigner(key crypto.Signer) (*Signer, error) {
	pub := key.Public()
	alg, err := checkKey(pub)
	if err != nil {
		return nil, err
	}
	s, err := signature.LoadSignerFromAlgorithmDetails(key, alg)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return &Signer{signer: s, pub: pub, alg: alg}, nil
}

// checkKey refuses keys whose signatures would not be what cosign users
// verify, and returns the algorithm the others sign with.
func checkKey(pub crypto.PublicKey) (signature.AlgorithmDetails, error) {
	if _, ok := pub.(ed25519.PublicKey); ok {
		return signature.AlgorithmDetails{}, errors.New("signing: Ed25519 keys do not interoperate with cosign (it verifies them as Ed25519ph over the whole file); use ECDSA P-256")
	}
	alg, err := signature.GetDefaultAlgorithmDetails(pub)
	if err != nil {
		return signature.AlgorithmDetails{}, fmt.Errorf("signing: %w", err)
	}
	if alg.GetHashType() != crypto.SHA256 {
		return signature.AlgorithmDetails{}, fmt.Errorf("signing: this key signs %s digests; trustamp signs SHA-256 (use ECDSA P-256)", alg.GetHashType())
	}
	return alg, nil
}

// Public is the key relying parties verify with.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Signed is the result of signing one artifact.
type Signed struct {
	// SHA256 is the artifact's digest.
	SHA256 []byte
	Size   int64
	// Bundle is the Sigstore bundle, JSON: what goes next to the artifact
	// as FILE.sigstore.json and into DownloadableFile.signature.
	Bundle []byte
	// Raw is the base64 ASN.1 signature over the digest, for
	// `cosign verify-blob --key --signature`.
	Raw []byte
}

// Sign streams the artifact once and signs its SHA-256.
func (s *Signer) Sign(ctx context.Context, artifact io.Reader) (Signed, error) {
	h := sha256.New()
	n, err := io.Copy(h, artifact)
	if err != nil {
		return Signed{}, fmt.Errorf("signing: read artifact: %w", err)
	}
	digest := h.Sum(nil)
	b, err := sign.Bundle(&digestContent{digest: digest}, &keypair{s: s}, sign.BundleOptions{Context: ctx})
	if err != nil {
		return Signed{}, fmt.Errorf("signing: %w", err)
	}
	j, err := protojson.Marshal(b)
	if err != nil {
		return Signed{}, fmt.Errorf("signing: encode bundle: %w", err)
	}
	sig := b.GetMessageSignature().GetSignature()
	return Signed{SHA256: digest, Size: n, Bundle: j, Raw: []byte(base64.StdEncoding.EncodeToString(sig))}, nil
}

// digestContent is sign.Content for a digest computed beforehand: the bytes
// "to sign" are the digest, and the keypair signs them as one.
type digestContent struct{ digest []byte }

func (d *digestContent) PreAuthEncoding() []byte { return d.digest }

func (d *digestContent) Bundle(b *protobundle.Bundle, sig, digest []byte, alg protocommon.HashAlgorithm) {
	b.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
		MessageDigest: &protocommon.HashOutput{Algorithm: alg, Digest: digest},
		Signature:     sig,
	}}
}

// keypair adapts Signer to sigstore-go's sign.Keypair.
type keypair struct{ s *Signer }

func (k *keypair) GetHashAlgorithm() protocommon.HashAlgorithm { return k.s.alg.GetProtoHashType() }
func (k *keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return k.s.alg.GetSignatureAlgorithm()
}
func (k *keypair) GetHint() []byte {
	h, _ := KeyHint(k.s.pub)
	return []byte(h)
}
func (k *keypair) GetKeyAlgorithm() string {
	switch k.s.pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	}
	return ""
}
func (k *keypair) GetPublicKey() crypto.PublicKey { return k.s.pub }
func (k *keypair) GetPublicKeyPem() (string, error) {
	b, err := cryptoutils.MarshalPublicKeyToPEM(k.s.pub)
	return string(b), err
}

// SignData signs data, which is already the SHA-256 digest (digestContent).
func (k *keypair) SignData(ctx context.Context, digest []byte) ([]byte, []byte, error) {
	sig, err := k.s.signer.SignMessage(bytes.NewReader(nil), options.WithDigest(digest), options.WithContext(ctx),
		options.WithCryptoSignerOpts(crypto.SHA256))
	if err != nil {
		return nil, nil, err
	}
	return sig, digest, nil
}

// KeyHint names a public key in bundles: the hex SHA-256 of its DER
// (SubjectPublicKeyInfo), as sigstore-go's keypairs do.
func KeyHint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// BundleDigest returns the SHA-256 a bundle says it signs, without
// verifying anything: publishing uses it to store the artifact straight under
// its final name, then verifies.
func BundleDigest(bundleJSON []byte) ([]byte, error) {
	b, err := parseBundle(bundleJSON)
	if err != nil {
		return nil, err
	}
	ms := b.GetMessageSignature()
	if ms == nil || ms.GetMessageDigest().GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 || len(ms.GetMessageDigest().GetDigest()) != sha256.Size {
		return nil, errors.New("signing: the bundle holds no SHA-256 message signature")
	}
	return ms.GetMessageDigest().GetDigest(), nil
}

func parseBundle(bundleJSON []byte) (*bundle.Bundle, error) {
	if len(bundleJSON) > MaxBundleSize {
		return nil, fmt.Errorf("signing: bundle of %d bytes is over the %d-byte limit", len(bundleJSON), MaxBundleSize)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return nil, fmt.Errorf("signing: not a Sigstore bundle: %w", err)
	}
	return &b, nil
}

// VerifyDigest checks that bundleJSON is a valid signature by pub over an
// artifact whose SHA-256 is digest, with sigstore-go's verifier and nothing
// but the public key as trusted material (no transparency log, no
// timestamps: the offline check a release engineer's key allows).
func VerifyDigest(bundleJSON []byte, pub crypto.PublicKey, digest []byte) error {
	b, err := parseBundle(bundleJSON)
	if err != nil {
		return err
	}
	v, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	trusted := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return root.NewExpiringKey(v, time.Time{}, time.Time{}), nil
	})
	verifier, err := verify.NewVerifier(trusted, verify.WithNoObserverTimestamps())
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	_, err = verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), verify.WithKey()))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}

// Verify hashes the artifact and checks the bundle against it.
func Verify(bundleJSON []byte, pub crypto.PublicKey, artifact io.Reader) ([]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(h, artifact); err != nil {
		return nil, fmt.Errorf("signing: read artifact: %w", err)
	}
	digest := h.Sum(nil)
	return digest, VerifyDigest(bundleJSON, pub, digest)
}

// ParsePublicKey reads a PEM public key (PKIX, as cosign writes them).
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("signing: public key: %w", err)
	}
	return pub, nil
}

// DigestHex formats a digest the way the store and the protocol name it.
func DigestHex(d []byte) string { return hex.EncodeToString(d) }
