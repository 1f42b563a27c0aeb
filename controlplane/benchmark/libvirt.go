package benchmark

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/devfleet/devfleet/e2e/libvirthost"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
	"github.com/devfleet/devfleet/provisioner"
)

// CreateOptions configures RunCreate.
type CreateOptions struct {
	Dir        string
	Hosts      int
	Devservers int
}

// CreateReport splits the time from a CreateDevserver call to a running guest.
type CreateReport struct {
	Devservers int `json:"devservers"`
	// API is the call itself (placement and the raft write); Running is until the state says
	// running; Libvirt is libvirt's define and start alone (the provisioner's histogram), and
	// ControlPlane the rest of Running.
	APIP50           time.Duration `json:"api_p50_ns"`
	APIP99           time.Duration `json:"api_p99_ns"`
	RunningP50       time.Duration `json:"running_p50_ns"`
	RunningP99       time.Duration `json:"running_p99_ns"`
	LibvirtMean      time.Duration `json:"libvirt_mean_ns"`
	ControlPlaneMean time.Duration `json:"control_plane_mean_ns"`
	FirstRunning     time.Duration `json:"first_running_ns"`
}

// RunCreate measures devserver creates on real libvirt: it starts local libvirt hosts
// (e2e/libvirthost, so it needs root and the libvirt packages) and a 3-node cluster, creates
// devservers of a 1 vCPU, 128 MiB diskless flavor one after another, and times each from the
// call to the state saying running.
func RunCreate(ctx context.Context, o CreateOptions, out io.Writer) (CreateReport, error) {
	rep := CreateReport{Devservers: o.Devservers}
	if err := libvirthost.EnsurePackages(ctx, out); err != nil {
		return rep, err
	}
	hosts, err := libvirthost.Start(ctx, libvirthost.Options{N: o.Hosts, Dir: o.Dir + "/hosts"})
	if err != nil {
		return rep, err
	}
	defer hosts.Stop(context.Background())
	b, err := startBenchFleet(ctx, o.Dir+"/devfleet", "lab", "lab-1")
	if err != nil {
		return rep, err
	}
	defer b.close()
	c, fleet := b.c, b.fleet
	if _, err := fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "tiny", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 128}}}); err != nil {
		return rep, err
	}
	for _, h := range hosts.Hosts() {
		if err := b.host(ctx, "lab-"+h.Name, h.URI, &v1.Resources{Vcpus: 2, MemoryMib: 4096, DiskGib: 10}, &v1.Overcommit{Cpu: 8}); err != nil {
			return rep, err
		}
	}
	var api, running []time.Duration
	for i := range o.Devservers {
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		if _, err := fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{
			Name: name, Owner: "bench", Flavor: "tiny", Region: "lab", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}); err != nil {
			return rep, err
		}
		api = append(api, time.Since(start))
		for {
			d, err := fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: name, Stale: true})
			if err != nil {
				return rep, err
			}
			if d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING {
				break
			}
			if time.Since(start) > time.Minute {
				return rep, fmt.Errorf("devserver %s not running after 1m: %s", name, d.GetStateReason())
			}
			time.Sleep(2 * time.Millisecond)
		}
		running = append(running, time.Since(start))
	}
	rep.FirstRunning = running[0]
	sum, n := libvirtTime(c)
	if n > 0 {
		rep.LibvirtMean = sum / time.Duration(n)
	}
	var total time.Duration
	for _, r := range running {
		total += r
	}
	rep.ControlPlaneMean = total/time.Duration(len(running)) - rep.LibvirtMean
	q := func(ds []time.Duration, p float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	rep.APIP50, rep.APIP99 = q(api, 0.5), q(api, 0.99)
	rep.RunningP50, rep.RunningP99 = q(running, 0.5), q(running, 0.99)
	fmt.Fprintf(out, "devfleet: 3 nodes on loopback, %d real libvirt hosts (TCG); %d devservers (1 vCPU, 128 MiB, diskless) created one at a time\n", o.Hosts, o.Devservers)
	fmt.Fprintf(out, "create -> running: p50 %s, p99 %s (the first, on fresh daemons: %s)\n", rep.RunningP50.Round(time.Millisecond), rep.RunningP99.Round(time.Millisecond), rep.FirstRunning.Round(time.Millisecond))
	fmt.Fprintf(out, "  API call (placement + raft): p50 %s, p99 %s\n", rep.APIP50.Round(10*time.Microsecond), rep.APIP99.Round(10*time.Microsecond))
	fmt.Fprintf(out, "  libvirt define+start: mean %s; control plane (API, provisioner pickup, raft writes): mean %s\n", rep.LibvirtMean.Round(time.Millisecond), rep.ControlPlaneMean.Round(time.Millisecond))
	return rep, nil
}

// libvirtTime reads the leader's define-and-start histogram: total time and count.
func libvirtTime(c *Cluster) (time.Duration, uint64) {
	families, err := c.Leader().Registry().Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range families {
		if mf.GetName() != provisioner.LibvirtSecondsMetric {
			continue
		}
		var sum float64
		var n uint64
		for _, m := range mf.GetMetric() {
			if kindIs(m, "devserver") {
				sum += m.GetHistogram().GetSampleSum()
				n += m.GetHistogram().GetSampleCount()
			}
		}
		return time.Duration(sum * float64(time.Second)), n
	}
	return 0, 0
}

func kindIs(m *dto.Metric, kind string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == "kind" && l.GetValue() == kind {
			return true
		}
	}
	return false
}
