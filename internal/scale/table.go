package scale

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Row is one cluster size's result.
type Row struct {
	Nodes   int     `json:"nodes"`
	Outcome Outcome `json:"outcome"`
}

// Speedup is row's best rate over base's (0 when either found none).
func Speedup(row, base Row) float64 {
	if !row.Outcome.Found || !base.Outcome.Found || base.Outcome.Best.Rate == 0 {
		return 0
	}
	return row.Outcome.Best.Rate / base.Outcome.Best.Rate
}

func msOf(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

// WriteTable writes the result as a Markdown table: per cluster size the
// highest rate that kept the SLO, what that step measured, and the speedup
// over the first row. cpuNames orders the containers' CPU column (nodes
// first, then the gateway).
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| nodes | max runs/s at SLO | × first row | completed runs/s | tokens/s | TTFT p50 / p99 (ms) | first-token-of-any-step p99 (ms) | failed (by code) | CPU per node (cores) | gateway CPU | load generator CPU | steps |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
	for _, r := range rows {
		o := r.Outcome
		if !o.Found {
			fmt.Fprintf(w, "| %d | none passed | – | – | – | – | – | – | – | – | – | %d |\n", r.Nodes, len(o.Steps))
			continue
		}
		b := o.Best
		rate := fmt.Sprintf("%.2f", b.Rate)
		if o.AtMax {
			rate = "≥ " + rate
		}
		speed := "–"
		if s := Speedup(r, rows[0]); s > 0 {
			speed = fmt.Sprintf("%.2f×", s)
		}
		failed := "0"
		if b.ErrorCount() > 0 {
			failed = fmt.Sprintf("%d of %d: %s", b.ErrorCount(), b.Sent, errorList(b.Errors))
		}
		var nodes []string
		for _, name := range sortedNames(b.CPU) {
			if name != "gateway" {
				nodes = append(nodes, fmt.Sprintf("%.2f", b.CPU[name]))
			}
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.2f | %.0f | %s / %s | %s | %s | %s | %.2f | %.2f | %d |\n", r.Nodes, rate, speed,
			b.Goodput, b.TokensPerSecond, msOf(b.TTFTP50), msOf(b.TTFTP99), msOf(b.TTFTAnyP99), failed,
			strings.Join(nodes, ", "), b.CPU["gateway"], b.LoadCPU, len(o.Steps))
	}
}

// WriteSteps writes every step of every row (the search's trail).
func WriteSteps(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| nodes | offered runs/s | sent | completed runs/s | TTFT p50 / p99 (ms) | failed | CPU (cores) | verdict |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range rows {
		for _, s := range r.Outcome.Steps {
			var cpu []string
			for _, name := range sortedNames(s.CPU) {
				cpu = append(cpu, fmt.Sprintf("%s %.2f", name, s.CPU[name]))
			}
			verdict := "pass"
			if !s.Pass {
				verdict = "fail: " + s.Why
			}
			fmt.Fprintf(w, "| %d | %.2f | %d | %.2f | %s / %s | %d | %s | %s |\n", r.Nodes, s.Rate, s.Sent, s.Goodput,
				msOf(s.TTFTP50), msOf(s.TTFTP99), s.ErrorCount(), strings.Join(cpu, ", "), verdict)
		}
	}
}

// sortedNames orders container names: node1, node2, …, node10, then the
// rest alphabetically.
func sortedNames(m map[string]float64) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		ni, nj := nodeNumber(names[i]), nodeNumber(names[j])
		if (ni > 0) != (nj > 0) {
			return ni > 0
		}
		if ni != nj {
			return ni < nj
		}
		return names[i] < names[j]
	})
	return names
}

func nodeNumber(name string) int {
	var n int
	if _, err := fmt.Sscanf(name, "node%d", &n); err != nil {
		return 0
	}
	return n
}

// WriteSVG draws max runs/s at the SLO against nodes, with the line of
// perfect scaling from the first row and the goal's 2.5× at three nodes.
func WriteSVG(w io.Writer, title string, rows []Row) error {
	const width, height, left, right, top, bottom = 640.0, 400.0, 64.0, 24.0, 40.0, 48.0
	maxN, maxY := 1, 0.0
	var base float64
	for _, r := range rows {
		maxN = max(maxN, r.Nodes)
		if r.Outcome.Found {
			maxY = max(maxY, r.Outcome.Best.Rate)
			if base == 0 {
				base = r.Outcome.Best.Rate / float64(r.Nodes)
			}
		}
	}
	maxY = max(maxY, base*float64(maxN))
	if maxY == 0 {
		maxY = 1
	}
	maxY *= 1.1
	x := func(n float64) float64 { return left + (n-0.5)/(float64(maxN))*(width-left-right) }
	y := func(v float64) float64 { return height - bottom - v/maxY*(height-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="22" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	// Axes and ticks.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, y(0), width-right, y(0))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, y(0), left, top)
	for n := 1; n <= maxN; n++ {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(float64(n)), y(0)+16, n)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">nodes</text>`+"\n", (left+width-right)/2, height-8)
	for _, t := range ticks(maxY, 5) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n",
			left, y(t), width-right, y(t), left-6, y(t)+4, t)
	}
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">runs/s at the TTFT SLO</text>`+"\n", (top+height-bottom)/2)
	if base > 0 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="6 4"/>`+"\n",
			x(1), y(base), x(float64(maxN)), y(base*float64(maxN)))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#666" text-anchor="end">linear from %d node(s)</text>`+"\n",
			x(float64(maxN))-4, y(base*float64(maxN))-6, rows[0].Nodes)
		if maxN >= 3 {
			g := 2.5 * base
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="5" fill="none" stroke="#c00"/><text x="%.1f" y="%.1f" fill="#c00">goal 2.5×</text>`+"\n",
				x(3), y(g), x(3)+8, y(g)+4)
		}
	}
	var pts []string
	for _, r := range rows {
		if !r.Outcome.Found {
			continue
		}
		px, py := x(float64(r.Nodes)), y(r.Outcome.Best.Rate)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="#1f77b4"/><text x="%.1f" y="%.1f" text-anchor="middle">%.1f</text>`+"\n",
			px, py, px, py-10, r.Outcome.Best.Rate)
	}
	if len(pts) > 1 {
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1f77b4" stroke-width="2"/>`+"\n", strings.Join(pts, " "))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// ticks are about n round values (1, 2 or 5 × 10^k apart) from 0 to hi.
func ticks(hi float64, n int) []float64 {
	raw := hi / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for i := 0; float64(i)*step <= hi; i++ {
		out = append(out, float64(i)*step)
	}
	return out
}
