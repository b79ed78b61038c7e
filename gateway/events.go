package gateway

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Event type names, as in SSE "event:" lines and the JSON "type" field.
const (
	evStageStarted   = "stage_started"
	evTokenDelta     = "token_delta"
	evStageCompleted = "stage_completed"
	evStageRestarted = "stage_restarted"
	evRunCompleted   = "run_completed"
	evRunFailed      = "run_failed"
	evRunCancelled   = "run_cancelled"
	evRunPlanned     = "run_planned"
	evStepSkipped    = "step_skipped"
	evRanking        = "ranking"
	evStepNote       = "step_note"
	evModelChosen    = "model_chosen"
	evLagged         = "lagged"
)

func eventType(ev *messages.RunEvent) string {
	switch ev.GetKind().(type) {
	case *messages.RunEvent_StageStarted:
		return evStageStarted
	case *messages.RunEvent_TokenDelta:
		return evTokenDelta
	case *messages.RunEvent_StageCompleted:
		return evStageCompleted
	case *messages.RunEvent_StageRestarted:
		return evStageRestarted
	case *messages.RunEvent_RunCompleted:
		return evRunCompleted
	case *messages.RunEvent_RunFailed:
		return evRunFailed
	case *messages.RunEvent_RunCancelled:
		return evRunCancelled
	case *messages.RunEvent_RunPlanned:
		return evRunPlanned
	case *messages.RunEvent_StepSkipped:
		return evStepSkipped
	case *messages.RunEvent_Ranking:
		return evRanking
	case *messages.RunEvent_StepNote:
		return evStepNote
	case *messages.RunEvent_ModelChosen:
		return evModelChosen
	}
	return "unknown"
}

// stageString is a stage's name on the wire ("generator", from stagework's
// stage table), "" for a value that is not a stage.
func stageString(s messages.Stage) string {
	if st := stagework.Stage(s); st.Valid() {
		return st.String()
	}
	return ""
}

// stepOf is the id of the step an event names: its step, or for a chain's
// stage (whose events carry no step) the stage's name.
func stepOf(step string, stage messages.Stage) string {
	if step != "" {
		return step
	}
	return stageString(stage)
}

// Bounds on one event on the wire (Config.MaxEventBytes).
const (
	// DefaultMaxEventBytes is the default bound on one event on the wire:
	// 16 KiB, a quarter of the 64 KiB line limit of Go's bufio.Scanner and of
	// many SSE libraries, and one TLS record.
	DefaultMaxEventBytes = 16 << 10
	// MinMaxEventBytes is the smallest bound accepted: it leaves room for an
	// event's fixed fields (wireOverhead) and a few hundred bytes of text.
	MinMaxEventBytes = 1024
	// wireOverhead bounds what an event holds besides its long text (a
	// delta's text, a reason, a note), framing included: SSE "id:",
	// "event:" and "data:" lines, an OpenAI chunk's envelope. The largest,
	// a stage_started with 128-byte model and provider names, a 64-byte
	// step and 20-digit numbers everywhere, is under 600 bytes with its SSE
	// framing (TestStepEventsFitTheBound); an OpenAI chunk with a 128-byte
	// model name under 400; a token_delta part under 400.
	wireOverhead = 640
	// shortFieldMax bounds each short string (model, provider, code): they
	// come from the configuration and are normally a few bytes.
	shortFieldMax = 128
	// stepFieldMax bounds a step id on the wire (a profile's ids are at
	// most 32 bytes: "p1.2", "m3", "aggregator").
	stepFieldMax = 64
	// sseFraming bounds an SSE event's framing around its JSON: "id: " and
	// a 20-digit seq (":end" only for a delta's part), "\nevent: " and the
	// longest type, "\ndata: ", "\n\n". Events whose JSON has no long text
	// to cut (run_planned, ranking) are fitted to max - sseFraming.
	sseFraming = 64
)

// textBudget is how many encoded (escaped) bytes of long text one event
// may carry under the bound max.
func textBudget(max int) int { return max - wireOverhead }

// span is one event on the wire: evs[lo:hi] (when hi-lo > 1, consecutive
// token deltas of one step coalesced into one), or, when to > 0, the text
// bytes [from, to) of the delta evs[lo] alone: a part of a delta too long
// for one event, or the rest of one a reader resumed inside.
type span struct {
	lo, hi   int
	from, to int
}

// isPart reports whether the span is a part of one delta's text.
func (s span) isPart() bool { return s.to > 0 }

// spanner cuts a batch of events into spans that each fit the bound:
// consecutive deltas of one step are coalesced until their escaped text
// would pass budget; a delta whose text alone would is cut into parts at
// character boundaries. A batch of one small event is one span: a reader
// that keeps up sees every event as it was logged. It allocates nothing.
type spanner struct {
	evs    []*messages.RunEvent
	i      int // the next event
	off    int // text bytes of evs[i] already sent (a part, or a resume inside it)
	budget int // textBudget
}

// next returns the next span, false at the end of the batch.
func (p *spanner) next() (span, bool) {
	if p.i >= len(p.evs) {
		return span{}, false
	}
	i := p.i
	d := p.evs[i].GetTokenDelta()
	if d == nil {
		p.i, p.off = i+1, 0
		return span{lo: i, hi: i + 1}, true
	}
	if p.off == 0 {
		if n := escapedLen(d.Text); n <= p.budget {
			j := i + 1
			for ; j < len(p.evs); j++ {
				e := p.evs[j].GetTokenDelta()
				// Parallel steps' deltas interleave in the log: only a
				// run of one step's deltas is one text.
				if e == nil || e.Stage != d.Stage || e.Step != d.Step {
					break
				}
				m := escapedLen(e.Text)
				if n+m > p.budget {
					break
				}
				n += m
			}
			p.i = j
			return span{lo: i, hi: j}, true
		}
	}
	from := p.off
	to := from + escapedPrefix(d.Text[from:], p.budget)
	if to >= len(d.Text) {
		p.i, p.off = i+1, 0
	} else {
		p.off = to
	}
	return span{lo: i, hi: i + 1, from: from, to: to}, true
}

// appendEventJSON writes the JSON of a span of evs (see docs/api.md). Long
// free text (reasons, notes) is cut to long encoded bytes, short strings to
// shortFieldMax; a span from the spanner with long = textBudget(max) then
// encodes, framing included, within max. Events with lists (run_planned,
// ranking) are fitted to max - sseFraming (see appendPlan, appendRanked).
func appendEventJSON(b []byte, evs []*messages.RunEvent, s span, long int) []byte {
	start := len(b)
	last := evs[s.hi-1]
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, last.Seq, 10)
	if s.hi-s.lo > 1 {
		b = append(b, `,"from_seq":`...)
		b = strconv.AppendUint(b, evs[s.lo].Seq, 10)
	}
	b = append(b, `,"type":"`...)
	b = append(b, eventType(last)...)
	b = append(b, `","time":"`...)
	b = appendTime(b, last)
	b = append(b, '"')
	// fit is how long a list event's JSON may be, closing brace included:
	// the bound less the SSE framing.
	fit := long + wireOverhead - sseFraming
	switch k := last.GetKind().(type) {
	case *messages.RunEvent_TokenDelta:
		b = appendStep(b, k.TokenDelta.Stage, k.TokenDelta.Step)
		b = append(b, `,"text":"`...)
		var tokens int64
		if s.isPart() {
			t := k.TokenDelta.Text
			b = appendEscaped(b, t[s.from:s.to])
			if s.to == len(t) {
				tokens = int64(k.TokenDelta.Tokens) // on the last part only: parts add up
			}
		} else {
			for _, ev := range evs[s.lo:s.hi] {
				d := ev.GetTokenDelta()
				b = appendEscaped(b, d.Text)
				tokens += int64(d.Tokens)
			}
		}
		b = append(b, `","tokens":`...)
		b = strconv.AppendInt(b, tokens, 10)
		if s.isPart() {
			b = append(b, `,"part":{"offset":`...)
			b = strconv.AppendInt(b, int64(s.from), 10)
			b = append(b, `,"end":`...)
			b = strconv.AppendInt(b, int64(s.to), 10)
			b = append(b, `,"size":`...)
			b = strconv.AppendInt(b, int64(len(k.TokenDelta.Text)), 10)
			b = append(b, '}')
		}
	case *messages.RunEvent_StageStarted:
		m := k.StageStarted
		b = appendStep(b, m.Stage, m.Step)
		b = appendStrMax(b, "model", m.Model, shortFieldMax)
		b = appendStrMax(b, "provider", m.Provider, shortFieldMax)
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(m.Attempt), 10)
		b = append(b, `,"fallback":`...)
		b = strconv.AppendBool(b, m.Fallback)
		if m.Final {
			b = append(b, `,"final":true`...)
		}
		if m.PromptTokens > 0 {
			b = append(b, `,"prompt_tokens":`...)
			b = strconv.AppendInt(b, m.PromptTokens, 10)
		}
		if m.Note != "" {
			b = appendStrMax(b, "note", m.Note, long)
		}
	case *messages.RunEvent_StageCompleted:
		// The output is not repeated: it is the exact concatenation of the
		// attempt's deltas, which the reader has; output_bytes checks it,
		// and the run resource serves it whole.
		m := k.StageCompleted
		b = appendStep(b, m.Stage, m.Step)
		b = appendStrMax(b, "model", m.Model, shortFieldMax)
		b = append(b, `,"output_bytes":`...)
		b = strconv.AppendInt(b, int64(len(m.Output)), 10)
		b = appendUsage(b, m.Usage)
		if hu := m.HedgeUsage; hu != nil {
			// The hedge race's loser: billed with the step.
			b = appendStrMax(b, "hedge_model", m.HedgeModel, shortFieldMax)
			b = append(b, `,"hedge_usage":{"prompt_tokens":`...)
			b = strconv.AppendInt(b, hu.GetPromptTokens(), 10)
			b = append(b, `,"completion_tokens":`...)
			b = strconv.AppendInt(b, hu.GetCompletionTokens(), 10)
			b = append(b, `,"total_tokens":`...)
			b = strconv.AppendInt(b, hu.GetTotalTokens(), 10)
			b = append(b, '}')
		}
		b = appendMillis(b, "ttft_ms", m.GetTtft().AsDuration())
		b = appendMillis(b, "duration_ms", m.GetDuration().AsDuration())
	case *messages.RunEvent_StageRestarted:
		b = appendStep(b, k.StageRestarted.Stage, k.StageRestarted.Step)
		b = appendStrMax(b, "reason", k.StageRestarted.Reason, long)
		if u := k.StageRestarted.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_RunCompleted:
		// The answer is the final step's output: see StageCompleted.
		b = append(b, `,"answer_bytes":`...)
		b = strconv.AppendInt(b, int64(len(k.RunCompleted.Answer)), 10)
		b = appendUsage(b, k.RunCompleted.Usage)
		if k.RunCompleted.Cached {
			b = append(b, `,"cached":true`...)
			b = appendStrMax(b, "cached_from", k.RunCompleted.CachedFrom, shortFieldMax)
		}
	case *messages.RunEvent_RunFailed:
		m := k.RunFailed
		b = appendStrMax(b, "reason", m.Reason, long)
		if m.Stage != messages.Stage_STAGE_UNSPECIFIED || m.Step != "" {
			b = appendStep(b, m.Stage, m.Step)
		}
		b = appendStrMax(b, "code", m.Code, shortFieldMax)
		if u := m.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_RunCancelled:
		b = appendStrMax(b, "reason", k.RunCancelled.Reason, long)
		if u := k.RunCancelled.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_RunPlanned:
		b = appendStrMax(b, "strategy", k.RunPlanned.Strategy, shortFieldMax)
		b = appendPlan(b, k.RunPlanned.Steps, fit-(len(b)-start)-1)
	case *messages.RunEvent_StepSkipped:
		m := k.StepSkipped
		b = appendStep(b, m.Stage, m.Step)
		b = appendStrMax(b, "reason", m.Reason, long)
		b = appendStrMax(b, "code", m.Code, shortFieldMax)
		if u := m.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_Ranking:
		m := k.Ranking
		if !m.Aggregate || m.Step != "" {
			b = appendStrMax(b, "step", m.Step, stepFieldMax)
		}
		b = append(b, `,"aggregate":`...)
		b = strconv.AppendBool(b, m.Aggregate)
		b = appendRanked(b, m.Ranked, fit-(len(b)-start)-1)
	case *messages.RunEvent_StepNote:
		m := k.StepNote
		b = appendStrMax(b, "step", m.Step, stepFieldMax)
		b = appendStrMax(b, "kind", m.Kind, shortFieldMax)
		// The message and the raw text share the long budget: the message
		// (a sentence) first, at most half of it.
		n := len(b)
		b = appendStrMax(b, "message", m.Message, long/2)
		if m.Raw != "" {
			b = appendStrMax(b, "raw", m.Raw, max(long-(len(b)-n), len(ellipsis)+6))
		}
	case *messages.RunEvent_ModelChosen:
		b = appendModelChosen(b, k.ModelChosen, long)
	}
	return append(b, '}')
}

// planTiers are the ways a run_planned's steps are written, tried in turn
// until the event fits its bound: whole; without each step's inputs
// (readers derive them, see docs/api.md); with model and provider names
// cut to 32 bytes as well (each step's stage_started has them whole). A
// plan that fits none of them (only a bound near MinMaxEventBytes does
// that) is cut: its first steps, "truncated":true and "step_count".
var planTiers = [...]struct {
	inputs bool
	names  int
}{{true, shortFieldMax}, {false, shortFieldMax}, {false, 32}}

// appendPlan writes run_planned's "steps" (and "inputs_omitted",
// "truncated", "step_count" when it had to), in at most room bytes.
func appendPlan(b []byte, steps []*messages.PlannedStep, room int) []byte {
	start := len(b)
	for _, t := range planTiers {
		b = b[:start]
		if !t.inputs {
			b = append(b, `,"inputs_omitted":true`...)
		}
		b = append(b, `,"steps":[`...)
		for i, p := range steps {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPlannedStep(b, p, t.inputs, t.names)
		}
		b = append(b, ']')
		if len(b)-start <= room {
			return b
		}
	}
	// Cut: as many steps as fit before the tail.
	b = b[:start]
	b = append(b, `,"inputs_omitted":true,"truncated":true,"step_count":`...)
	b = strconv.AppendInt(b, int64(len(steps)), 10)
	b = append(b, `,"steps":[`...)
	for i, p := range steps {
		n := len(b)
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPlannedStep(b, p, false, 32)
		if len(b)-start+1 > room {
			b = b[:n]
			break
		}
	}
	return append(b, ']')
}

func appendPlannedStep(b []byte, p *messages.PlannedStep, inputs bool, names int) []byte {
	b = append(b, `{"step":"`...)
	b = appendEscapedMax(b, stepOf(p.Step, p.Stage), stepFieldMax)
	b = append(b, `","stage":"`...)
	b = append(b, stageString(p.Stage)...)
	b = append(b, '"')
	b = appendStrMax(b, "model", p.Model, names)
	b = appendStrMax(b, "provider", p.Provider, names)
	if inputs {
		b = append(b, `,"inputs":[`...)
		for i, in := range p.Inputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = appendEscapedMax(b, in, stepFieldMax)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	b = append(b, `,"min_inputs":`...)
	b = strconv.AppendInt(b, int64(p.MinInputs), 10)
	b = append(b, `,"final":`...)
	b = strconv.AppendBool(b, p.Final)
	b = append(b, `,"layer":`...)
	b = strconv.AppendInt(b, int64(p.Layer), 10)
	return append(b, '}')
}

// appendRanked writes a ranking's "ranked" list, best first, in at most
// room bytes: the entries that fit, and "truncated":true if not all did
// (a council has at most 16 answers: only a bound near MinMaxEventBytes
// cuts it).
func appendRanked(b []byte, ranked []*messages.RankedStep, room int) []byte {
	const tail = `,"truncated":true`
	start := len(b)
	b = append(b, `,"ranked":[`...)
	for i, r := range ranked {
		n := len(b)
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"step":"`...)
		b = appendEscapedMax(b, r.Step, stepFieldMax)
		b = append(b, `","label":"`...)
		b = appendEscapedMax(b, r.Label, 8)
		b = append(b, `","average_rank":`...)
		b = appendFloat(b, r.AverageRank)
		b = append(b, `,"votes":`...)
		b = strconv.AppendInt(b, int64(r.Votes), 10)
		b = append(b, '}')
		// Room for the closing bracket, and for the tail unless this is
		// the last entry.
		need := len(b) - start + 1
		if i < len(ranked)-1 {
			need += len(tail)
		}
		if need > room {
			b = append(b[:n], ']')
			return append(b, tail...)
		}
	}
	return append(b, ']')
}

// appendFloat writes x as a JSON number (0 for NaN and infinities, which
// JSON has not).
func appendFloat(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		x = 0
	}
	return strconv.AppendFloat(b, x, 'g', -1, 64)
}

// appendTime writes an event's time in RFC 3339 (UTC); a time outside
// years 0-9999 (never logged, but the encoding is bounded) is written as
// the zero time.
func appendTime(b []byte, ev *messages.RunEvent) []byte {
	t := ev.GetTime().AsTime().UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		t = time.Time{}
	}
	return t.AppendFormat(b, time.RFC3339Nano)
}

// appendStep writes a step event's ,"step":"…","stage":"…": the step id
// (for a chain's stage, its name) and its role.
func appendStep(b []byte, s messages.Stage, step string) []byte {
	b = append(b, `,"step":"`...)
	b = appendEscapedMax(b, stepOf(step, s), stepFieldMax)
	b = append(b, `","stage":"`...)
	b = append(b, stageString(s)...)
	return append(b, '"')
}

// appendStrMax writes ,"key":"val" with val cut to at most max encoded
// bytes (see appendEscapedMax).
func appendStrMax(b []byte, key, val string, max int) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":"`...)
	b = appendEscapedMax(b, val, max)
	return append(b, '"')
}

func appendMillis(b []byte, key string, d time.Duration) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":`...)
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

func appendUsage(b []byte, u *messages.Usage) []byte {
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, u.GetPromptTokens(), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, u.GetCompletionTokens(), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, u.GetTotalTokens(), 10)
	if u.GetEstimated() {
		b = append(b, `,"estimated":true`...)
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// escapedUnit returns the length in s of its first unit of escaping (one
// byte, a rune, or an invalid byte) and the length of its escaped form.
// appendEscaped escapes each unit on its own, so s cut between units
// escapes to the same text in pieces as whole.
func escapedUnit(s string) (in, out int) {
	c := s[0]
	if c < utf8.RuneSelf {
		switch {
		case c >= 0x20 && c != '"' && c != '\\':
			return 1, 1
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			return 1, 2
		}
		return 1, 6
	}
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size == 1 {
		return 1, 6 // \ufffd
	}
	if r == '\u2028' || r == '\u2029' {
		return size, 6
	}
	return size, size
}

// escapedLen is len(appendEscaped(nil, s)), without writing it.
func escapedLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf && c >= 0x20 && c != '"' && c != '\\' {
			i++
			n++
			continue
		}
		in, out := escapedUnit(s[i:])
		i += in
		n += out
	}
	return n
}

// escapedPrefix returns the length of the longest prefix of s, cut between
// units, whose escaped form is at most max bytes (at least one unit if
// max >= 6, the longest a unit escapes to).
func escapedPrefix(s string, max int) int {
	n := 0
	for i := 0; i < len(s); {
		in, out := escapedUnit(s[i:])
		if n+out > max {
			return i
		}
		i += in
		n += out
	}
	return len(s)
}

// ellipsis ends a string appendEscapedMax cut.
const ellipsis = "…"

// appendEscapedMax is appendEscaped with the escaped text bounded to max
// bytes: a longer s is cut between characters and ends with "…".
func appendEscapedMax(b []byte, s string, max int) []byte {
	// escapedPrefix reads at most max bytes' worth: a long s costs no more
	// than a short one.
	n := escapedPrefix(s, max)
	if n == len(s) {
		return appendEscaped(b, s)
	}
	n = escapedPrefix(s[:n], max-len(ellipsis))
	b = appendEscaped(b, s[:n])
	return append(b, ellipsis...)
}

// appendEscaped writes s as the inside of a JSON string. Invalid UTF-8
// becomes U+FFFD; U+2028 and U+2029 are escaped so the JSON is also valid JS.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendModelChosen writes a model_chosen event's fields (docs/api.md,
// Cost and quality): the step, its model and quality tier, why, whether
// it is a downgrade and from what, and the run's estimated cost after it.
func appendModelChosen(b []byte, m *messages.StepModel, long int) []byte {
	b = appendStrMax(b, "step", m.Step, stepFieldMax)
	b = appendStrMax(b, "model", m.Model, shortFieldMax)
	b = appendStrMax(b, "provider", m.Provider, shortFieldMax)
	if m.Quality > 0 {
		b = append(b, `,"quality":`...)
		b = strconv.AppendInt(b, int64(m.Quality), 10)
	}
	b = appendStrMax(b, "reason", m.Reason, long/2)
	if m.Downgraded {
		b = append(b, `,"downgraded":true`...)
	}
	if m.FromModel != "" {
		b = appendStrMax(b, "from_model", m.FromModel, shortFieldMax)
		b = appendStrMax(b, "from_provider", m.FromProvider, shortFieldMax)
		b = append(b, `,"from_quality":`...)
		b = strconv.AppendInt(b, int64(m.FromQuality), 10)
	}
	b = append(b, `,"estimate_cost_usd":`...)
	return appendFloat(b, m.EstimateCostUsd)
}
