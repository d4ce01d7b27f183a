package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/datadir"
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

func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Publisher signing keys; the server's key custody"}
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
	cmd.AddCommand(gen, newKeysMigrateCmd(g))
	return cmd
}

func newKeysMigrateCmd(g *globals) *cobra.Command {
	var to, output string
	cmd := &cobra.Command{
		Use:   "migrate --to vault-kv|age",
		Short: "Copy the server's private keys to another custodian (audited; nothing deleted)",
		Long: `migrate copies every private key of the data dir (CA keys, audit key, OCSP
signer) from the custodian keys.custody names to --to, reads each back to
check it, and audits keys.migrate with the public-key fingerprints. Nothing is
deleted or replaced, so running servers keep working: afterwards set
keys.custody to the new custodian in trustamp.yaml and restart each replica.
The Vault credentials come from TRUSTAMP_VAULT_TOKEN or
TRUSTAMP_VAULT_SECRET_ID, as for serve.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			d, err := datadir.Open(cmd.Context(), datadir.Options{Layout: g.layout()})
			if err != nil {
				return err
			}
			defer d.Close()
			target, err := datadir.KeyStore(g.layout(), d.Config, to)
			if err != nil {
				return fmt.Errorf("--to %s: %w", to, err)
			}
			moved, err := datadir.MigrateKeys(cmd.Context(), d, target, "cli:keys-migrate")
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), moved)
			}
			rows := make([][]string, 0, len(moved))
			for _, m := range moved {
				rows = append(rows, []string{m.Name, m.Fingerprint, m.Result})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"KEY", "PUBLIC KEY SHA-256", "RESULT"}, rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d keys now in %s (audited). Next: set keys.custody: %s in %s and restart each replica;\nthe %s copies stay until you remove them.\n",
				len(moved), to, to, g.layout().Config(), d.Keys.Custody())
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target custodian: vault-kv or age (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.MarkFlagRequired("to")
	return cmd
}
