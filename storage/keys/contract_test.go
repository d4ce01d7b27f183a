package keys_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/internal/vaultclient"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/keys/keystest"
)

func TestAgeContract(t *testing.T) {
	keystest.Run(t, func(t *testing.T) keys.Store {
		dir := t.TempDir()
		id := filepath.Join(dir, "id.txt")
		if err := keys.GenerateIdentity(id, time.Now()); err != nil {
			t.Fatal(err)
		}
		s, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: id})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// appRole enables AppRole and makes a role allowed only under prefix.
func appRole(t *testing.T, v *testenv.Vault, prefix string) (roleID, secretID string) {
	t.Helper()
	v.API(t, "POST", "sys/auth/approle", map[string]any{"type": "approle"})
	policy := fmt.Sprintf(`path "secret/data/%[1]s/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/%[1]s" { capabilities = ["list"] }
path "secret/metadata/%[1]s/*" { capabilities = ["list", "read"] }`, prefix)
	v.API(t, "PUT", "sys/policies/acl/trustamp-keys", map[string]any{"policy": policy})
	v.API(t, "POST", "auth/approle/role/trustamp", map[string]any{"token_policies": []string{"trustamp-keys"}, "token_ttl": "1h"})
	role := v.API(t, "GET", "auth/approle/role/trustamp/role-id", nil)
	secret := v.API(t, "POST", "auth/approle/role/trustamp/secret-id", nil)
	return role["data"].(map[string]any)["role_id"].(string), secret["data"].(map[string]any)["secret_id"].(string)
}

func TestVaultKVContract(t *testing.T) {
	v := testenv.StartVault(t)
	var n atomic.Int64
	t.Run("Token", func(t *testing.T) {
		keystest.Run(t, func(t *testing.T) keys.Store {
			s, err := keys.NewVaultKV(keys.VaultKVConfig{Vault: vaultclient.Config{Address: v.Addr, Token: v.Token}, Path: fmt.Sprintf("token-%d", n.Add(1))})
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	roleID, secretID := appRole(t, v, "trustamp")
	t.Run("AppRole", func(t *testing.T) {
		keystest.Run(t, func(t *testing.T) keys.Store {
			s, err := keys.NewVaultKV(keys.VaultKVConfig{Vault: vaultclient.Config{Address: v.Addr, RoleID: roleID, SecretID: secretID},
				Path: fmt.Sprintf("trustamp/approle-%d", n.Add(1))})
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	// Outside its policy the role is refused, and the error names Vault's
	// answer but never the secret ID or a token.
	s, _ := keys.NewVaultKV(keys.VaultKVConfig{Vault: vaultclient.Config{Address: v.Addr, RoleID: roleID, SecretID: secretID}, Path: "elsewhere"})
	_, err := s.Get(context.Background(), "root-ca")
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), secretID) {
		t.Fatalf("read outside the policy: %v", err)
	}
	bad, _ := keys.NewVaultKV(keys.VaultKVConfig{Vault: vaultclient.Config{Address: v.Addr, RoleID: roleID, SecretID: "wrong-secret-id"}})
	if _, err := bad.Get(context.Background(), "root-ca"); err == nil || !strings.Contains(err.Error(), "AppRole login") || strings.Contains(err.Error(), "wrong-secret-id") {
		t.Fatalf("wrong secret id: %v", err)
	}
	if _, err := keys.NewVaultKV(keys.VaultKVConfig{Vault: vaultclient.Config{Address: v.Addr}}); err == nil {
		t.Fatal("a store without credentials was accepted")
	}
}
