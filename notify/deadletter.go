package notify

import (
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/devfleet/devfleet/controlplane/validate"
)

// DeadLetter is a message that a sink refused for good or that ran out of attempts.
type DeadLetter struct {
	Sink     string  `json:"sink"`
	Message  Message `json:"message"`
	Attempts int     `json:"attempts"`
	// LastError is text, not an error, so that the leader can record it in replicated state; it
	// passes validate.Text with validate.MaxReasonLen.
	LastError string    `json:"last_error"`
	Time      time.Time `json:"time"`
}

// DeadLetters returns the latest dead letters, oldest first (at most Config.MaxDeadLetters).
func (n *Notifier) DeadLetters() []DeadLetter {
	n.deadMu.Lock()
	defer n.deadMu.Unlock()
	out := make([]DeadLetter, len(n.dead))
	copy(out, n.dead)
	return out
}

func (n *Notifier) bury(t *target, m Message, attempts int, err error) {
	d := DeadLetter{Sink: t.name, Message: m, Attempts: attempts, LastError: reason(err), Time: n.cfg.Now()}
	n.deadMu.Lock()
	if extra := len(n.dead) + 1 - n.cfg.MaxDeadLetters; extra > 0 {
		n.dead = slices.Delete(n.dead, 0, extra)
	}
	n.dead = append(n.dead, d)
	n.deadMu.Unlock()
	n.metrics.dead.WithLabelValues(t.name).Inc()
	n.log.Error("message not delivered; giving up", "sink", t.name, "message", m.ID, "kind", m.Kind,
		"attempts", attempts, "permanent", IsPermanent(err), "error", err)
	if n.cfg.OnDeadLetter != nil {
		n.cfg.OnDeadLetter(d)
	}
}

// reason renders err as text the state accepts as a reason (validate.Text with MaxReasonLen):
// printable, valid UTF-8 and bounded, whatever a sink or a receiver put in it.
func reason(err error) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.ToValidUTF8(err.Error(), "?"))
	if len(s) > validate.MaxReasonLen {
		cut := validate.MaxReasonLen - len("…")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
