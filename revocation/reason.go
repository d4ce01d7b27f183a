package revocation

import (
	"fmt"
	"sort"
	"strings"
)

// Reasons are the RFC 5280 CRLReason names trustamp accepts, with their
// codes. removeFromCRL (8) is how a CRL lifts a hold, not a reason to give;
// aACompromise (10) concerns attribute certificates, which trustamp does not
// issue.
var reasons = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"certificateHold":      6,
	"privilegeWithdrawn":   9,
}

// Hold is the one reason that can be undone.
const Hold = "certificateHold"

// ReasonCode returns the RFC 5280 code of a reason name, or an error that
// lists the valid names.
func ReasonCode(name string) (int, error) {
	if c, ok := reasons[name]; ok {
		return c, nil
	}
	return 0, fmt.Errorf("unknown revocation reason %q (want one of %s)", name, strings.Join(ReasonNames(), ", "))
}

// ReasonNames lists the accepted reasons in code order.
func ReasonNames() []string {
	out := make([]string, 0, len(reasons))
	for n := range reasons {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return reasons[out[i]] < reasons[out[j]] })
	return out
}
