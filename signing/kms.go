package signing

import (
	"context"
	"crypto"
	"fmt"
	"strings"

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
	sv, err := kms.Get(ctx, uri, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing: open %s: %w", uri, err)
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("signing: public key of %s: %w", uri, err)
	}
	alg, err := checkKey(pub)
	if err != nil {
		return nil, err
	}
	return &Signer{signer: sv, pub: pub, alg: alg}, nil
}
