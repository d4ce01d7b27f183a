package opamp

import "sync"

// registry tracks live WebSocket connections per agent uid, so the server can
// push to an agent or cut it off. Plain-HTTP agents have no live connection
// between requests and are not tracked.
type registry struct {
	mu    sync.Mutex
	byUID map[string]map[*conn]struct{}
}

func newRegistry() *registry {
	return &registry{byUID: map[string]map[*conn]struct{}{}}
}

func (r *registry) add(uid string, c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byUID[uid] == nil {
		r.byUID[uid] = map[*conn]struct{}{}
	}
	r.byUID[uid][c] = struct{}{}
}

// newest returns one live connection of uid (any will do: each is the
// same agent), or nil.
func (r *registry) newest(uid string) *conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *conn
	for c := range r.byUID[uid] {
		if best == nil || c.since.After(best.since) {
			best = c
		}
	}
	return best
}

func (r *registry) remove(uid string, c *conn) {
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

// disconnectCerts closes the connections of each uid whose certificate is
// one of its serials.
func (r *registry) disconnectCerts(certs map[string][]string) map[string]int {
	var victims []*conn
	closed := map[string]int{}
	r.mu.Lock()
	for uid, serials := range certs {
		for _, serial := range serials {
			closed[serial] += 0
		}
		for c := range r.byUID[uid] {
			for _, serial := range serials {
				if c.certSerial == serial {
					victims = append(victims, c)
					closed[serial]++
					delete(r.byUID[uid], c)
				}
			}
		}
		if len(r.byUID[uid]) == 0 {
			delete(r.byUID, uid)
		}
	}
	r.mu.Unlock()
	for _, c := range victims {
		c.live.Disconnect()
	}
	return closed
}

func (r *registry) disconnect(uid string) int {
	r.mu.Lock()
	conns := r.byUID[uid]
	delete(r.byUID, uid)
	r.mu.Unlock()
	for c := range conns {
		c.live.Disconnect()
	}
	return len(conns)
}

// all returns every live connection.
func (r *registry) all() []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*conn
	for _, conns := range r.byUID {
		for c := range conns {
			out = append(out, c)
		}
	}
	return out
}
