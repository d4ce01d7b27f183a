package tokens

import (
	"errors"
	"testing"
)

// TestSeparationOfDuties: who may mint and revoke which role. admin never
// reaches security; only security mints security; security revokes any.
func TestSeparationOfDuties(t *testing.T) {
	roles := []string{RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor}
	mint := map[string][]string{RoleAdmin: {RoleAdmin, RoleRelease, RoleAuditor}, RoleSecurity: {RoleSecurity}}
	revoke := map[string][]string{RoleAdmin: {RoleAdmin, RoleRelease, RoleAuditor}, RoleSecurity: roles}
	in := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	for _, actor := range roles {
		for _, role := range roles {
			if err := MayMint(actor, role); (err == nil) != in(mint[actor], role) || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Errorf("%s mints %s: %v", actor, role, err)
			}
			if err := MayRevoke(actor, role); (err == nil) != in(revoke[actor], role) || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Errorf("%s revokes %s: %v", actor, role, err)
			}
		}
	}
	if err := MayMint(RoleAdmin, "root"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown role: %v", err)
	}
}
