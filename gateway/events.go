package gateway

import (
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

// span is what a reader is sent for a part of a batch: one event, or (when
// hi-lo > 1) consecutive token deltas of one stage coalesced into one.
type span struct{ lo, hi int }

// coalesce splits a batch of events into spans, merging runs of consecutive
// token deltas of the same stage. A batch of one event is one span: a reader
// that keeps up sees every event as it was logged.
func coalesce(dst []span, evs []*messages.RunEvent) []span {
	dst = dst[:0]
	for i := 0; i < len(evs); {
		j := i + 1
		if d := evs[i].GetTokenDelta(); d != nil {
			for j < len(evs) {
				n := evs[j].GetTokenDelta()
				if n == nil || n.Stage != d.Stage {
					break
				}
				j++
			}
		}
		dst = append(dst, span{i, j})
		i = j
	}
	return dst
}

// appendEventJSON writes the JSON of a span of evs (see docs/api.md).
func appendEventJSON(b []byte, evs []*messages.RunEvent, s span) []byte {
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
	b = last.GetTime().AsTime().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	switch k := last.GetKind().(type) {
	case *messages.RunEvent_TokenDelta:
		b = appendStage(b, k.TokenDelta.Stage)
		b = append(b, `,"text":"`...)
		var tokens int64
		for _, ev := range evs[s.lo:s.hi] {
			d := ev.GetTokenDelta()
			b = appendEscaped(b, d.Text)
			tokens += int64(d.Tokens)
		}
		b = append(b, `","tokens":`...)
		b = strconv.AppendInt(b, tokens, 10)
	case *messages.RunEvent_StageStarted:
		m := k.StageStarted
		b = appendStage(b, m.Stage)
		b = appendStr(b, "model", m.Model)
		b = appendStr(b, "provider", m.Provider)
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(m.Attempt), 10)
		b = append(b, `,"fallback":`...)
		b = strconv.AppendBool(b, m.Fallback)
		if m.PromptTokens > 0 {
			b = append(b, `,"prompt_tokens":`...)
			b = strconv.AppendInt(b, m.PromptTokens, 10)
		}
		if m.Note != "" {
			b = appendStr(b, "note", m.Note)
		}
	case *messages.RunEvent_StageCompleted:
		m := k.StageCompleted
		b = appendStage(b, m.Stage)
		b = appendStr(b, "model", m.Model)
		b = appendStr(b, "output", m.Output)
		b = appendUsage(b, m.Usage)
		b = appendMillis(b, "ttft_ms", m.GetTtft().AsDuration())
		b = appendMillis(b, "duration_ms", m.GetDuration().AsDuration())
	case *messages.RunEvent_StageRestarted:
		b = appendStage(b, k.StageRestarted.Stage)
		b = appendStr(b, "reason", k.StageRestarted.Reason)
		if u := k.StageRestarted.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_RunCompleted:
		b = appendStr(b, "answer", k.RunCompleted.Answer)
		b = appendUsage(b, k.RunCompleted.Usage)
	case *messages.RunEvent_RunFailed:
		b = appendStr(b, "reason", k.RunFailed.Reason)
		if k.RunFailed.Stage != messages.Stage_STAGE_UNSPECIFIED {
			b = appendStage(b, k.RunFailed.Stage)
		}
		b = appendStr(b, "code", k.RunFailed.Code)
		if u := k.RunFailed.Usage; u != nil {
			b = appendUsage(b, u)
		}
	case *messages.RunEvent_RunCancelled:
		b = appendStr(b, "reason", k.RunCancelled.Reason)
		if u := k.RunCancelled.Usage; u != nil {
			b = appendUsage(b, u)
		}
	}
	return append(b, '}')
}

func appendStage(b []byte, s messages.Stage) []byte {
	b = append(b, `,"stage":"`...)
	b = append(b, stageString(s)...)
	return append(b, '"')
}

func appendStr(b []byte, key, val string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":"`...)
	b = appendEscaped(b, val)
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
