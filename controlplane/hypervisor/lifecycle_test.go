package hypervisor

import (
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

func TestLifecycleEvent(t *testing.T) {
	tests := []struct {
		event, detail int32
		want          EventType
		wantDetail    string
	}{
		{int32(libvirt.DomainEventDefined), 0, EventDefined, "added"},
		{int32(libvirt.DomainEventUndefined), 0, EventUndefined, "removed"},
		{int32(libvirt.DomainEventStarted), 0, EventStarted, "booted"},
		{int32(libvirt.DomainEventStarted), 1, EventStarted, "migrated"},
		{int32(libvirt.DomainEventStopped), 1, EventStopped, "destroyed"},
		{int32(libvirt.DomainEventStopped), 3, EventStopped, "migrated"},
		{int32(libvirt.DomainEventStopped), 2, EventCrashed, "crashed"},
		{int32(libvirt.DomainEventStopped), 5, EventCrashed, "failed"},
		{int32(libvirt.DomainEventShutdown), 0, EventShutdown, "finished"},
		{int32(libvirt.DomainEventCrashed), 0, EventCrashed, "panicked"},
		{int32(libvirt.DomainEventSuspended), 0, EventSuspended, "paused"},
		{int32(libvirt.DomainEventStopped), 99, EventStopped, "detail 99"},
		{42, 0, "event 42", ""},
	}
	at := time.Unix(1700000000, 0)
	for _, tt := range tests {
		msg := libvirt.DomainEventLifecycleMsg{Dom: libvirt.Domain{Name: "d1", UUID: libvirt.UUID{1}}, Event: tt.event, Detail: tt.detail}
		ev := lifecycleEvent("h1", msg, at)
		if ev.Type != tt.want || ev.Detail != tt.wantDetail || ev.Host != "h1" || ev.Domain != "d1" || !ev.Time.Equal(at) ||
			ev.UUID != "01000000-0000-0000-0000-000000000000" {
			t.Errorf("lifecycleEvent(%d, %d) = %+v, want %s/%s", tt.event, tt.detail, ev, tt.want, tt.wantDetail)
		}
	}
}

func TestDomainState(t *testing.T) {
	for s, want := range map[libvirt.DomainState]State{
		libvirt.DomainNostate: StateUnknown, libvirt.DomainRunning: StateRunning, libvirt.DomainBlocked: StateRunning,
		libvirt.DomainPaused: StatePaused, libvirt.DomainShutdown: StateRunning, libvirt.DomainShutoff: StateShutOff,
		libvirt.DomainCrashed: StateCrashed, libvirt.DomainPmsuspended: StatePaused,
	} {
		if got := domainState(s); got != want {
			t.Errorf("domainState(%v) = %v, want %v", s, got, want)
		}
	}
}
