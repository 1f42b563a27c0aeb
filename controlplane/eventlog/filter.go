package eventlog

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Filter selects events. An empty list selects all; with both lists an event must match both.
type Filter struct {
	// Topics: the event's topic is one of these (host, devserver, ...).
	Topics []string
	// Keys: the event's key (the object's name or ID) is one of these.
	Keys []string
}

// matcher is a Filter compiled once per Read or Subscription.
type matcher struct {
	topics, keys map[string]struct{}
}

func (f Filter) compile() matcher {
	set := func(l []string) map[string]struct{} {
		if len(l) == 0 {
			return nil
		}
		m := make(map[string]struct{}, len(l))
		for _, s := range l {
			m[s] = struct{}{}
		}
		return m
	}
	return matcher{topics: set(f.Topics), keys: set(f.Keys)}
}

func (m matcher) all() bool { return m.topics == nil && m.keys == nil }

func (m matcher) match(topic, key string) bool {
	if m.topics != nil {
		if _, ok := m.topics[topic]; !ok {
			return false
		}
	}
	if m.keys != nil {
		if _, ok := m.keys[key]; !ok {
			return false
		}
	}
	return true
}

// The field numbers of topic and key, taken from the generated descriptor so that a renumbered
// proto cannot silently break filtering.
var (
	topicField = fieldNumber("topic")
	keyField   = fieldNumber("key")
)

func fieldNumber(name string) protowire.Number {
	fd := (&devfleetv1.Event{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		panic("eventlog: devfleetv1.Event has no field " + name)
	}
	return fd.Number()
}

// matchRaw tells whether a stored event matches without decoding it: a filtered replay over a
// large history skips what it does not want without allocating the objects.
func (m matcher) matchRaw(b []byte) (bool, error) {
	if m.all() {
		return true, nil
	}
	topic, key, err := rawTopicKey(b)
	if err != nil {
		return false, err
	}
	// The map lookups with string(bytes) do not allocate.
	if m.topics != nil {
		if _, ok := m.topics[string(topic)]; !ok {
			return false, nil
		}
	}
	if m.keys != nil {
		if _, ok := m.keys[string(key)]; !ok {
			return false, nil
		}
	}
	return true, nil
}

// rawTopicKey reads a stored event's topic and key without decoding the rest (the last
// occurrence of a field wins, as in a decode).
func rawTopicKey(b []byte) (topic, key []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("stored event: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == topicField || num == keyField) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, fmt.Errorf("stored event: %w", protowire.ParseError(n))
			}
			if num == topicField {
				topic = v
			} else {
				key = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, nil, fmt.Errorf("stored event: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return topic, key, nil
}
