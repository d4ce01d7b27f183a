package opamp

import (
	"context"
	"maps"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// EventSink receives security events for auto_revoke policies;
// revocation.Auto is one. It must not block: it acts in the background.
type EventSink interface {
	Event(ctx context.Context, a policies.Agent, kind string, detail map[string]string) *policies.Rule
}

// event reports a security event about a to Config.Events.
func (s *Server) event(ctx context.Context, a policies.Agent, kind string, detail map[string]string) {
	if s.cfg.Events == nil {
		return
	}
	if r := s.cfg.Events.Event(ctx, a, kind, detail); r != nil {
		s.log.Warn("auto_revoke rule acting", "uid", a.UID, "event", kind, "rule", r.Ref(), "action", r.Action)
	}
}

// eventByUID reports an event about an agent known only by uid (a refused
// handshake). Rules see the uid alone: reading the registry here would
// put a database read on every refused handshake, and a flood of those
// must cost no database work.
func (s *Server) eventByUID(ctx context.Context, uid, kind string, detail map[string]string) {
	if s.cfg.Events == nil {
		return
	}
	s.event(ctx, PolicyAgent(state.Agent{UID: uid}), kind, detail)
}

// identityChanged reports whether a description changes the identifying
// attributes a previously stored description had (a first description
// changes nothing; service.version may change), and the changed keys with
// their old and new values.
func identityChanged(stored []byte, d *protobufs.AgentDescription) (map[string]string, bool) {
	var old protobufs.AgentDescription
	if d == nil || len(stored) == 0 || protojson.Unmarshal(stored, &old) != nil || len(old.IdentifyingAttributes) == 0 {
		return nil, false
	}
	before := attributes(&protobufs.AgentDescription{IdentifyingAttributes: old.IdentifyingAttributes})
	after := attributes(&protobufs.AgentDescription{IdentifyingAttributes: d.IdentifyingAttributes})
	// An upgrade changes service.version (identifying for the Collector's
	// OpAMP extension): that is the agent doing what it was told.
	delete(before, "service.version")
	delete(after, "service.version")
	if maps.Equal(before, after) {
		return nil, false
	}
	detail := map[string]string{}
	for k, v := range before {
		if after[k] != v {
			detail[k] = v + " -> " + after[k]
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			detail[k] = " -> " + v
		}
	}
	return detail, true
}
