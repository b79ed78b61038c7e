package loadgen

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
)

//go:embed report.html.tmpl
var reportHTML string

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"f1":  func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"f2":  func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"pct": func(v float64) string { return fmt.Sprintf("%+.2f %%", v) },
	"lat": func(rep *Report) []latRow {
		var rows []latRow
		for _, k := range []string{"ttft", "ttft_any", "e2e", "itl", "tpot", "queue", "cancel_to_end"} {
			if s := rep.Latency[k]; s.Count > 0 {
				rows = append(rows, latRow{k, s})
			}
		}
		return rows
	},
	"sorted": sortedKeys[int],
}).Parse(reportHTML))

type latRow struct {
	Name string
	S    Stats
}

// plot is one SVG chart, laid out in Go: the template only draws it.
type plot struct {
	ID, Title, XLabel, YLabel string
	W, H                      int
	// Plot area in pixels.
	L, T, R, B     float64
	Series         []series
	XTicks, YTicks []tick
	Empty          string
}

type series struct {
	Name, Color string
	D           string // path data
	Points      []pt
}

type pt struct {
	X, Y  float64
	Label string
}

type tick struct {
	Pos   float64
	Label string
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// xy is a data point before scaling.
type xy struct{ X, Y float64 }

type rawSeries struct {
	Name string
	Pts  []xy
}

func niceTicks(lo, hi float64, n int) []float64 {
	if !(hi > lo) {
		hi = lo + 1
	}
	step := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(step)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= step {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step/1e6; v += step {
		out = append(out, v)
	}
	return out
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(v/1000, 'g', 3, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// makePlot scales the series into a W×H chart; logX draws x on a log
// scale (latencies from sub-millisecond to seconds).
func makePlot(id, title, xl, yl string, logX bool, yMax float64, raw []rawSeries) plot {
	p := plot{ID: id, Title: title, XLabel: xl, YLabel: yl, W: 560, H: 300, L: 56, T: 28, R: 540, B: 260}
	xlo, xhi, yhi := math.Inf(1), math.Inf(-1), 0.0
	n := 0
	for _, s := range raw {
		for _, q := range s.Pts {
			x := q.X
			if logX {
				if x <= 0 {
					continue
				}
				x = math.Log10(x)
			}
			xlo, xhi, yhi = min(xlo, x), max(xhi, x), max(yhi, q.Y)
			n++
		}
	}
	if n == 0 {
		p.Empty = "no data"
		return p
	}
	if yMax > 0 {
		yhi = yMax
	}
	if yhi <= 0 {
		yhi = 1
	}
	if logX {
		xlo, xhi = math.Floor(xlo), math.Ceil(xhi)
		if xhi <= xlo {
			xhi = xlo + 1
		}
	} else if xhi <= xlo {
		xhi = xlo + 1
	}
	sx := func(x float64) float64 {
		if logX {
			x = math.Log10(x)
		}
		return p.L + (x-xlo)/(xhi-xlo)*(p.R-p.L)
	}
	sy := func(y float64) float64 { return p.B - y/yhi*(p.B-p.T) }
	if logX {
		for e := xlo; e <= xhi; e++ {
			p.XTicks = append(p.XTicks, tick{sx(math.Pow(10, e)), fmtNum(math.Pow(10, e))})
		}
	} else {
		for _, v := range niceTicks(xlo, xhi, 6) {
			p.XTicks = append(p.XTicks, tick{sx(v), fmtNum(v)})
		}
	}
	for _, v := range niceTicks(0, yhi, 5) {
		p.YTicks = append(p.YTicks, tick{sy(v), fmtNum(v)})
	}
	for i, s := range raw {
		out := series{Name: s.Name, Color: palette[i%len(palette)]}
		var d strings.Builder
		for _, q := range s.Pts {
			if logX && q.X <= 0 {
				continue
			}
			x, y := sx(q.X), sy(q.Y)
			if d.Len() == 0 {
				fmt.Fprintf(&d, "M%.1f %.1f", x, y)
			} else {
				fmt.Fprintf(&d, " L%.1f %.1f", x, y)
			}
			out.Points = append(out.Points, pt{x, y, fmt.Sprintf("%s: %s %s, %s %s", s.Name, xl, fmtNum(q.X), yl, fmtNum(q.Y))})
		}
		if len(out.Points) > 0 {
			out.D = d.String()
			p.Series = append(p.Series, out)
		}
	}
	if len(p.Series) == 0 {
		p.Empty = "no data"
	}
	return p
}

func cdfSeries(name string, s Stats) rawSeries {
	r := rawSeries{Name: name}
	for _, q := range s.CDF {
		r.Pts = append(r.Pts, xy{q.Ms, q.Fraction})
	}
	return r
}

// plots lays out the report's charts.
func (rep *Report) plots() []plot {
	L := rep.Latency
	ps := []plot{
		makePlot("latency-cdf", "Latency CDF: TTFT, TTFT (any step), end to end", "ms", "fraction", true, 1,
			[]rawSeries{cdfSeries("ttft", L["ttft"]), cdfSeries("ttft_any", L["ttft_any"]), cdfSeries("e2e", L["e2e"])}),
		makePlot("token-cdf", "Token latency CDF: ITL (per token), TPOT (per request)", "ms", "fraction", true, 1,
			[]rawSeries{cdfSeries("itl", L["itl"]), cdfSeries("tpot", L["tpot"])}),
	}
	var tok, done, errs, sent, inflight rawSeries
	tok.Name, done.Name, errs.Name, sent.Name, inflight.Name = "tokens/s", "ended/s", "errors/s", "sent/s", "in flight"
	for _, s := range rep.Timeline {
		t := float64(s.T)
		tok.Pts = append(tok.Pts, xy{t, float64(s.Tokens)})
		done.Pts = append(done.Pts, xy{t, float64(s.Done)})
		errs.Pts = append(errs.Pts, xy{t, float64(s.Errors)})
		sent.Pts = append(sent.Pts, xy{t, float64(s.Sent)})
		inflight.Pts = append(inflight.Pts, xy{t, float64(s.InFlight)})
	}
	ps = append(ps,
		makePlot("tokens-time", "Tokens per second over time", "s", "tokens/s", false, 0, []rawSeries{tok}),
		makePlot("runs-time", "Requests and errors per second over time", "s", "per s", false, 0, []rawSeries{sent, done, errs, inflight}))
	if c := L["cancel_to_end"]; c.Count > 0 {
		ps = append(ps, makePlot("cancel-cdf", "Cancel probes: DELETE → end of stream", "ms", "fraction", true, 1, []rawSeries{cdfSeries("cancel_to_end", c)}))
	}
	if len(rep.Nodes) > 0 {
		var raw []rawSeries
		for _, n := range rep.Nodes {
			r := rawSeries{Name: n.Name}
			for _, q := range n.Points {
				r.Pts = append(r.Pts, xy{q.T, q.Runs})
			}
			raw = append(raw, r)
		}
		ps = append(ps, makePlot("nodes-time", "Per-node load: runs in flight", "s", "runs", false, 0, raw))
	}
	return ps
}

// WriteHTML writes the report as one self-contained HTML page: tables and
// SVG charts drawn here, a few lines of script for tooltips, nothing
// fetched.
func (rep *Report) WriteHTML(w io.Writer) error {
	return reportTmpl.Execute(w, struct {
		R     *Report
		Plots []plot
	}{rep, rep.plots()})
}
