package controlplane

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the GOGC devfleet's binaries run with unless GOGC is set: the apply path
// allocates heavily (go-memdb copies index nodes) while the live heap stays small, so trading
// some memory for fewer collections raised write throughput ~10% and cut tail latency in
// `devfleet bench apply` (docs/benchmarks.md).
const DefaultGCPercent = 200

// TuneGC applies DefaultGCPercent when the operator did not set GOGC. Binaries call it from
// main; the library never changes process-wide settings on its own.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DefaultGCPercent)
	}
}
