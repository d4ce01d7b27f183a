package opamp

import (
	"sort"
	"strings"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// PolicyAgent is what policy rules see of an agent, built from its registry
// row: the same view for live decisions on a connection and for `policy
// simulate` over the whole registry, so a simulation predicts what the
// server will do.
//
// Type and Platform follow package targeting: the package.type and
// package.platform labels, else service.name and os.type/host.arch.
// Packages holds the versions it reports running by package name, "" being
// its own (service.version until it reports package statuses).
func PolicyAgent(a state.Agent) policies.Agent {
	return agentView(a, attributesJSON(a.Description))
}

// agentView is PolicyAgent with the description's attributes given.
func agentView(a state.Agent, attrs map[string]string) policies.Agent {
	if attrs == nil {
		attrs = map[string]string{}
	}
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	out := policies.Agent{UID: a.UID, Labels: labels, Attributes: attrs, Connected: a.Connected,
		Type: labels[LabelPackageType], Platform: labels[LabelPackagePlatform],
		Capabilities: capabilityNames(a.Capabilities, a.CustomCapabilities),
		Packages:     map[string]string{}}
	if out.Type == "" {
		out.Type = attrs["service.name"]
	}
	if out.Platform == "" && attrs["os.type"] != "" && attrs["host.arch"] != "" {
		out.Platform = attrs["os.type"] + "/" + attrs["host.arch"]
	}
	if v := attrs["service.version"]; v != "" {
		out.Packages[""] = v
	}
	var st protobufs.PackageStatuses
	if len(a.PackageStatuses) > 0 && protojson.Unmarshal(a.PackageStatuses, &st) == nil {
		for name, ps := range st.GetPackages() {
			if ps.GetAgentHasVersion() != "" {
				out.Packages[name] = ps.GetAgentHasVersion()
			}
		}
	}
	var h protobufs.ComponentHealth
	if len(a.Health) > 0 && protojson.Unmarshal(a.Health, &h) == nil {
		out.Healthy = h.GetHealthy()
	}
	return out
}

// capabilityNames are the agent's OpAMP capabilities by their short names
// ("AcceptsPackages"), then its custom capabilities, sorted.
func capabilityNames(caps uint64, custom []string) []string {
	out := []string{}
	for caps != 0 {
		bit := caps & -caps
		caps &^= bit
		name, ok := protobufs.AgentCapabilities_name[int32(bit)]
		if !ok {
			continue
		}
		out = append(out, strings.TrimPrefix(name, "AgentCapabilities_"))
	}
	sort.Strings(out)
	return append(out, custom...)
}
