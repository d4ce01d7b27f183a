// Package extension is trustamp's addition to the OpAMP protocol, shared by
// the server and by agents: the io.trustamp.csr custom capability, through
// which the server asks for a CSR and an agent answers for a destination
// other than OpAMP (whose connection_settings_request carries no CSR for
// those), and the capability each destination's offers need.
package extension

import "github.com/open-telemetry/opamp-go/protobufs"

// CSRCapability is the custom capability an agent declares to be asked for
// CSRs, and the server declares to accept them.
const CSRCapability = "io.trustamp.csr"

// CustomMessage types under CSRCapability.
const (
	// CSRRequestType: server to agent, "send a fresh CSR now" (for the
	// OpAMP connection, or for CSRMessage.Destination).
	CSRRequestType = "request-csr"
	// CSRReplyType: agent to server, a CSR for another destination. A CSR
	// for the OpAMP connection goes in connection_settings_request instead.
	CSRReplyType = "csr"
)

// OpAMPDestination names the OpAMP connection among certificate destinations.
const OpAMPDestination = "opamp"

// CSRMessage is the JSON in CSRCapability custom messages, both ways.
type CSRMessage struct {
	Rotation    string `json:"rotation,omitempty"`
	Destination string `json:"destination,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// CSR is a PEM CERTIFICATE REQUEST, in an agent's reply.
	CSR string `json:"csr,omitempty"`
}

// DestinationCapability is the agent capability that accepts offers for a
// destination: own_metrics, own_traces, own_logs, or any other name (sent in
// other_connections).
func DestinationCapability(name string) protobufs.AgentCapabilities {
	switch name {
	case "own_metrics":
		return protobufs.AgentCapabilities_AgentCapabilities_ReportsOwnMetrics
	case "own_traces":
		return protobufs.AgentCapabilities_AgentCapabilities_ReportsOwnTraces
	case "own_logs":
		return protobufs.AgentCapabilities_AgentCapabilities_ReportsOwnLogs
	default:
		return protobufs.AgentCapabilities_AgentCapabilities_AcceptsOtherConnectionSettings
	}
}

// DowngradeHeader is set in DownloadableFile.headers of a package offer that
// moves an agent to a lower version on purpose (an operator pinned it lower,
// or the release it runs was withdrawn), with the value
// "from=<version it runs>;to=<offered version>". Agents refuse a lower
// version without a mark that names exactly that move, so an old offer
// replayed or cached never downgrades them.
const DowngradeHeader = "Trustamp-Downgrade"

// DowngradeMark is DowngradeHeader's value for a move from one version to
// another.
func DowngradeMark(from, to string) string { return "from=" + from + ";to=" + to }
