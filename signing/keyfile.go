package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// KeyPair names the files GenerateKey writes.
type KeyPair struct {
	Private string // age-encrypted PKCS#8 PEM, 0600
	Public  string // PKIX PEM
}

// KeyProtection says how the private key is encrypted at rest: to a
// passphrase (scrypt) or to an age recipient (age1..., e.g. a YubiKey
// plugin's or a team key). Exactly one.
type KeyProtection struct {
	Passphrase   []byte
	AgeRecipient string
}

func (p KeyProtection) recipient() (age.Recipient, error) {
	switch {
	case len(p.Passphrase) > 0 && p.AgeRecipient != "":
		return nil, errors.New("signing: give a passphrase or an age recipient, not both")
	case len(p.Passphrase) > 0:
		return age.NewScryptRecipient(string(p.Passphrase))
	case p.AgeRecipient != "":
		return age.ParseX25519Recipient(p.AgeRecipient)
	}
	return nil, errors.New("signing: the private key must be protected: give a passphrase or an age recipient")
}

// GenerateKey makes an ECDSA P-256 publisher key pair in dir: name.key
// (encrypted) and name.pub. It refuses to overwrite either.
func GenerateKey(dir, name string, p KeyProtection) (KeyPair, error) {
	rcpt, err := p.recipient()
	if err != nil {
		return KeyPair{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	var enc bytes.Buffer
	aw := armor.NewWriter(&enc)
	w, err := age.Encrypt(aw, rcpt)
	if err != nil {
		return KeyPair{}, fmt.Errorf("signing: encrypt key: %w", err)
	}
	w.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err := w.Close(); err != nil {
		return KeyPair{}, err
	}
	if err := aw.Close(); err != nil {
		return KeyPair{}, err
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{Private: filepath.Join(dir, name+".key"), Public: filepath.Join(dir, name+".pub")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyPair{}, err
	}
	if err := writeNew(kp.Private, enc.Bytes(), 0o600); err != nil {
		return KeyPair{}, err
	}
	if err := writeNew(kp.Public, pubPEM, 0o644); err != nil {
		os.Remove(kp.Private)
		return KeyPair{}, err
	}
	return kp, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("signing: %w (refusing to overwrite a key)", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// KeyUnlock supplies what decrypts a private key file: a passphrase, or age
// identities (an identity file's contents).
type KeyUnlock struct {
	Passphrase []byte
	Identities []byte
}

// LoadPrivateKey reads a private key file: age-encrypted (as GenerateKey
// writes) or a plain unencrypted PKCS#8/EC PEM.
func LoadPrivateKey(path string, u KeyUnlock) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte(armor.Header)) {
		var ids []age.Identity
		if len(u.Passphrase) > 0 {
			id, err := age.NewScryptIdentity(string(u.Passphrase))
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		if len(u.Identities) > 0 {
			parsed, err := age.ParseIdentities(bytes.NewReader(u.Identities))
			if err != nil {
				return nil, fmt.Errorf("signing: age identities: %w", err)
			}
			ids = append(ids, parsed...)
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("signing: %s is encrypted: set TRUSTAMP_KEY_PASSPHRASE or pass an age identity file", path)
		}
		r, err := age.Decrypt(armor.NewReader(bytes.NewReader(b)), ids...)
		if err != nil {
			return nil, fmt.Errorf("signing: decrypt %s (wrong passphrase or identity?): %w", path, err)
		}
		if b, err = io.ReadAll(r); err != nil {
			return nil, fmt.Errorf("signing: decrypt %s: %w", path, err)
		}
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing: %s holds no PEM private key", path)
	}
	var key any
	switch {
	case blk.Type == "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case blk.Type == "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case strings.Contains(blk.Type, "ENCRYPTED"):
		return nil, fmt.Errorf("signing: %s is a %s: convert it to PKCS#8 or generate one with `trustamp keys generate`", path, blk.Type)
	default:
		return nil, fmt.Errorf("signing: %s: unsupported PEM block %q", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing: %s: %w", path, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing: %s: not a signing key", path)
	}
	return s, nil
}
