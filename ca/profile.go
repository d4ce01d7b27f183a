package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// Key types a profile can allow.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyEd25519   = "ed25519"
	KeyRSA       = "rsa"
)

// Profile is how agent certificates are made: which keys are accepted, how
// long certificates live, when they are renewed, and whether the server may
// make the key itself. Zero fields take the defaults step-ca users expect.
type Profile struct {
	Name string
	// Lifetime of issued certificates. Zero means 24h.
	Lifetime time.Duration
	// RenewAt is the fraction of the lifetime after which the certificate is
	// due for rotation. Zero means 2/3.
	RenewAt float64
	// Jitter moves each certificate's renew point earlier by up to this
	// fraction of the lifetime, derived from its serial, so a fleet enrolled
	// together does not renew together. Zero means 0.05; negative means none.
	Jitter float64
	// Backdate moves NotBefore into the past for clock skew. Zero means 1m.
	Backdate time.Duration
	// KeyTypes allowed in CSRs. Empty means all of ecdsa-p256, ecdsa-p384,
	// ed25519 and rsa.
	KeyTypes []string
	// RSAMinBits is the smallest RSA key accepted. Zero means 2048; less than
	// 2048 is refused.
	RSAMinBits int
	// ServerMadeKeys lets the server generate an agent's key pair (ECDSA
	// P-256) when the agent cannot send a CSR. Off by default: the key then
	// exists, briefly, outside the agent.
	ServerMadeKeys bool
	// SANTemplates add DNS SANs from agent attributes (see RenderSANs).
	// Empty, the default, means CN and the SPIFFE URI SAN only.
	SANTemplates []string
	// Issuer names who signs: "" or "embedded" for trustamp's CA, else an
	// entry of Config.Issuers ("vault-pki").
	Issuer string
}

// WithDefaults returns p with zero fields set to their defaults.
func (p Profile) WithDefaults() Profile {
	if p.Name == "" {
		p.Name = "default"
	}
	if p.Lifetime <= 0 {
		p.Lifetime = 24 * time.Hour
	}
	if p.RenewAt <= 0 {
		p.RenewAt = 2.0 / 3.0
	}
	if p.Jitter == 0 {
		p.Jitter = 0.05
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	if p.Backdate <= 0 {
		p.Backdate = time.Minute
	}
	if len(p.KeyTypes) == 0 {
		p.KeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA}
	}
	if p.RSAMinBits <= 0 {
		p.RSAMinBits = 2048
	}
	return p
}

// Validate reports a profile that would issue weak or unusable certificates.
func (p Profile) Validate() error {
	p = p.WithDefaults()
	switch {
	case p.RenewAt >= 1:
		return fmt.Errorf("profile %s: renew_at %.3f must be below 1 (a fraction of the lifetime)", p.Name, p.RenewAt)
	case p.Jitter >= p.RenewAt:
		return fmt.Errorf("profile %s: jitter %.3f must be below renew_at %.3f", p.Name, p.Jitter, p.RenewAt)
	case p.Lifetime < time.Second:
		return fmt.Errorf("profile %s: lifetime %s is below 1s", p.Name, p.Lifetime)
	case p.RSAMinBits < 2048:
		return fmt.Errorf("profile %s: rsa_min_bits %d is below 2048", p.Name, p.RSAMinBits)
	}
	if err := validateSANTemplates(p.Name, p.SANTemplates); err != nil {
		return err
	}
	for _, k := range p.KeyTypes {
		if !slices.Contains([]string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA}, k) {
			return fmt.Errorf("profile %s: key type %q is not one of ecdsa-p256, ecdsa-p384, ed25519, rsa", p.Name, k)
		}
	}
	return nil
}

// RenewAfter is when a certificate with this validity and serial is due for
// rotation. The jitter comes from the serial, so every replica and every
// restart computes the same time.
func (p Profile) RenewAfter(notBefore, notAfter time.Time, serial string) time.Time {
	p = p.WithDefaults()
	life := notAfter.Sub(notBefore)
	sum := sha256.Sum256([]byte(serial))
	u := float64(binary.BigEndian.Uint64(sum[:8])>>11) / float64(1<<53) // uniform in [0, 1)
	return notBefore.Add(time.Duration(float64(life) * (p.RenewAt - u*p.Jitter)))
}

// checkKey refuses keys the profile does not allow, with the reason.
func (p Profile) checkKey(pub any) error {
	var kind string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			kind = KeyECDSAP256
		case elliptic.P384():
			kind = KeyECDSAP384
		default:
			return refuse("ECDSA curve %s is not allowed (use P-256 or P-384)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		kind = KeyEd25519
	case *rsa.PublicKey:
		if k.N.BitLen() < p.RSAMinBits {
			return refuse("RSA key of %d bits is too small (minimum %d)", k.N.BitLen(), p.RSAMinBits)
		}
		kind = KeyRSA
	default:
		return refuse("key type %T is not allowed (use ECDSA P-256/P-384, Ed25519 or RSA >= 2048)", pub)
	}
	if !slices.Contains(p.KeyTypes, kind) {
		return refuse("key type %s is not allowed by certificate profile %s (allowed: %v)", kind, p.Name, p.KeyTypes)
	}
	return nil
}
