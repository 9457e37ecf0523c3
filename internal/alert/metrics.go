package alert

import "github.com/prometheus/client_golang/prometheus"

// Reasons a decision or an alert was passed over, the values of the
// "reason" label.
const (
	skipInvalid   = "invalid"   // payload the ingester dead-letters
	skipDuplicate = "duplicate" // a redelivery already counted, or a repeat alert
	skipGone      = "gone"      // the subscription was deleted meanwhile
)

type metrics struct {
	evaluated  prometheus.Counter
	matched    prometheus.Counter
	skipped    *prometheus.CounterVec
	conflicts  prometheus.Counter
	fired      prometheus.Counter
	deliveries *prometheus.CounterVec
	retries    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

// newMetrics builds the alerting metrics and registers them with reg,
// when reg is not nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		evaluated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_alert_decisions_evaluated_total",
			Help: "Decisions of projects with subscriptions that were matched."}),
		matched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_alert_matches_total",
			Help: "Matches of a decision with a subscription group."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_alert_skipped_total",
			Help: "Decisions or alerts passed over, by reason."}, []string{"reason"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_alert_window_conflicts_total",
			Help: "Window updates retried because another replica wrote first."}),
		fired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_alert_fired_total",
			Help: "Alerts fired."}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_alert_deliveries_total",
			Help: "Finished deliveries by channel and status."}, []string{"channel", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_alert_delivery_retries_total",
			Help: "Delivery attempts after the first, by channel."}, []string{"channel"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "guard_alert_delivery_latency_seconds",
			Help:    "From the arrival of the firing decision to the receiver's answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"channel"}),
	}
	if reg != nil {
		reg.MustRegister(m.evaluated, m.matched, m.skipped, m.conflicts, m.fired,
			m.deliveries, m.retries, m.latency)
	}
	return m
}
