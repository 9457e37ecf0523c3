package filter_test

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/filter"
)

var now = time.Date(2026, 12, 3, 12, 30, 15, 0, time.UTC)

func parse(t *testing.T, q string, loc *time.Location) (filter.Filter, error) {
	t.Helper()
	v, err := url.ParseQuery(q)
	require.NoError(t, err)
	return filter.Parse(v, now, loc)
}

func TestPresetsAndDefault(t *testing.T) {
	f, err := parse(t, "", nil)
	require.NoError(t, err)
	require.Equal(t, "24h", f.Preset)
	require.Equal(t, 24*time.Hour, f.To.Sub(f.From))
	require.True(t, f.To.After(now), "the newest second is included")

	f, err = parse(t, "range=15m", nil)
	require.NoError(t, err)
	require.Equal(t, 15*time.Minute, f.To.Sub(f.From))
}

func TestCustomRangeInTheViewersZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)

	f, err := parse(t, "from=2026-11-01T09:00&to=2026-11-02T09:00", berlin)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC), f.From)
	require.Equal(t, time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), f.To)

	// A date-only end includes that whole day.
	f, err = parse(t, "from=2026-11-01&to=2026-11-30", time.UTC)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), f.To)
}

func TestBadParametersNameThemselves(t *testing.T) {
	cases := map[string]string{
		"range=2y":                             "range",
		"from=2026-11-01":                      "from",
		"from=yesterday&to=2026-11-02":         "from",
		"from=2026-11-02&to=2026-11-01":        "to",
		"from=2023-01-01&to=2026-12-01":        "from",
		"outcome=exploded":                     "outcome",
		"severity=extreme":                     "severity",
		"min_score=101":                        "min_score",
		"min_score=NaN":                        "min_score",
		"user=%00admin":                        "user",
		"q=%ff":                                "q",
		"session=" + string(make([]byte, 300)): "session",
	}
	for q, param := range cases {
		_, err := parse(t, q, nil)
		var fe *filter.Error
		require.True(t, errors.As(err, &fe), "%s: %v", q, err)
		require.Equal(t, param, fe.Param, q)
	}
}

func TestValuesRoundTrip(t *testing.T) {
	q := "range=7d&outcome=blocked,alerted&decision=deny&mode=enforce&event_type=tool_call" +
		"&severity=high&min_score=80&category=jailbreak&policy=p1&detector=d1&user=u" +
		"&agent=a&session=s&application=app&trace=t&q=ignore+previous"
	f, err := parse(t, q, nil)
	require.NoError(t, err)
	again, err := filter.Parse(f.Values(), now, nil)
	require.NoError(t, err)
	require.True(t, reflect.DeepEqual(f, again), "%+v\n%+v", f, again)
}

// FuzzParse checks that any query string either fails with a parameter
// error or yields a filter whose encoding parses back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "range=1h", "outcome=blocked,allowed&q=x",
		"from=2026-11-01&to=2026-11-02", "severity=high&min_score=50", "user=%00", "q=%ff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		got, err := filter.Parse(v, now, time.UTC)
		if err != nil {
			var fe *filter.Error
			if !errors.As(err, &fe) {
				t.Fatalf("error without a parameter: %v", err)
			}
			return
		}
		again, err := filter.Parse(got.Values(), now, time.UTC)
		if err != nil {
			t.Fatalf("encoded filter does not parse: %v", err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("round trip changed the filter:\n%+v\n%+v", got, again)
		}
	})
}
