package correlation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Alarm gauges, exported through AlarmConfig.MeterProvider.
const (
	MetricAlarmFiring     = "malai.alarm.firing"
	MetricAlarmErrorRatio = "malai.alarm.error_ratio"
)

// LogKeyAlarm is the attribute naming the alarm on its log records.
const LogKeyAlarm = "alarm"

// AlarmConfig configures [NewAlarm]. Each zero field takes the default
// its comment names.
type AlarmConfig struct {
	// Name labels the log records (attribute "alarm") and gauges.
	// Default "http_error_rate".
	Name string
	// Window is the sliding window over which the 5xx ratio is computed.
	// Default 1 minute.
	Window time.Duration
	// Buckets is the number of slots the window is divided into; the
	// window slides by Window/Buckets. Default 12, at most 3600.
	Buckets int
	// Threshold is the 5xx ratio (0 < Threshold <= 1) at or above which the
	// alarm fires. Default 0.05.
	Threshold float64
	// ResolveBelow is the ratio under which a firing alarm resolves; it
	// must be below Threshold (hysteresis, so a ratio hovering at the
	// threshold does not flap). Default Threshold/2.
	ResolveBelow float64
	// MinHold is the least time the alarm stays in a state once it
	// entered it: a fired alarm stays firing at least this long, however
	// the ratio moves, and a resolved one does not fire again sooner, so
	// a burst that comes and goes around the levels pages once, not once
	// per swing. A state held past MinHold changes at the next Record or
	// Evaluate that calls for it ([Alarm.Run] evaluates on a ticker).
	// Zero: no hold; negative is invalid.
	MinHold time.Duration
	// MinRequests is the fewest requests in the window for the ratio to
	// count: fewer never fire nor resolve the alarm, except that a window
	// with no requests at all resolves it. Default 20.
	MinRequests int
	// OnFire and OnResolve run once per crossing, synchronously, while the
	// alarm holds its lock: they must be quick and must not call the
	// Alarm. Hand slow work (paging, webhooks) to a goroutine.
	OnFire, OnResolve func(AlarmEvent)
	// Logger receives an ERROR record when the alarm fires and an INFO
	// record when it resolves, both with the attribute alarm=Name. Nil
	// uses slog.Default().
	Logger *slog.Logger
	// MeterProvider, if set, exports the gauges malai.alarm.firing (0 or
	// 1) and malai.alarm.error_ratio, labelled alarm=Name.
	MeterProvider metric.MeterProvider
	// Now is the clock. Nil uses time.Now.
	Now func() time.Time
}

// AlarmEvent describes a state change.
type AlarmEvent struct {
	Name     string
	Firing   bool // true when the alarm fired, false when it resolved
	At       time.Time
	Requests int // requests in the window
	Errors   int // 5xx responses in the window
	Ratio    float64
}

// Alarm watches the 5xx ratio of recent requests over a sliding window.
// It fires once when the ratio reaches the threshold with enough requests,
// and resolves once when the ratio falls below the lower resolve level.
// Build one with [NewAlarm]; the zero value is unusable. It is safe for
// concurrent use.
type Alarm struct {
	cfg   AlarmConfig
	width int64 // bucket width in nanoseconds

	mu     sync.Mutex
	slots  []alarmSlot
	latest int64 // newest bucket seen, so a clock step back cannot erase data
	firing bool
	since  time.Time // when the alarm last changed state (zero: never)
}

type alarmSlot struct {
	epoch          int64 // bucket number (time / width); slot is stale if old
	total, errored int
}

// NewAlarm validates cfg and returns an Alarm. cfg is not modified.
func NewAlarm(cfg AlarmConfig) (*Alarm, error) {
	c := cfg
	if c.Name == "" {
		c.Name = "http_error_rate"
	}
	if c.Window == 0 {
		c.Window = time.Minute
	}
	if c.Buckets == 0 {
		c.Buckets = 12
	}
	if c.Threshold == 0 {
		c.Threshold = 0.05
	}
	if c.ResolveBelow == 0 {
		c.ResolveBelow = c.Threshold / 2
	}
	if c.MinRequests == 0 {
		c.MinRequests = 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var errs []error
	if c.Window < 0 {
		errs = append(errs, errors.New("window must be positive"))
	}
	if c.Buckets < 1 || c.Buckets > 3600 {
		errs = append(errs, errors.New("buckets must be 1-3600"))
	} else if c.Window > 0 && c.Window/time.Duration(c.Buckets) <= 0 {
		errs = append(errs, errors.New("window is shorter than one nanosecond per bucket"))
	}
	if !(c.Threshold > 0 && c.Threshold <= 1) {
		errs = append(errs, errors.New("threshold must be in (0, 1]"))
	}
	if !(c.ResolveBelow > 0 && c.ResolveBelow < c.Threshold) {
		errs = append(errs, errors.New("resolve level must be in (0, threshold)"))
	}
	if c.MinHold < 0 {
		errs = append(errs, errors.New("minimum hold must not be negative"))
	}
	if c.MinRequests < 1 {
		errs = append(errs, errors.New("minimum requests must be at least 1"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: alarm: %w", ErrConfig, errors.Join(errs...))
	}
	a := &Alarm{
		cfg:   c,
		width: int64(c.Window / time.Duration(c.Buckets)),
		slots: make([]alarmSlot, c.Buckets),
	}
	for i := range a.slots {
		a.slots[i].epoch = math.MinInt64
	}
	a.latest = math.MinInt64
	if c.MeterProvider != nil {
		if err := a.registerGauges(c.MeterProvider); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Record counts one request that was answered with status; 5xx counts as
// an error. It then evaluates the alarm.
func (a *Alarm) Record(status int) {
	now := a.cfg.Now()
	e := a.epoch(now)
	a.mu.Lock()
	defer a.mu.Unlock()
	e = max(e, a.latest)
	a.latest = e
	s := &a.slots[a.slotIndex(e)]
	if s.epoch != e {
		*s = alarmSlot{epoch: e}
	}
	s.total++
	if status >= 500 && status <= 599 {
		s.errored++
	}
	a.evaluate(now, e)
}

// Evaluate re-checks the alarm at the current time without recording a
// request, so a firing alarm resolves once the window has emptied even
// when no traffic arrives. [Alarm.Run] calls it on a ticker.
func (a *Alarm) Evaluate() {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.evaluate(now, max(a.epoch(now), a.latest))
}

// Run calls Evaluate every interval (every <= 0: once per bucket,
// Window/Buckets) until ctx is done, so a firing alarm resolves once
// traffic stops. It returns ctx.Err(). Start it in its own goroutine.
func (a *Alarm) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = time.Duration(a.width)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			a.Evaluate()
		}
	}
}

// Firing reports whether the alarm is firing.
func (a *Alarm) Firing() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.firing
}

func (a *Alarm) epoch(t time.Time) int64 {
	ns := t.UnixNano()
	e := ns / a.width
	if ns < 0 && ns%a.width != 0 {
		e--
	}
	return e
}

func (a *Alarm) slotIndex(e int64) int {
	n := int64(len(a.slots))
	return int(((e % n) + n) % n)
}

// counts sums the slots inside the window ending in bucket e. a.mu held.
func (a *Alarm) counts(e int64) (total, errored int) {
	oldest := e - int64(len(a.slots)) + 1
	for _, s := range a.slots {
		if s.epoch >= oldest && s.epoch <= e {
			total += s.total
			errored += s.errored
		}
	}
	return total, errored
}

// evaluate applies the state machine. a.mu held.
func (a *Alarm) evaluate(now time.Time, e int64) {
	total, errored := a.counts(e)
	ratio := 0.0
	if total > 0 {
		ratio = float64(errored) / float64(total)
	}
	enough := total >= a.cfg.MinRequests
	fire := !a.firing && enough && ratio >= a.cfg.Threshold
	resolve := a.firing && (total == 0 || enough && ratio < a.cfg.ResolveBelow)
	held := !a.since.IsZero() && now.Sub(a.since) < a.cfg.MinHold
	if !fire && !resolve || held {
		return
	}
	a.firing, a.since = fire, now
	ev := AlarmEvent{Name: a.cfg.Name, Firing: a.firing, At: now, Requests: total, Errors: errored, Ratio: ratio}
	attrs := []slog.Attr{
		slog.String(LogKeyAlarm, a.cfg.Name),
		slog.Int("requests", total),
		slog.Int("errors", errored),
		slog.Float64("error_ratio", ratio),
	}
	if ev.Firing {
		attrs = append(attrs, slog.Float64("threshold", a.cfg.Threshold))
		a.cfg.Logger.LogAttrs(context.Background(), slog.LevelError, "alarm firing: error rate above threshold", attrs...)
		if a.cfg.OnFire != nil {
			a.cfg.OnFire(ev)
		}
		return
	}
	attrs = append(attrs, slog.Float64("resolve_below", a.cfg.ResolveBelow))
	a.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "alarm resolved: error rate back below resolve level", attrs...)
	if a.cfg.OnResolve != nil {
		a.cfg.OnResolve(ev)
	}
}

func (a *Alarm) registerGauges(mp metric.MeterProvider) error {
	meter := mp.Meter(instrumentationName)
	firing, err1 := meter.Int64ObservableGauge(MetricAlarmFiring,
		metric.WithDescription("1 while the alarm is firing, else 0."))
	ratio, err2 := meter.Float64ObservableGauge(MetricAlarmErrorRatio,
		metric.WithUnit("1"),
		metric.WithDescription("5xx ratio over the alarm's sliding window."))
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("correlation: creating alarm gauges: %w", err)
	}
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String(LogKeyAlarm, a.cfg.Name)))
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := a.cfg.Now()
		a.mu.Lock()
		total, errored := a.counts(max(a.epoch(now), a.latest))
		on := a.firing
		a.mu.Unlock()
		v := int64(0)
		if on {
			v = 1
		}
		r := 0.0
		if total > 0 {
			r = float64(errored) / float64(total)
		}
		o.ObserveInt64(firing, v, set)
		o.ObserveFloat64(ratio, r, set)
		return nil
	}, firing, ratio)
	if err != nil {
		return fmt.Errorf("correlation: registering alarm gauges: %w", err)
	}
	return nil
}
