// Package tokens mints and checks bearer secrets (admin API tokens, and
// enrollment tokens later). Only a SHA-256 of a secret is ever stored: the
// secret has 256 bits of entropy, so a slow password hash would add nothing,
// and a database copy still grants nothing.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Prefixes make a leaked secret recognisable to secret scanners and to people.
const (
	// AdminPrefix starts every admin API token.
	AdminPrefix = "tsa_"
	// EnrollPrefix starts every enrollment token.
	EnrollPrefix = "tse_"
)

// Token is a freshly minted secret and what may be stored about it.
type Token struct {
	// ID is a non-secret name for the token (logs, audit entries): the first
	// 8 bytes of its hash, in hex.
	ID string
	// Secret is shown once to whoever asked for the token, never stored.
	Secret string
	// Hash is what is stored.
	Hash []byte
}

// New mints a token with the given prefix.
func New(prefix string) (Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("tokens: %w", err)
	}
	secret := prefix + base64.RawURLEncoding.EncodeToString(b)
	h := Hash(secret)
	return Token{ID: hex.EncodeToString(h[:8]), Secret: secret, Hash: h}, nil
}

// Hash returns the stored form of secret. Surrounding whitespace (a trailing
// newline from a token file) is ignored.
func Hash(secret string) []byte {
	sum := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	return sum[:]
}

// Matches reports whether secret hashes to stored, in constant time.
func Matches(secret string, stored []byte) bool {
	return subtle.ConstantTimeCompare(Hash(secret), stored) == 1
}
