package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/signing"
)

// keyUnlock reads what decrypts a publisher key: TRUSTAMP_KEY_PASSPHRASE,
// or an age identity file.
func keyUnlock(identityFile string) (signing.KeyUnlock, error) {
	u := signing.KeyUnlock{Passphrase: []byte(os.Getenv("TRUSTAMP_KEY_PASSPHRASE"))}
	if identityFile != "" {
		b, err := os.ReadFile(identityFile)
		if err != nil {
			return u, fmt.Errorf("--identity: %w", err)
		}
		u.Identities = b
	}
	return u, nil
}

func loadSigner(ctx context.Context, ref, identityFile string) (*signing.Signer, error) {
	if signing.IsKMS(ref) {
		return signing.OpenKMS(ctx, ref)
	}
	u, err := keyUnlock(identityFile)
	if err != nil {
		return nil, err
	}
	key, err := signing.LoadPrivateKey(ref, u)
	if err != nil {
		return nil, err
	}
	return signing.NewSigner(key)
}

func newSignCmd() *cobra.Command {
	var keyRef, identity, out string
	var raw bool
	cmd := &cobra.Command{
		Use:   "sign --key KEY FILE",
		Short: "Sign a release artifact: writes FILE.sigstore.json (cosign verify-blob --bundle)",
		Long: `sign hashes FILE once (streaming) and signs its SHA-256 with the publisher
key, writing a Sigstore bundle next to it (FILE.sigstore.json, or --out): a
message signature with a public-key hint and no transparency-log entry, which
cosign v3 checks with

  cosign verify-blob --key publisher.pub --bundle FILE.sigstore.json \
      --insecure-ignore-tlog=true FILE

--raw also writes FILE.sig, the base64 ASN.1 signature for
cosign verify-blob --key publisher.pub --signature FILE.sig FILE.

The key file is the one trustamp keys generate writes (age-encrypted:
TRUSTAMP_KEY_PASSPHRASE or --identity unlocks it) or an unencrypted PKCS#8
PEM, or a KMS key: hashivault://KEY signs with a Vault Transit key
(ecdsa-p256) through VAULT_ADDR and VAULT_TOKEN; the private key never leaves
Vault. Signing happens here, never on the server.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loadSigner(cmd.Context(), keyRef, identity)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			signed, err := s.Sign(cmd.Context(), f)
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0] + signing.BundleSuffix
			}
			if err := os.WriteFile(out, signed.Bundle, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s  sha256:%s  %d bytes\n", out, hex.EncodeToString(signed.SHA256), signed.Size)
			if raw {
				if err := os.WriteFile(args[0]+".sig", signed.Raw, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", args[0]+".sig")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyRef, "key", "", "publisher private key file, or hashivault://KEY (Vault Transit) (required)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file that decrypts the key (else TRUSTAMP_KEY_PASSPHRASE)")
	cmd.Flags().StringVar(&out, "out", "", "bundle path (default FILE.sigstore.json)")
	cmd.Flags().BoolVar(&raw, "raw", false, "also write FILE.sig (base64 ASN.1 signature)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var pubFile, bundleFile string
	cmd := &cobra.Command{
		Use:   "verify --key PUB --bundle BUNDLE FILE",
		Short: "Check a release artifact's Sigstore bundle offline against a publisher public key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pubPEM, err := os.ReadFile(pubFile)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			pub, err := signing.ParsePublicKey(pubPEM)
			if err != nil {
				return err
			}
			if bundleFile == "" {
				bundleFile = args[0] + signing.BundleSuffix
			}
			b, err := os.ReadFile(bundleFile)
			if err != nil {
				return fmt.Errorf("--bundle: %w", err)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			digest, err := signing.Verify(b, pub, f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK %s sha256:%s\n", args[0], hex.EncodeToString(digest))
			return nil
		},
	}
	cmd.Flags().StringVar(&pubFile, "key", "", "publisher public key (PEM, required)")
	cmd.Flags().StringVar(&bundleFile, "bundle", "", "bundle (default FILE.sigstore.json)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Publisher signing keys"}
	var outDir, name, recipient string
	gen := &cobra.Command{
		Use:   "generate --out DIR",
		Short: "Make an ECDSA P-256 publisher key pair (private key encrypted)",
		Long: `generate writes DIR/NAME.key (0600, age-encrypted to the passphrase in
TRUSTAMP_KEY_PASSPHRASE, or to --age-recipient) and DIR/NAME.pub. Give the
server only the .pub (trustamp publishers add); the private key stays with the
release engineer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := signing.KeyProtection{Passphrase: []byte(os.Getenv("TRUSTAMP_KEY_PASSPHRASE")), AgeRecipient: recipient}
			if recipient != "" {
				p.Passphrase = nil
			}
			kp, err := signing.GenerateKey(outDir, name, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", kp.Private, kp.Public)
			return nil
		},
	}
	gen.Flags().StringVar(&outDir, "out", "", "directory for the key pair (required)")
	gen.Flags().StringVar(&name, "name", "publisher", "file name stem")
	gen.Flags().StringVar(&recipient, "age-recipient", "", "encrypt to this age recipient (age1...) instead of a passphrase")
	gen.MarkFlagRequired("out")
	cmd.AddCommand(gen)
	return cmd
}
