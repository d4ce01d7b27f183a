package opamp

import (
	"sync"

	"github.com/open-telemetry/opamp-go/server/types"
)

// registry tracks live WebSocket connections per agent uid, so the server can
// push to an agent or cut it off. Plain-HTTP agents have no live connection
// between requests and are not tracked.
type registry struct {
	mu    sync.Mutex
	byUID map[string]map[types.Connection]struct{}
}

func newRegistry() *registry {
	return &registry{byUID: map[string]map[types.Connection]struct{}{}}
}

func (r *registry) add(uid string, c types.Connection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byUID[uid] == nil {
		r.byUID[uid] = map[types.Connection]struct{}{}
	}
	r.byUID[uid][c] = struct{}{}
}

func (r *registry) remove(uid string, c types.Connection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byUID[uid], c)
	if len(r.byUID[uid]) == 0 {
		delete(r.byUID, uid)
	}
}

func (r *registry) count(uid string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byUID[uid])
}

func (r *registry) disconnect(uid string) int {
	r.mu.Lock()
	conns := r.byUID[uid]
	delete(r.byUID, uid)
	r.mu.Unlock()
	for c := range conns {
		c.Disconnect()
	}
	return len(conns)
}
