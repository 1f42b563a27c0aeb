package provisioner

import (
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// step is the one thing the provisioner does next for a devserver.
type step string

const (
	stepNone   step = ""
	stepCreate step = "create" // define and start the guest, then record it running
	stepDelete step = "delete" // destroy and undefine the guest, then purge the record
	stepStop   step = "stop"   // shut the guest down, then record it stopped
	stepStart  step = "start"  // start the stopped guest, then record it running
	stepRepair step = "repair" // place a lost devserver again and record its new home
)

// next decides what a devserver needs, from the state alone. A lost devserver is placed again
// wherever there is room; anything else waits while its host is one devfleet does not drive or
// one whose libvirt cannot be reached.
func next(d *v1.Devserver, h *v1.Host, f *v1.Flavor) step {
	if d.GetState() == v1.DevserverState_DEVSERVER_STATE_LOST && !state.Deleting(d) {
		if f != nil && f.GetRepair() == v1.RepairPolicy_REPAIR_POLICY_RECREATE {
			return stepRepair
		}
		return stepNone
	}
	if h == nil || !state.Managed(h) || h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY {
		return stepNone
	}
	if state.Deleting(d) {
		return stepDelete
	}
	on := d.GetPower() == v1.Power_POWER_ON
	switch d.GetState() {
	case v1.DevserverState_DEVSERVER_STATE_PROVISIONING:
		return stepCreate
	case v1.DevserverState_DEVSERVER_STATE_RUNNING:
		if !on {
			return stepStop
		}
	case v1.DevserverState_DEVSERVER_STATE_STOPPED:
		if on {
			return stepStart
		}
	}
	return stepNone
}
