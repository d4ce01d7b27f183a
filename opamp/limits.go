package opamp

import (
	"fmt"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"
)

// Limits bound what one agent can make the server hold or store. Every
// field's zero value means its default; the defaults fit real agents (an
// OpenTelemetry collector's description is a few dozen flat attributes and
// its effective config tens of KiB) with a wide margin, and keep the worst
// case per message small enough that max_concurrent_enrollments hostile
// connections cannot exhaust memory.
type Limits struct {
	// MessageSize bounds one AgentToServer message in bytes, measured after
	// decompression, on both transports. Zero means 4 MiB: the OpAMP
	// specification lets servers accept up to 64 MiB, but trustamp's
	// messages carry a CSR, a description, a health report, package
	// statuses and an effective-config hash's input, all far below 4 MiB;
	// 256 enrolling connections at the limit hold 1 GiB at most.
	MessageSize int64
	// NestingDepth bounds the nesting of AnyValue arrays and key-value
	// lists in the agent description and of component health maps. Zero
	// means 16 (real descriptions are flat; collector health is 3 deep).
	NestingDepth int
	// DescriptionAttributes bounds the key-values and array elements of
	// the agent description, counted at every level. Zero means 512.
	DescriptionAttributes int
	// DescriptionSize bounds the agent description's encoded size in
	// bytes. Zero means 64 KiB.
	DescriptionSize int
	// HealthSize bounds the health report's encoded size in bytes. Zero
	// means 256 KiB.
	HealthSize int
	// EffectiveConfigSize bounds the effective config's encoded size in
	// bytes. Zero means 1 MiB.
	EffectiveConfigSize int
	// PackageStatuses bounds the number of package statuses in a message.
	// Zero means 256.
	PackageStatuses int
	// PackageStatusSize bounds the encoded size in bytes of one package
	// status (its name, versions, hashes and error message). Zero means
	// 4 KiB.
	PackageStatusSize int
}

// withDefaults fills zero fields.
func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MessageSize <= 0 {
		l.MessageSize = 4 << 20
	}
	def(&l.NestingDepth, 16)
	def(&l.DescriptionAttributes, 512)
	def(&l.DescriptionSize, 64<<10)
	def(&l.HealthSize, 256<<10)
	def(&l.EffectiveConfigSize, 1<<20)
	def(&l.PackageStatuses, 256)
	def(&l.PackageStatusSize, 4<<10)
	return l
}

// LimitError says which limit a message exceeded. It is sent to the agent
// as a BadRequest, so it names the config key.
type LimitError struct {
	What  string // what was measured, e.g. "agent_description nesting depth"
	Key   string // the config key, e.g. "opamp.limits.nesting_depth"
	Limit int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("opamp: %s over the limit %s = %d; message refused", e.What, e.Key, e.Limit)
}

// check refuses a message that exceeds a limit. It runs before anything in
// the message is used, so a refused message changes no state. Sizes are
// computed by proto.Size, which is linear in the (already bounded) message.
func (l Limits) check(msg *protobufs.AgentToServer) error {
	if d := msg.GetAgentDescription(); d != nil {
		if n := proto.Size(d); n > l.DescriptionSize {
			return &LimitError{"agent_description size", "opamp.limits.description_size", int64(l.DescriptionSize)}
		}
		w := anyWalker{maxDepth: l.NestingDepth, maxCount: l.DescriptionAttributes}
		w.keyValues(d.IdentifyingAttributes, 1)
		w.keyValues(d.NonIdentifyingAttributes, 1)
		if w.tooDeep {
			return &LimitError{"agent_description nesting depth", "opamp.limits.nesting_depth", int64(l.NestingDepth)}
		}
		if w.count > l.DescriptionAttributes {
			return &LimitError{"agent_description attribute count", "opamp.limits.description_attributes", int64(l.DescriptionAttributes)}
		}
	}
	if h := msg.GetHealth(); h != nil {
		if proto.Size(h) > l.HealthSize {
			return &LimitError{"health size", "opamp.limits.health_size", int64(l.HealthSize)}
		}
		if healthDepth(h, 1, l.NestingDepth) > l.NestingDepth {
			return &LimitError{"health nesting depth", "opamp.limits.nesting_depth", int64(l.NestingDepth)}
		}
	}
	if c := msg.GetEffectiveConfig(); c != nil && proto.Size(c) > l.EffectiveConfigSize {
		return &LimitError{"effective_config size", "opamp.limits.effective_config_size", int64(l.EffectiveConfigSize)}
	}
	if ps := msg.GetPackageStatuses(); ps != nil {
		if len(ps.Packages) > l.PackageStatuses {
			return &LimitError{"package_statuses count", "opamp.limits.package_statuses", int64(l.PackageStatuses)}
		}
		for name, p := range ps.Packages {
			if len(name)+proto.Size(p) > l.PackageStatusSize {
				return &LimitError{"package status size", "opamp.limits.package_status_size", int64(l.PackageStatusSize)}
			}
		}
		if len(ps.ServerProvidedAllPackagesHash) > l.PackageStatusSize {
			return &LimitError{"package_statuses hash size", "opamp.limits.package_status_size", int64(l.PackageStatusSize)}
		}
	}
	return nil
}

// anyWalker counts and measures the depth of AnyValue trees, stopping as
// soon as either limit is passed so a hostile tree costs no more than the
// limits.
type anyWalker struct {
	maxDepth, maxCount int
	count              int
	tooDeep            bool
}

func (w *anyWalker) stop() bool { return w.tooDeep || w.count > w.maxCount }

func (w *anyWalker) keyValues(kvs []*protobufs.KeyValue, depth int) {
	for _, kv := range kvs {
		if w.stop() {
			return
		}
		w.count++
		w.value(kv.GetValue(), depth)
	}
}

func (w *anyWalker) value(v *protobufs.AnyValue, depth int) {
	if w.stop() || v == nil {
		return
	}
	switch x := v.Value.(type) {
	case *protobufs.AnyValue_KvlistValue:
		if depth >= w.maxDepth {
			w.tooDeep = true
			return
		}
		w.keyValues(x.KvlistValue.GetValues(), depth+1)
	case *protobufs.AnyValue_ArrayValue:
		if depth >= w.maxDepth {
			w.tooDeep = true
			return
		}
		for _, e := range x.ArrayValue.GetValues() {
			if w.stop() {
				return
			}
			w.count++
			w.value(e, depth+1)
		}
	}
}

// healthDepth returns the nesting depth of a health report, or max+1 as
// soon as it passes max.
func healthDepth(h *protobufs.ComponentHealth, depth, limit int) int {
	if depth > limit {
		return depth
	}
	deepest := depth
	for _, c := range h.GetComponentHealthMap() {
		if d := healthDepth(c, depth+1, limit); d > deepest {
			deepest = d
			if d > limit {
				return d
			}
		}
	}
	return deepest
}
