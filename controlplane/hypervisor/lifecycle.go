package hypervisor

import (
	"strconv"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
)

// lifecycleDetails names libvirt's lifecycle event details (virDomainEvent*DetailType), by event.
var lifecycleDetails = map[libvirt.DomainEventType][]string{
	libvirt.DomainEventDefined:     {"added", "updated", "renamed", "from snapshot"},
	libvirt.DomainEventUndefined:   {"removed", "renamed"},
	libvirt.DomainEventStarted:     {"booted", "migrated", "restored", "from snapshot", "wakeup", "recreated"},
	libvirt.DomainEventSuspended:   {"paused", "migrated", "ioerror", "watchdog", "restored", "from snapshot", "api error", "postcopy", "postcopy failed"},
	libvirt.DomainEventResumed:     {"unpaused", "migrated", "from snapshot", "postcopy", "postcopy failed"},
	libvirt.DomainEventStopped:     {"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "recreated"},
	libvirt.DomainEventShutdown:    {"finished", "guest", "host"},
	libvirt.DomainEventPmsuspended: {"memory", "disk"},
	libvirt.DomainEventCrashed:     {"panicked", "crashloaded"},
}

// lifecycleTypes maps libvirt's lifecycle events to ours.
var lifecycleTypes = map[libvirt.DomainEventType]EventType{
	libvirt.DomainEventDefined:     EventDefined,
	libvirt.DomainEventUndefined:   EventUndefined,
	libvirt.DomainEventStarted:     EventStarted,
	libvirt.DomainEventSuspended:   EventSuspended,
	libvirt.DomainEventResumed:     EventResumed,
	libvirt.DomainEventStopped:     EventStopped,
	libvirt.DomainEventShutdown:    EventShutdown,
	libvirt.DomainEventPmsuspended: EventPMSuspended,
	libvirt.DomainEventCrashed:     EventCrashed,
}

// lifecycleEvent translates a libvirt lifecycle event. A stop because qemu crashed or failed is
// EventCrashed, since that is what the health controller acts on; Detail keeps libvirt's word.
func lifecycleEvent(host string, msg libvirt.DomainEventLifecycleMsg, at time.Time) Event {
	t := libvirt.DomainEventType(msg.Event)
	typ, ok := lifecycleTypes[t]
	if !ok {
		typ = EventType("event " + strconv.Itoa(int(msg.Event)))
	}
	detail := ""
	if names := lifecycleDetails[t]; msg.Detail >= 0 && int(msg.Detail) < len(names) {
		detail = names[msg.Detail]
	} else if msg.Detail != 0 {
		detail = "detail " + strconv.Itoa(int(msg.Detail))
	}
	if typ == EventStopped && (detail == "crashed" || detail == "failed") {
		typ = EventCrashed
	}
	return Event{
		Host: host, Domain: msg.Dom.Name, UUID: uuid.UUID(msg.Dom.UUID).String(),
		Type: typ, Detail: detail, Time: at,
	}
}

// domainState reduces libvirt's domain state (virDomainState).
func domainState(s libvirt.DomainState) State {
	switch s {
	case libvirt.DomainRunning, libvirt.DomainBlocked, libvirt.DomainShutdown:
		return StateRunning
	case libvirt.DomainPaused, libvirt.DomainPmsuspended:
		return StatePaused
	case libvirt.DomainShutoff:
		return StateShutOff
	case libvirt.DomainCrashed:
		return StateCrashed
	default:
		return StateUnknown
	}
}
