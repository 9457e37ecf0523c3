package web

import (
	"fmt"
	"strconv"
	"time"

	"github.com/guardwatch/observatory/internal/store"
)

// Chart geometry, in SVG user units.
const (
	chartW    = 960.0
	chartH    = 220.0
	chartLeft = 48.0
	chartBot  = 24.0
	chartTop  = 8.0
)

// ChartView is a stacked bar chart of outcomes over time, laid out on the
// server so that the page needs no script.
type ChartView struct {
	W, H   float64
	Bars   []BarView
	YTicks []Tick
	XTicks []Tick
	Legend []LegendItem
	Empty  bool
	Label  string // what the chart shows, for assistive technology
}

// BarView is one time bucket.
type BarView struct {
	X, W  float64
	Segs  []SegView
	Title string
}

// SegView is one outcome's part of a bar.
type SegView struct {
	Y, H  float64
	Class string
}

// Tick is an axis label.
type Tick struct {
	Pos   float64
	Label string
}

// LegendItem names a series with its total.
type LegendItem struct {
	Class, Label, Count string
}

// chartOutcomes are stacked bottom-up: the alarming ones on top catch the eye.
var chartOutcomes = []string{"allowed", "monitored", "alerted", "blocked"}

// chartSteps are the bucket sizes to choose from, smallest first.
var chartSteps = []time.Duration{
	time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
	3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// chartStep picks the smallest step that gives at most 96 bars.
func chartStep(span time.Duration) time.Duration {
	for _, s := range chartSteps {
		if span/s <= 96 {
			return s
		}
	}
	return chartSteps[len(chartSteps)-1]
}

// outcomeChart lays out the buckets between from and to, filling gaps.
func outcomeChart(buckets []store.OutcomeBucket, from, to time.Time, step time.Duration,
	loc *time.Location) ChartView {
	c := ChartView{W: chartW, H: chartH}
	start := from.Truncate(step)
	n := int(to.Sub(start)/step) + 1
	if to.Sub(start)%step == 0 {
		n--
	}
	n = max(n, 1)
	byStart := map[int64]map[string]uint64{}
	totals := map[string]uint64{}
	var peak uint64
	for _, b := range buckets {
		byStart[b.Start.Unix()] = b.Counts
		var sum uint64
		for o, v := range b.Counts {
			sum += v
			totals[o] += v
		}
		peak = max(peak, sum)
	}
	c.Empty = peak == 0
	top := niceCeil(peak)
	plotW, plotH := chartW-chartLeft-8, chartH-chartBot-chartTop
	slot := plotW / float64(n)
	gap := min(2, slot*0.2)
	for i := range n {
		t := start.Add(time.Duration(i) * step)
		counts := byStart[t.Unix()]
		bar := BarView{X: chartLeft + float64(i)*slot + gap/2, W: slot - gap}
		y := chartTop + plotH
		var sum uint64
		title := t.In(loc).Format("Jan 02 15:04")
		for _, o := range chartOutcomes {
			v := counts[o]
			if v == 0 {
				continue
			}
			sum += v
			h := float64(v) / float64(top) * plotH
			y -= h
			bar.Segs = append(bar.Segs, SegView{Y: y, H: h, Class: "s-" + o})
			title += fmt.Sprintf(" · %s %d", o, v)
		}
		if sum == 0 {
			title += " · no decisions"
		}
		bar.Title = title
		c.Bars = append(c.Bars, bar)
	}
	for i := 0; i <= 4; i++ {
		v := top * uint64(i) / 4
		c.YTicks = append(c.YTicks, Tick{Pos: chartTop + plotH - float64(i)/4*plotH,
			Label: strconv.FormatUint(v, 10)})
	}
	every := max(1, n/6)
	layout := "15:04"
	if step >= 3*time.Hour {
		layout = "Jan 02"
	} else if to.Sub(from) > 24*time.Hour {
		layout = "Jan 02 15:04"
	}
	for i := 0; i < n; i += every {
		t := start.Add(time.Duration(i) * step)
		c.XTicks = append(c.XTicks, Tick{Pos: chartLeft + (float64(i)+0.5)*slot,
			Label: t.In(loc).Format(layout)})
	}
	for _, o := range []string{"blocked", "alerted", "monitored", "allowed"} {
		c.Legend = append(c.Legend, LegendItem{Class: "s-" + o, Label: o,
			Count: count(totals[o])})
	}
	c.Label = fmt.Sprintf("Decisions per %s by outcome", humanStep(step))
	return c
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten, at least 4.
func niceCeil(v uint64) uint64 {
	if v <= 4 {
		return 4
	}
	p := uint64(1)
	for p*10 < v {
		p *= 10
	}
	for _, m := range []uint64{1, 2, 4, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func humanStep(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return "day"
	case d >= time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d minutes", int(d.Minutes()))
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
