package state

import (
	"fmt"
	"strings"
)

// listing names the blockers of a refusal: `2 hosts (h1, h2)` or `12 hosts (h1, ..., h5 and 7 more)`.
func listing(kind string, names []string, total int) string {
	plural := kind + "s"
	if total == 1 {
		plural = kind
	}
	more := ""
	if total > len(names) {
		more = fmt.Sprintf(" and %d more", total-len(names))
	}
	return fmt.Sprintf("%d %s (%s%s)", total, plural, strings.Join(names, ", "), more)
}
