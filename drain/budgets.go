package drain

import (
	"math"
	"math/bits"
	"time"
)

// Budgets bound how many of a drain's moves run at once; zero fields take defaults.
type Budgets struct {
	PerSource int `json:"per_source"` // moves leaving one host at once (default 2)
	PerDest   int `json:"per_dest"`   // arriving at one host (default 2)
	PerSite   int `json:"per_site"`   // leaving or arriving at one site, either end (default 4)
	Total     int `json:"total"`      // in the whole drain (default 5)
	// BandwidthMiBps is each move's bandwidth (default 1024): what a move's expected duration is
	// computed from.
	BandwidthMiBps uint64 `json:"bandwidth_mibps"`
}

// Default budgets: the migration queue's own limits (migrate.Limits), so that a plan's waves are
// what the queue would run, and the bandwidth cap a move gets unless told otherwise.
const (
	DefaultPerSource      = 2
	DefaultPerDest        = 2
	DefaultPerSite        = 4
	DefaultTotal          = 5
	DefaultBandwidthMiBps = 1024
)

// WithDefaults returns b with its zero (or negative) fields set to the defaults: the budgets a
// plan was made under, for the record.
func (b Budgets) WithDefaults() Budgets {
	or := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return v
	}
	b.PerSource = or(b.PerSource, DefaultPerSource)
	b.PerDest = or(b.PerDest, DefaultPerDest)
	b.PerSite = or(b.PerSite, DefaultPerSite)
	b.Total = or(b.Total, DefaultTotal)
	if b.BandwidthMiBps == 0 {
		b.BandwidthMiBps = DefaultBandwidthMiBps
	}
	return b
}

// Duration is how long copying n bytes takes at the budgets' bandwidth (a zero bandwidth takes
// the default), rounded up to the nanosecond. Integer arithmetic, so that every replica and
// architecture computes the same plan.
func (b Budgets) Duration(n uint64) time.Duration {
	bw := b.BandwidthMiBps
	if bw == 0 {
		bw = DefaultBandwidthMiBps
	}
	if bw > math.MaxUint64>>20 {
		bw = math.MaxUint64 >> 20
	}
	per := bw << 20 // bytes a second
	hi, lo := bits.Mul64(n, uint64(time.Second))
	if hi >= per {
		return math.MaxInt64 // beyond any plan; Div64 would overflow
	}
	q, r := bits.Div64(hi, lo, per)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(q)
}
