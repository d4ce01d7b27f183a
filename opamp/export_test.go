package opamp

// HoldEnrollSlots takes every free enrollment slot, as that many CSRs in
// progress would, and returns the function that gives them back.
func (s *Server) HoldEnrollSlots() (release func()) {
	var releases []func()
	for {
		r, ok := s.acquireEnroll()
		if !ok {
			break
		}
		releases = append(releases, r)
	}
	return func() {
		for _, r := range releases {
			r()
		}
	}
}
