package hypervisor

// Figures of real migrations and disk copies between two local libvirt hosts (QEMU TCG), for
// docs/benchmarks.md: go test -run '^$' -bench Libvirt -benchtime 3x ./controlplane/hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

func benchConn(b *testing.B, h libvirthost.Host) *Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, h.URI, ConnOptions{Host: h.Name, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkLibvirtMigration moves a 256 MiB guest whose memory holds 192 MiB of random data
// (file-backed RAM written from outside, so that every page costs its size) back and forth
// between two hosts, uncapped and capped, and reports per migration: the time of the migrate
// call, libvirt's downtime, the rate libvirt reports, and that rate over the cap.
func BenchmarkLibvirtMigration(b *testing.B) {
	hosts := libvirthost.StartT(b, 2)
	conns := [2]*Conn{benchConn(b, hosts[0]), benchConn(b, hosts[1])}
	ctx := context.Background()
	const name, memMiB, randomMiB = "bench-mig", 256, 192
	xml := strings.Replace(libvirthost.TinyDomainXML(name, memMiB), "</memory>",
		"</memory>\n  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>", 1)
	virsh(b, hosts[0], "define", writeFile(b, "bench.xml", xml))
	if err := conns[0].Start(ctx, name); err != nil {
		b.Fatal(err)
	}
	at := 0
	for _, capMiB := range []uint64{0, 64} {
		b.Run(fmt.Sprintf("cap=%dMiBps", capMiB), func(b *testing.B) {
			var secs, downtimeMs, rate float64
			for range b.N {
				b.StopTimer()
				fillRAM(b, hosts[at], name, 32, randomMiB) // fresh data to send each time
				b.StartTimer()
				to := 1 - at
				begin := time.Now()
				if err := conns[at].Migrate(ctx, name, MigrationTarget{Host: hosts[to].Name, URI: hosts[to].TCPURI},
					MigrationParams{BandwidthMiBps: capMiB}); err != nil {
					b.Fatal(err)
				}
				secs += time.Since(begin).Seconds()
				st, err := conns[to].JobStats(ctx, name)
				if err != nil || st.Type != JobCompleted {
					b.Fatalf("completed statistics: %+v, %v", st, err)
				}
				downtimeMs += float64(st.Downtime.Milliseconds())
				rate += float64(st.DataRate) / mib
				at = to
			}
			n := float64(b.N)
			b.ReportMetric(secs/n, "s/migration")
			b.ReportMetric(downtimeMs/n, "downtime-ms")
			b.ReportMetric(rate/n, "MiB/s")
			if capMiB > 0 {
				b.ReportMetric(rate/n/float64(capMiB), "rate/cap")
			}
			b.ReportMetric(memMiB, "guest-MiB")
		})
	}
}

// BenchmarkLibvirtCopyVolume copies a 1 GiB volume holding 64 MiB of data from one host to the
// other with CopyVolume (a cold move's disk copy) and reports the rate over the volume's
// capacity.
func BenchmarkLibvirtCopyVolume(b *testing.B) {
	hosts := libvirthost.StartT(b, 2)
	src, dst := benchConn(b, hosts[0]), benchConn(b, hosts[1])
	ctx := context.Background()
	v := Volume{Name: "bench.raw", Capacity: 1 << 30, Format: "raw"}
	if err := src.PrepareVolume(ctx, v); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64*mib)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	if err := src.UploadVolume(ctx, v.Name, 256*mib, uint64(len(data)), strings.NewReader(string(data))); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(v.Capacity))
	b.ResetTimer()
	for range b.N {
		if err := CopyVolume(ctx, src, dst, v, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}
