package opamp

import (
	"testing"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/storage/state"
)

func kv(k, v string) *protobufs.KeyValue {
	return &protobufs.KeyValue{Key: k, Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}}}
}

func TestIdentityChanged(t *testing.T) {
	stored, _ := protojson.Marshal(&protobufs.AgentDescription{
		IdentifyingAttributes:    []*protobufs.KeyValue{kv("service.name", "otelcol"), kv("host.name", "web-1")},
		NonIdentifyingAttributes: []*protobufs.KeyValue{kv("os.type", "linux")}})
	same := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{kv("host.name", "web-1"), kv("service.name", "otelcol"), kv("service.version", "2.0.0")},
		NonIdentifyingAttributes: []*protobufs.KeyValue{kv("os.type", "darwin")}}
	if _, changed := identityChanged(stored, same); changed {
		t.Fatal("reordered identifying attributes, a new service.version and a changed non-identifying attribute counted as an identity change")
	}
	moved := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{kv("service.name", "otelcol"), kv("host.name", "web-2"), kv("cloud.region", "eu")}}
	detail, changed := identityChanged(stored, moved)
	if !changed || detail["host.name"] != "web-1 -> web-2" || detail["cloud.region"] != " -> eu" || len(detail) != 2 {
		t.Fatalf("changed=%v detail=%v", changed, detail)
	}
	if _, changed := identityChanged(nil, moved); changed {
		t.Fatal("a first description counted as a change")
	}
	if _, changed := identityChanged(stored, nil); changed {
		t.Fatal("a message without a description counted as a change")
	}
}

func TestPolicyAgentView(t *testing.T) {
	desc, _ := protojson.Marshal(&protobufs.AgentDescription{
		IdentifyingAttributes:    []*protobufs.KeyValue{kv("service.name", "otelcol"), kv("service.version", "1.0.0")},
		NonIdentifyingAttributes: []*protobufs.KeyValue{kv("os.type", "linux"), kv("host.arch", "arm64")}})
	st, _ := protojson.Marshal(&protobufs.PackageStatuses{Packages: map[string]*protobufs.PackageStatus{"": {AgentHasVersion: "1.1.0"}}})
	health, _ := protojson.Marshal(&protobufs.ComponentHealth{Healthy: true})
	caps := uint64(protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus | protobufs.AgentCapabilities_AgentCapabilities_AcceptsPackages)
	a := PolicyAgent(stateAgent(desc, st, health, caps, map[string]string{LabelPackagePlatform: "linux/amd64"}))
	if a.Type != "otelcol" || a.Platform != "linux/amd64" || a.Packages[""] != "1.1.0" || !a.Healthy {
		t.Fatalf("view %+v", a)
	}
	if len(a.Capabilities) != 3 || a.Capabilities[0] != "AcceptsPackages" || a.Capabilities[1] != "ReportsStatus" || a.Capabilities[2] != CSRCapability {
		t.Fatalf("capabilities %v", a.Capabilities)
	}
}

func stateAgent(desc, statuses, health []byte, caps uint64, labels map[string]string) state.Agent {
	return state.Agent{UID: "u", Description: desc, PackageStatuses: statuses, Health: health, Capabilities: caps,
		Labels: labels, CustomCapabilities: []string{CSRCapability}}
}
