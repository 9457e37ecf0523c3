// Package health serves a readiness report that names what is wrong.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"
)

// Checks maps a dependency name to a probe; nil error means healthy.
type Checks map[string]func(context.Context) error

// Report is the JSON body of the health endpoint.
type Report struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// Run probes every dependency with a short deadline.
func (c Checks) Run(ctx context.Context) Report {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()

	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	r := Report{Status: "ok", Checks: map[string]string{}}
	for _, n := range names {
		if err := c[n](ctx); err != nil {
			r.Status = "unavailable"
			r.Checks[n] = err.Error()
		} else {
			r.Checks[n] = "ok"
		}
	}
	return r
}

// Handler answers 200 when every check passes and 503 otherwise, with the
// report as JSON either way. It is meant for operators and probes, not for
// tenants, so it names the failing dependency and its error.
func (c Checks) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := c.Run(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if rep.Status != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}
