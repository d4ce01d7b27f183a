package ca

import (
	"fmt"
	"regexp"
	"strings"
)

// SAN templates add DNS SANs built from an agent's description attributes,
// where a profile lists them: "{host.name}.agents.example.com". The values
// come from the agent, so each placeholder must expand to exactly one DNS
// label (letters, digits, dashes): an agent can choose its label but cannot
// add labels, dots or a different suffix. The template's fixed part should
// therefore pin a domain the operator controls.

var (
	placeholder = regexp.MustCompile(`\{([A-Za-z0-9_.\-]+)\}`)
	dnsLabel    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// RenderSANs expands the profile's SAN templates with attrs. A template whose
// attribute is missing, or whose value is not a single DNS label, refuses the
// issuance with the reason: a certificate silently missing a SAN its relying
// parties expect would fail later and less clearly.
func (p Profile) RenderSANs(attrs map[string]string) ([]string, error) {
	var out []string
	for _, tmpl := range p.SANTemplates {
		var bad error
		name := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
			key := m[1 : len(m)-1]
			v, ok := attrs[key]
			v = strings.ToLower(v)
			switch {
			case !ok:
				bad = refuse("SAN template %q needs agent attribute %q, which the agent did not report", tmpl, key)
			case !dnsLabel.MatchString(v):
				bad = refuse("agent attribute %s=%q is not a single DNS label, as SAN template %q requires", key, v, tmpl)
			}
			return v
		})
		if bad != nil {
			return nil, bad
		}
		out = append(out, name)
	}
	return out, nil
}

// validateSANTemplates checks templates at configuration time.
func validateSANTemplates(name string, templates []string) error {
	for _, t := range templates {
		if !placeholder.MatchString(t) {
			return fmt.Errorf("profile %s: SAN template %q has no {attribute} placeholder (use a fixed name in a server certificate, not an agent one)", name, t)
		}
		fixed := placeholder.ReplaceAllString(t, "x")
		for _, label := range strings.Split(fixed, ".") {
			if !dnsLabel.MatchString(label) {
				return fmt.Errorf("profile %s: SAN template %q does not make a DNS name", name, t)
			}
		}
	}
	return nil
}
