package analyzer

import "time"

// Since is the oldest time the source holds, when it has a start (a recording does): an
// analyzer looking back further clamps its window to it.
func (e *Env) Since() (time.Time, bool) {
	if s, ok := e.src.(interface{ Since() time.Time }); ok {
		return s.Since(), true
	}
	return time.Time{}, false
}
