package revocation

import (
	"sync"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// entry is what a handshake needs to know about a revoked certificate.
type entry struct {
	uid       string
	reason    string
	revokedAt time.Time
}

// set is the in-memory revocation set consulted on every handshake, so the
// check costs no database round trip. It is rebuilt from the store at start
// and kept current by local revocations and by the change feed (revocations
// made on other replicas).
type set struct {
	mu      sync.RWMutex
	serials map[string]entry
}

func newSet() *set { return &set{serials: map[string]entry{}} }

func (s *set) lookup(serial string) (entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.serials[serial]
	return e, ok
}

// apply records revocations in force and forgets undone ones. It returns
// the serials newly revoked, by agent uid: the connections to close.
func (s *set) apply(rs []state.Revocation) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	added := map[string][]string{}
	for _, r := range rs {
		if !r.UndoneAt.IsZero() {
			delete(s.serials, r.Serial)
			continue
		}
		if _, ok := s.serials[r.Serial]; !ok {
			added[r.UID] = append(added[r.UID], r.Serial)
		}
		s.serials[r.Serial] = entry{uid: r.UID, reason: r.Reason, revokedAt: r.RevokedAt}
	}
	return added
}

// replace swaps in a fresh set read from the store (certificates past their
// expiry are left out: nobody can present them).
func (s *set) replace(rs []state.RevokedSerial) {
	m := make(map[string]entry, len(rs))
	for _, r := range rs {
		m[r.Serial] = entry{uid: r.UID, reason: r.Reason, revokedAt: r.RevokedAt}
	}
	s.mu.Lock()
	s.serials = m
	s.mu.Unlock()
}

func (s *set) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.serials)
}
