package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/testenv"
)

// TestAsyncPublisherSurvivesServerRestarts publishes while the server
// restarts twice and then finds every message in the stream, each
// acknowledged once to the caller.
func TestAsyncPublisherSurvivesServerRestarts(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	require.NoError(t, err)
	ctx := t.Context()
	_, err = bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)

	pub := bus.NewAsyncPublisher(js, bus.AsyncConfig{MaxInFlight: 512,
		AckTimeout: time.Second, MaxElapsed: 30 * time.Second})
	const n = 6000
	var mu sync.Mutex
	acked := map[string]int{}
	// The server restarts twice while hundreds of publishes are in flight.
	restarts := make(chan struct{}, 2)
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for range restarts {
			srv.Restart(t)
		}
	}()
	for i := range n {
		id := fmt.Sprintf("evt-%d", i)
		m := nats.NewMsg("guard.v1.acme.proj_prod.decision")
		m.Data = []byte(`{"event_id":"` + id + `"}`)
		m.Header.Set(bus.HeaderEventID, id)
		require.NoError(t, pub.Publish(ctx, m, func(*jetstream.PubAck) {
			mu.Lock()
			acked[id]++
			mu.Unlock()
		}))
		switch {
		case i == n/3 || i == 2*n/3:
			restarts <- struct{}{}
		case i%100 == 0:
			time.Sleep(20 * time.Millisecond) // spread the sends over the restarts
		}
	}
	close(restarts)
	<-restarted
	flush, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, pub.Flush(flush))
	stored, retries, failed := pub.Stats()
	t.Logf("stored %d, retried attempts %d, failed %d", stored, retries, failed)
	require.EqualValues(t, n, stored)
	require.Positive(t, retries, "the restarts cut some publishes off")
	require.Len(t, acked, n)
	for id, c := range acked {
		require.Equal(t, 1, c, "ack callback of %s", id)
	}

	// Every message is in the stream, some perhaps twice.
	st, err := js.Stream(ctx, "GUARD")
	require.NoError(t, err)
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	seen := map[string]bool{}
	for got := uint64(0); got < info.State.Msgs; {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			seen[m.Headers().Get(bus.HeaderEventID)] = true
			got++
		}
		require.NoError(t, batch.Error())
	}
	require.Len(t, seen, n)
	t.Logf("stream holds %d messages for %d events", info.State.Msgs, n)
}
