package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/events"
)

// metrics of one ingester, registered on an injected registerer.
type metrics struct {
	received     prometheus.Counter
	stored       prometheus.Counter
	deadLetters  *prometheus.CounterVec
	retried      prometheus.Counter
	insertErrors prometheus.Counter
	batchRows    prometheus.Histogram
	insertTime   prometheus.Histogram
	pending      prometheus.Gauge
	ackPending   prometheus.Gauge
	projectRows  *prometheus.CounterVec

	batchMessages    prometheus.Histogram
	insertRetries    prometheus.Counter
	held             prometheus.Gauge
	ackErrors        prometheus.Counter
	deadLetterErrors prometheus.Counter
	eventDelay       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_messages_received_total",
			Help: "Decision messages received from the stream, redeliveries included.",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_rows_inserted_total",
			Help: "Rows ClickHouse accepted, redelivered copies included.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_ingest_dead_letters_total",
			Help: "Messages rejected to a dead-letter subject, by reason.",
		}, []string{"reason"}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_messages_retried_total",
			Help: "Messages negatively acknowledged for redelivery (an insert still failing at stop).",
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_insert_errors_total",
			Help: "Batch inserts that ClickHouse did not accept.",
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guard_ingest_batch_rows",
			Help:    "Valid rows per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		insertTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guard_ingest_insert_seconds",
			Help:    "Time to insert one batch into ClickHouse.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "guard_ingest_consumer_pending_messages",
			Help: "Messages in the stream not yet delivered to the consumer (lag).",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "guard_ingest_consumer_ack_pending_messages",
			Help: "Messages delivered but not yet acknowledged.",
		}),
		projectRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_ingest_project_rows_total",
			Help: "Rows inserted per account and project.",
		}, []string{"account_id", "project_id"}),
		batchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guard_ingest_batch_messages",
			Help:    "Messages per batch, rejected ones included.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		insertRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_insert_retries_total",
			Help: "Insert attempts repeated for a batch held after a failure.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "guard_ingest_held_messages",
			Help: "Messages of batches being inserted or waiting to retry their insert.",
		}),
		ackErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_ack_errors_total",
			Help: "Acks of stored messages that could not be sent (they are redelivered).",
		}),
		deadLetterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "guard_ingest_dead_letter_errors_total",
			Help: "Batches of dead letters the stream did not store (the rejects are redelivered).",
		}),
		eventDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guard_ingest_event_delay_seconds",
			Help:    "Time from an event's occurred_at to its row being stored.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
	}
	for _, r := range events.Reasons {
		m.deadLetters.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(m.received, m.stored, m.deadLetters, m.retried, m.insertErrors,
			m.batchRows, m.insertTime, m.pending, m.ackPending, m.projectRows,
			m.batchMessages, m.insertRetries, m.held, m.ackErrors, m.deadLetterErrors,
			m.eventDelay)
	}
	return m
}
