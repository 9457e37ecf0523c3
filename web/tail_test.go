package web_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

// sseEvent is one server-sent event.
type sseEvent struct{ id, name, data string }

// readEvents parses a server-sent event stream into a channel.
func readEvents(resp *http.Response) <-chan sseEvent {
	out := make(chan sseEvent, 16)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ev.data = strings.Join(data, "\n")
					out <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			}
		}
	}()
	return out
}

func TestTailStreamsNewDecisionsOfItsProjectOnly(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := signIn(t, e.srv.URL, e.token(t, "globex", []string{"support-bot"}, []string{"viewer"}))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		e.srv.URL+"/p/support-bot/tail?range=1h", nil)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	stream := readEvents(resp)
	time.Sleep(300 * time.Millisecond)

	g := gen.New(99, nil, nil)
	mine := g.NextFor(gen.Tenant{Account: "globex", Project: "support-bot"})
	mine.EventID = "evt-live-1"
	mine.Reason = "live <b>one</b>"
	other := g.NextFor(gen.Tenant{Account: "acme", Project: "support-bot"})
	other.EventID = "evt-live-other-account"
	old := e.events["globex/support-bot"][0] // a redelivery of an old decision
	require.NoError(t, e.st.Insert(ctx, []*events.Event{other, old, mine}))

	select {
	case ev := <-stream:
		require.Equal(t, "decision", ev.name)
		require.Contains(t, ev.data, `data-event="evt-live-1"`)
		require.Contains(t, ev.data, "live &lt;b&gt;one&lt;/b&gt;")
		require.NotEmpty(t, ev.id)
	case <-ctx.Done():
		t.Fatal("no live event")
	}
	// Nothing else arrives: not the other account's, not the redelivery.
	require.NoError(t, e.st.Insert(ctx, []*events.Event{mine}))
	deadline := time.After(1500 * time.Millisecond)
	for {
		select {
		case ev := <-stream:
			require.NotEqual(t, "decision", ev.name, "unexpected %s", ev.data)
		case <-deadline:
			return
		}
	}
}

func TestTailNeedsAccess(t *testing.T) {
	e := newEnv(t)
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	status, _ := get(t, c, e.srv.URL+"/p/support-bot/tail")
	require.Equal(t, http.StatusNotFound, status)
	status, _ = get(t, c, e.srv.URL+"/p/proj_staging/tail")
	require.Equal(t, http.StatusNotFound, status)
}
