package signing

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"

	// Vault Transit (hashivault://KEY), configured by VAULT_ADDR,
	// VAULT_TOKEN (or VAULT_ROLE_ID/VAULT_SECRET_ID... as sigstore reads
	// them) and TRANSIT_SECRET_ENGINE_PATH. The cloud providers (awskms,
	// gcpkms, azurekms) are left out on purpose: each pulls its cloud SDK
	// into every trustamp binary; add the import where a deployment needs
	// one.
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
)

// IsKMS reports whether ref names a KMS key (scheme://...) rather than a
// key file.
func IsKMS(ref string) bool { return strings.Contains(ref, "://") }

// OpenKMS returns a Signer whose private key stays in a KMS: only digests
// travel to it. The key must be ECDSA P-256 (Transit type ecdsa-p256) or
// RSA, like a key file.
func OpenKMS(ctx context.Context, uri string) (*Signer, error) {
	sv, pub, alg, err := openKMS(ctx, uri)
	if err != nil {
		return nil, err
	}
	return &Signer{signer: sv, pub: pub, alg: alg}, nil
}

// OpenKMSKey returns a crypto.Signer for a KMS key (hashivault://KEY), for
// callers that sign with the standard library (x509.CreateCertificate,
// CRLs, OCSP): only digests travel to the KMS. The public key is read once.
func OpenKMSKey(ctx context.Context, uri string) (crypto.Signer, error) {
	sv, pub, _, err := openKMS(ctx, uri)
	if err != nil {
		return nil, err
	}
	// The error callback reports failures of Public(), which kmsKey never
	// calls; Sign returns its own errors.
	cs, _, err := sv.CryptoSigner(context.WithoutCancel(ctx), nil)
	if err != nil {
		return nil, fmt.Errorf("signing: %s: %w", uri, err)
	}
	return kmsKey{Signer: cs, pub: pub, uri: uri}, nil
}

// openKMS opens a KMS key, reads its public key and checks it signs what
// trustamp verifies.
func openKMS(ctx context.Context, uri string) (kms.SignerVerifier, crypto.PublicKey, signature.AlgorithmDetails, error) {
	sv, err := kms.Get(ctx, uri, crypto.SHA256)
	if err != nil {
		return nil, nil, signature.AlgorithmDetails{}, fmt.Errorf("signing: open %s: %w", uri, err)
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, nil, signature.AlgorithmDetails{}, fmt.Errorf("signing: public key of %s: %w", uri, err)
	}
	alg, err := checkKey(pub)
	if err != nil {
		return nil, nil, signature.AlgorithmDetails{}, err
	}
	return sv, pub, alg, nil
}

// kmsKey pins the public key: the KMS's crypto.Signer asks the KMS for it
// on every call.
type kmsKey struct {
	crypto.Signer
	pub crypto.PublicKey
	uri string
}

func (k kmsKey) Public() crypto.PublicKey { return k.pub }

func (k kmsKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.Signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("signing: %s: %w", k.uri, err)
	}
	return sig, nil
}
