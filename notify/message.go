package notify

import (
	"context"
	"strings"
	"time"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Message is what sinks deliver: an owner notice or an operator event. Its JSON is the body of a
// webhook request, so its field names are a contract with receivers: add fields, never rename.
type Message struct {
	// ID is stable for one notice or event ("<notice id>", "drain/<id>/<seq>"): receivers dedupe
	// on it, since delivery is at least once. Required.
	ID string `json:"id"`
	// Kind is the notice kind ("expiring", "lost") or the event type ("drain.started").
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	// Owner is the user a notice is for; empty for operator events.
	Owner  string `json:"owner"`
	Region string `json:"region"`
	Text   string `json:"text"`
	// Time is when devfleet recorded the notice or event, not when it was delivered.
	Time   time.Time         `json:"time"`
	Fields map[string]string `json:"fields,omitempty"`
}

// Sink is one destination of messages. It is defined here, where it is consumed, so that a sink
// needs nothing from this package beyond Message (and Error, to steer retries).
type Sink interface {
	// Name identifies the sink in logs, metrics and dead letters; unique within a Notifier.
	Name() string
	// Deliver sends m once. A nil error means the sink has it. An error is retried with backoff
	// unless it is an *Error that says otherwise. Deliver must return when ctx ends.
	Deliver(ctx context.Context, m Message) error
}

// NoticeMessage turns a recorded notice into a message; its ID is the notice's (stamped by the
// leader, so every leader sends the same one) and its Kind is the enum's suffix in lower case
// ("expiring", "maintenance"). The caller fills Region, which the notice does not carry.
func NoticeMessage(n *v1.Notice) Message {
	m := Message{
		ID:      n.GetId(),
		Kind:    strings.ToLower(strings.TrimPrefix(n.GetKind().String(), "NOTICE_KIND_")),
		Subject: n.GetSubject(),
		Owner:   n.GetOwner(),
		Text:    n.GetMessage(),
	}
	if n.GetCreateTime() != nil {
		m.Time = n.GetCreateTime().AsTime()
	}
	return m
}
