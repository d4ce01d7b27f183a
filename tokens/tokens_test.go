package tokens

import (
	"strings"
	"testing"
)

func TestNewTokensAreDistinctAndMatch(t *testing.T) {
	a, err := New(AdminPrefix)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(AdminPrefix)
	if a.Secret == b.Secret || a.ID == b.ID {
		t.Fatal("two tokens are equal")
	}
	if !strings.HasPrefix(a.Secret, AdminPrefix) || len(a.Secret) < len(AdminPrefix)+43 {
		t.Fatalf("secret %q: want prefix and 256 bits", a.Secret)
	}
	if !Matches(a.Secret, a.Hash) || !Matches(a.Secret+"\n", a.Hash) {
		t.Fatal("token does not match its own hash")
	}
	if Matches(b.Secret, a.Hash) || Matches("", a.Hash) {
		t.Fatal("token matches another's hash")
	}
	if strings.Contains(a.ID, a.Secret[len(AdminPrefix):len(AdminPrefix)+8]) {
		t.Fatal("ID leaks the secret")
	}
}
