package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/trustamp/trustamp/internal/vaultclient"
)

// VaultPKIConfig configures the vault-pki issuer.
type VaultPKIConfig struct {
	Client *vaultclient.Client
	// Mount is the PKI mount. Empty means "pki".
	Mount string
	// Role is the PKI role CSRs are signed under. Required.
	Role string
	// Roots are the CA certificates the role's certificates chain to,
	// pinned in configuration (issuers.vault_pki.ca_file).
	Roots []*x509.Certificate
}

// VaultPKI signs with Vault's PKI secrets engine (pki/sign/<role>) and
// revokes there (pki/revoke), so Vault's own CRL lists what trustamp
// revokes. The role must allow what trustamp asks for: any common name (the
// agent's uid), URI SANs under spiffe://<trust domain>/, client auth.
type VaultPKI struct{ cfg VaultPKIConfig }

// NewVaultPKI checks cfg.
func NewVaultPKI(cfg VaultPKIConfig) (*VaultPKI, error) {
	if cfg.Client == nil || cfg.Role == "" {
		return nil, errors.New("ca: vault-pki: a Vault client and a role are required")
	}
	if len(cfg.Roots) == 0 {
		return nil, errors.New("ca: vault-pki: the PKI's CA certificate is required (issuers.vault_pki.ca_file)")
	}
	if cfg.Mount == "" {
		cfg.Mount = "pki"
	}
	return &VaultPKI{cfg: cfg}, nil
}

// Roots are the pinned trust anchors.
func (v *VaultPKI) Roots() []*x509.Certificate { return v.cfg.Roots }

// Sign asks Vault to sign the CSR with exactly trustamp's identity and
// lifetime.
func (v *VaultPKI) Sign(ctx context.Context, req SignRequest) ([]*x509.Certificate, error) {
	uris := make([]string, len(req.URIs))
	for i, u := range req.URIs {
		uris[i] = u.String()
	}
	body := map[string]any{
		"csr":                  string(req.CSRPEM),
		"common_name":          req.CommonName,
		"uri_sans":             strings.Join(uris, ","),
		"ttl":                  fmt.Sprintf("%ds", int64(req.Lifetime.Seconds())),
		"exclude_cn_from_sans": true,
		"format":               "pem",
	}
	if len(req.DNSNames) > 0 {
		body["alt_names"] = strings.Join(req.DNSNames, ",")
	}
	var secret *vault.Secret
	err := v.cfg.Client.Do(ctx, func(c *vault.Client) (err error) {
		secret, err = c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/sign/"+v.cfg.Role, body)
		return err
	})
	if err != nil {
		if vaultclient.Unavailable(err) {
			return nil, fmt.Errorf("%w: %s", ErrIssuerUnavailable, vaultclient.ErrorText(err))
		}
		return nil, errors.New(vaultclient.ErrorText(err))
	}
	if secret == nil || secret.Data == nil {
		return nil, errors.New("vault returned no certificate")
	}
	leafPEM, _ := secret.Data["certificate"].(string)
	bundle := leafPEM + "\n"
	if chain, ok := secret.Data["ca_chain"].([]any); ok && len(chain) > 0 {
		for _, c := range chain {
			if s, ok := c.(string); ok {
				bundle += s + "\n"
			}
		}
	} else if ca, ok := secret.Data["issuing_ca"].(string); ok {
		bundle += ca + "\n"
	}
	return ParseCertificates([]byte(bundle))
}

// Revoke revokes serial (hex, as trustamp keys it) in Vault.
func (v *VaultPKI) Revoke(ctx context.Context, serial string) error {
	err := v.cfg.Client.Do(ctx, func(c *vault.Client) error {
		_, err := c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/revoke", map[string]any{"serial_number": colonHex(serial)})
		return err
	})
	if err != nil {
		if vaultclient.Unavailable(err) {
			return fmt.Errorf("%w: %s", ErrIssuerUnavailable, vaultclient.ErrorText(err))
		}
		return errors.New(vaultclient.ErrorText(err))
	}
	return nil
}

// colonHex is Vault's serial form: "0a:1b:...".
func colonHex(h string) string {
	if len(h)%2 == 1 {
		h = "0" + h
	}
	parts := make([]string, 0, len(h)/2)
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
