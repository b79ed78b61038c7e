package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/respjson"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// thinkingProfiles: every strategy on a paced simulator (each step streams
// for about 150 ms, so parallel steps' tokens interleave in the log and a
// reader has time to see the first step's tokens before it completes),
// and councils whose chairman fails before and after its first token.
const thinkingProfiles = `
default_profile: chain
providers:
  paced:  {kind: sim, sim: {itl: 3ms, output_tokens: 50}}
  broken: {kind: sim, sim: {output_tokens: 40, error_rate: 1, error_kind: auth}}
  cut:    {kind: sim, sim: {itl: 1ms, output_tokens: 40, error_rate: 1, error_kind: auth, error_after: 5}}
profiles:
  chain:
    provider: paced
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  moa:
    strategy: moa
    provider: paced
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
  council:
    strategy: council
    provider: paced
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {model: d}
  vote:
    strategy: vote
    provider: paced
    samples: [{model: a}, {model: b}]
    count: 3
  judged:
    strategy: vote
    provider: paced
    samples: [{model: a}]
    count: 3
    method: judge
    judge: {model: j}
  deadchair:
    strategy: council
    provider: paced
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {provider: broken, model: chair}
  cutchair:
    strategy: council
    provider: paced
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {provider: cut, model: chair}
`

// chatOutcome is what an OpenAI client got from one chat completion.
type chatOutcome struct {
	runID     string
	content   string
	reasoning string
	usage     openai.CompletionUsage
	// Streamed only: how many chunks carried reasoning_content, and the
	// run's last_seq (GET /v1/runs/{id}) right after the first of them
	// arrived.
	reasoningChunks int
	seqAtFirst      uint64
}

// extraString decodes a field the SDK does not know (reasoning_content).
func extraString(t *testing.T, f respjson.Field) (string, bool) {
	t.Helper()
	if f.Raw() == "" || f.Raw() == "null" { // an extra field is not Valid(): the SDK has no type for it
		return "", false
	}
	var s string
	if err := json.Unmarshal([]byte(f.Raw()), &s); err != nil {
		t.Fatalf("reasoning_content %s: %v", f.Raw(), err)
	}
	return s, true
}

// streamChat sends a streamed chat completion through the SDK and reads it
// to its end.
func streamChat(t *testing.T, g *testGateway, model string) chatOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var httpResp *http.Response
	client := sdkClient(g.URL)
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         model,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("How do B-trees stay balanced?")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		Seed:          openai.Int(7),
	}, option.WithResponseInto(&httpResp))
	defer stream.Close()
	var out chatOutcome
	var reasoning, content strings.Builder
	acc := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		if out.runID == "" {
			out.runID = httpResp.Header.Get("X-QLC-Run-Id")
		}
		if c.JSON.ExtraFields["usage"].Valid() || c.Usage.TotalTokens > 0 {
			out.usage = c.Usage
		}
		if len(c.Choices) == 0 {
			continue
		}
		content.WriteString(c.Choices[0].Delta.Content)
		if s, ok := extraString(t, c.Choices[0].Delta.JSON.ExtraFields["reasoning_content"]); ok {
			if out.reasoningChunks == 0 {
				var v runView
				do(t, "GET", g.URL+"/v1/runs/"+out.runID, "", &v)
				out.seqAtFirst = v.LastSeq
			}
			out.reasoningChunks++
			reasoning.WriteString(s)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("%s: %v", model, err)
	}
	if acc.Choices[0].Message.Content != content.String() || acc.Choices[0].FinishReason != "stop" {
		t.Fatalf("%s: the accumulator disagrees: %+v", model, acc.Choices)
	}
	out.content, out.reasoning = content.String(), reasoning.String()
	return out
}

// blockingChat sends a chat completion without streaming.
func blockingChat(t *testing.T, g *testGateway, model string) chatOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var httpResp *http.Response
	client := sdkClient(g.URL)
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("How do B-trees stay balanced?")},
		Seed:     openai.Int(7),
	}, option.WithResponseInto(&httpResp))
	if err != nil {
		t.Fatalf("%s: %v", model, err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].FinishReason != "stop" {
		t.Fatalf("%s: %+v", model, resp)
	}
	out := chatOutcome{runID: httpResp.Header.Get("X-QLC-Run-Id"), content: resp.Choices[0].Message.Content, usage: resp.Usage}
	if s, ok := extraString(t, resp.Choices[0].Message.JSON.ExtraFields["reasoning_content"]); ok {
		out.reasoning, out.reasoningChunks = s, 1
	}
	return out
}

// runSteps is what a run's log says about its steps.
type runSteps struct {
	evs       []*messages.RunEvent
	started   []string // non-final steps, in the order they first started
	header    map[string]string
	output    map[string]string
	doneSeq   map[string]uint64
	final     string
	answer    string
	usage     *messages.Usage
	stepUsage int64 // total tokens of every step, void attempts and left-out steps included
	switches  int   // times consecutive token deltas of the log belong to different steps
	aggregate bool  // the log has a council's aggregate ranking
}

func readRunSteps(t *testing.T, g *testGateway, runID string) runSteps {
	t.Helper()
	hub, err := g.Engine.Hub(runID)
	if err != nil {
		t.Fatal(err)
	}
	evs := hub.Events(1)
	rs := runSteps{evs: evs, header: map[string]string{}, output: map[string]string{}, doneSeq: map[string]uint64{}}
	lastDelta := ""
	for _, ev := range evs {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			m := k.StageStarted
			id := chatStepID(m.Step, m.Stage)
			if m.Final {
				rs.final = id
				continue
			}
			if _, ok := rs.header[id]; !ok {
				rs.started = append(rs.started, id)
			}
			title := stagework.Stage(m.Stage).Title()
			if !stagework.Stage(m.Stage).Chain() {
				title += " " + id
			}
			rs.header[id] = "### " + title + " · " + m.Model + "\n\n"
		case *messages.RunEvent_TokenDelta:
			id := chatStepID(k.TokenDelta.Step, k.TokenDelta.Stage)
			if lastDelta != "" && id != lastDelta {
				rs.switches++
			}
			lastDelta = id
		case *messages.RunEvent_StageCompleted:
			id := chatStepID(k.StageCompleted.Step, k.StageCompleted.Stage)
			rs.output[id], rs.doneSeq[id] = k.StageCompleted.Output, ev.Seq
			rs.stepUsage += k.StageCompleted.GetUsage().GetTotalTokens()
		case *messages.RunEvent_StageRestarted:
			rs.stepUsage += k.StageRestarted.GetUsage().GetTotalTokens()
		case *messages.RunEvent_StepSkipped:
			rs.stepUsage += k.StepSkipped.GetUsage().GetTotalTokens()
		case *messages.RunEvent_Ranking:
			rs.aggregate = rs.aggregate || k.Ranking.Aggregate
		case *messages.RunEvent_RunCompleted:
			rs.answer, rs.usage = k.RunCompleted.Answer, k.RunCompleted.Usage
		case *messages.RunEvent_RunFailed:
			t.Fatalf("run failed: %v", k.RunFailed)
		}
	}
	return rs
}

// checkChat checks a chat completion against its run's log: content is the
// answer, usage the run's total (every step's); with thinking, the
// reasoning holds every non-final step's whole output right after its
// header, in the order the steps started; without, there is none.
func checkChat(t *testing.T, g *testGateway, model string, out chatOutcome, thinking bool) runSteps {
	t.Helper()
	rs := readRunSteps(t, g, out.runID)
	if rs.usage == nil {
		t.Fatalf("%s: the run did not complete", model)
	}
	if out.content != rs.answer || out.content == "" {
		t.Fatalf("%s: content (%d bytes) is not the run's answer (%d bytes)", model, len(out.content), len(rs.answer))
	}
	if out.usage.TotalTokens != rs.usage.TotalTokens || out.usage.PromptTokens != rs.usage.PromptTokens || out.usage.CompletionTokens != rs.usage.CompletionTokens {
		t.Fatalf("%s: usage %+v, the run's %v", model, out.usage, rs.usage)
	}
	if rs.usage.TotalTokens != rs.stepUsage {
		t.Fatalf("%s: the run's usage %d is not the sum of its steps' %d", model, rs.usage.TotalTokens, rs.stepUsage)
	}
	if !thinking {
		if out.reasoningChunks != 0 || out.reasoning != "" {
			t.Fatalf("%s: reasoning_content without -thinking: %q", model, out.reasoning)
		}
		return rs
	}
	if len(rs.started) == 0 {
		t.Fatalf("%s: no step before the final one", model)
	}
	at := 0
	for _, id := range rs.started {
		text, ok := rs.output[id]
		if !ok {
			continue // left out: its line is checked by the caller
		}
		i := strings.Index(out.reasoning[at:], rs.header[id]+text)
		if i < 0 {
			t.Fatalf("%s: the reasoning lacks %s's whole output after its header %q (or it is out of start order %v)\n--- reasoning:\n%s",
				model, id, rs.header[id], rs.started, out.reasoning)
		}
		at += i + len(rs.header[id]) + len(text)
	}
	return rs
}

// Every strategy through the official SDK, streamed and not, with and
// without -thinking.
func TestOpenAIThinkingStrategies(t *testing.T) {
	g := startGateway(t, thinkingProfiles, nil)
	for _, profile := range []string{"chain", "moa", "council", "vote", "judged"} {
		t.Run(profile, func(t *testing.T) {
			plain, thinking := "qlc-"+profile, "qlc-"+profile+"-thinking"

			out := streamChat(t, g, thinking)
			rs := checkChat(t, g, thinking, out, true)
			// The first reasoning chunk (the first step's header and
			// whatever of its text was ready) reached the client before
			// that step completed.
			if first := rs.started[0]; out.seqAtFirst >= rs.doneSeq[first] {
				t.Fatalf("%s: the first reasoning chunk arrived when the log was at seq %d; %s completed at seq %d",
					thinking, out.seqAtFirst, first, rs.doneSeq[first])
			}
			if out.reasoningChunks < 2 {
				t.Fatalf("%s: %d reasoning chunks: nothing streamed live", thinking, out.reasoningChunks)
			}
			if profile != "chain" && profile != "vote" && rs.switches < 3 {
				t.Fatalf("%s: parallel steps' tokens did not interleave in the log (%d switches): the test shows nothing", thinking, rs.switches)
			}
			if rs.aggregate && !strings.Contains(out.reasoning, "Council ranking: ") {
				t.Fatalf("%s: no ranking line:\n%s", thinking, out.reasoning)
			}
			if profile == "vote" && !strings.Contains(out.reasoning, "— majority") && !strings.Contains(out.reasoning, "no sample stated") {
				t.Fatalf("%s: no tally line:\n%s", thinking, out.reasoning)
			}
			t.Logf("%s: %d reasoning chunks, %d bytes; %d step switches in the log", thinking, out.reasoningChunks, len(out.reasoning), rs.switches)

			checkChat(t, g, plain, streamChat(t, g, plain), false)
			nb := blockingChat(t, g, thinking)
			checkChat(t, g, thinking, nb, true)
			checkChat(t, g, plain, blockingChat(t, g, plain), false)
		})
	}
}

// A council whose chairman fails before its first token: the synthetic
// step "answer" (the best-ranked member's) is the final step, streamed as
// content; the reasoning says why.
func TestOpenAIThinkingChairmanFallback(t *testing.T) {
	g := startGateway(t, thinkingProfiles, nil)
	for _, model := range []string{"qlc-deadchair-thinking", "qlc-deadchair"} {
		thinking := strings.HasSuffix(model, "-thinking")
		out := streamChat(t, g, model)
		rs := checkChat(t, g, model, out, thinking)
		if rs.final != "answer" {
			t.Fatalf("%s: final step %q, want the fallback answer", model, rs.final)
		}
		if thinking && (!strings.Contains(out.reasoning, "— chairman left out: ") || !strings.Contains(out.reasoning, "the chairman failed")) {
			t.Fatalf("%s: the reasoning does not say the chairman failed:\n%s", model, out.reasoning)
		}
		checkChat(t, g, model, blockingChat(t, g, model), thinking)
	}
}

// A final step that fails after its text began to stream as content
// cannot be taken back: the stream ends with an error chunk that says so.
func TestOpenAIThinkingFinalStepFailsMidStream(t *testing.T) {
	g := startGateway(t, thinkingProfiles, nil)
	for _, model := range []string{"qlc-cutchair-thinking", "qlc-cutchair"} {
		client := sdkClient(g.URL)
		stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		content := ""
		for stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				content += c.Choices[0].Delta.Content
			}
		}
		err := stream.Err()
		stream.Close()
		if content == "" || err == nil || !strings.Contains(err.Error(), "after streaming began") {
			t.Fatalf("%s: content %q, error %v; want the chairman's first tokens, then an error", model, content, err)
		}
	}
}

// Model names: every profile has a -thinking model; a profile's own name
// wins over a thinking name; an unknown -thinking model is an unknown model.
func TestOpenAIThinkingModelNames(t *testing.T) {
	g := startGateway(t, `
providers:
  sim: {kind: sim, sim: {output_tokens: 20}}
profiles:
  x:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  x-thinking:
    provider: sim
    stages: {generator: {model: g2}, refiner: {model: r2}, validator: {model: v2}, curator: {model: c2}}
  y:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`, nil)
	client := sdkClient(g.URL)
	models, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range models.Data {
		ids = append(ids, m.ID)
	}
	// x's thinking model would be named like the profile x-thinking: the
	// profile wins, and the name is listed once.
	if want := "qlc-x qlc-x-thinking qlc-y qlc-x-thinking-thinking qlc-y-thinking"; strings.Join(ids, " ") != want {
		t.Fatalf("models: %v, want %s", ids, want)
	}
	for model, want := range map[string]struct {
		profile  string
		thinking bool
	}{
		"qlc-x":                   {"x", false},
		"qlc-x-thinking":          {"x-thinking", false},
		"qlc-x-thinking-thinking": {"x-thinking", true},
		"qlc-y-thinking":          {"y", true},
	} {
		out := blockingChat(t, g, model)
		var v runView
		do(t, "GET", g.URL+"/v1/runs/"+out.runID, "", &v)
		if v.Profile != want.profile || (out.reasoning != "") != want.thinking {
			t.Fatalf("%s ran profile %q with reasoning %v; want %q, %v", model, v.Profile, out.reasoning != "", want.profile, want.thinking)
		}
	}
	var unknown string
	for _, model := range []string{"qlc-nope", "qlc-nope-thinking", "qlc--thinking", "qlc-thinking", "x-thinking"} {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || !strings.Contains(apiErr.Message, "qlc-y-thinking") {
			t.Fatalf("%s: %v", model, err)
		}
		msg := strings.Replace(apiErr.Message, model, "M", 1)
		if unknown == "" {
			unknown = msg
		} else if msg != unknown {
			t.Fatalf("%s: %q; other unknown models get %q", model, msg, unknown)
		}
	}
}

// viewOf runs a chatView over events and returns its reasoning, its
// content and the first abort.
func viewOf(final string, thinking bool, evs []*messages.RunEvent) (reasoning, content, abort string) {
	v := newChatView(final, thinking)
	var r reasoningText
	var c strings.Builder
	sink := &splitSink{r: &r, c: &c}
	for _, ev := range evs {
		if code, _ := v.add(ev, sink); code != "" && abort == "" {
			abort = code
		}
		if ev.GetRunCompleted() != nil {
			v.drain(sink)
		}
	}
	return r.String(), c.String(), abort
}

type splitSink struct {
	r *reasoningText
	c *strings.Builder
}

func (s *splitSink) reasoning(t string) { s.r.WriteString(t) }
func (s *splitSink) content(t string)   { s.c.WriteString(t) }

// A log of parallel steps whose tokens interleave becomes reasoning with
// one step at a time, in start order: the first live, the others whole
// when their turn comes, a restarted step's redo after a note, a step left
// out before it started and the council's ranking as lines.
func TestThinkingViewOrdersInterleavedSteps(t *testing.T) {
	seq := uint64(0)
	ev := func(k any) *messages.RunEvent {
		seq++
		e := &messages.RunEvent{Seq: seq}
		switch m := k.(type) {
		case *messages.StageStarted:
			e.Kind = &messages.RunEvent_StageStarted{StageStarted: m}
		case *messages.TokenDelta:
			e.Kind = &messages.RunEvent_TokenDelta{TokenDelta: m}
		case *messages.StageCompleted:
			e.Kind = &messages.RunEvent_StageCompleted{StageCompleted: m}
		case *messages.StageRestarted:
			e.Kind = &messages.RunEvent_StageRestarted{StageRestarted: m}
		case *messages.StepSkipped:
			e.Kind = &messages.RunEvent_StepSkipped{StepSkipped: m}
		case *messages.Ranking:
			e.Kind = &messages.RunEvent_Ranking{Ranking: m}
		case *messages.RunCompleted:
			e.Kind = &messages.RunEvent_RunCompleted{RunCompleted: m}
		}
		return e
	}
	P := messages.Stage_STAGE_PROPOSER
	start := func(id, model string) *messages.RunEvent {
		return ev(&messages.StageStarted{Stage: P, Step: id, Model: model, Attempt: 1})
	}
	delta := func(id, text string) *messages.RunEvent {
		return ev(&messages.TokenDelta{Stage: P, Step: id, Text: text})
	}
	done := func(id, out string) *messages.RunEvent {
		return ev(&messages.StageCompleted{Stage: P, Step: id, Output: out})
	}
	evs := []*messages.RunEvent{
		start("p1.1", "a"), start("p1.2", "b"), start("p1.3", "c"),
		delta("p1.1", "A1"), delta("p1.2", "B1"), delta("p1.3", "C1"), delta("p1.2", "B2"),
		ev(&messages.StageRestarted{Stage: P, Step: "p1.3", Reason: "cut"}),
		delta("p1.3", "C1'"), done("p1.2", "B1B2"),
		ev(&messages.StepSkipped{Step: "p1.4", Stage: P, Reason: "no inputs", Code: "no_inputs"}),
		delta("p1.1", "A2"), done("p1.1", "A1A2"),
		delta("p1.3", "C2'"), done("p1.3", "C1'C2'"),
		ev(&messages.Ranking{Aggregate: true, Ranked: []*messages.RankedStep{{Step: "p1.2", Label: "B", AverageRank: 1}, {Step: "p1.1", Label: "A", AverageRank: 2}}}),
		ev(&messages.StageStarted{Stage: messages.Stage_STAGE_AGGREGATOR, Step: "aggregator", Model: "d", Final: true}),
		ev(&messages.TokenDelta{Stage: messages.Stage_STAGE_AGGREGATOR, Step: "aggregator", Text: "X"}),
		ev(&messages.TokenDelta{Stage: messages.Stage_STAGE_AGGREGATOR, Step: "aggregator", Text: "Y"}),
		ev(&messages.StageCompleted{Stage: messages.Stage_STAGE_AGGREGATOR, Step: "aggregator", Output: "XY"}),
		ev(&messages.RunCompleted{Answer: "XY"}),
	}
	const want = "### Proposer p1.1 · a\n\nA1A2" +
		"\n\n### Proposer p1.2 · b\n\nB1B2" +
		"\n\n### Proposer p1.3 · c\n\n— p1.3 restarted (cut); redone below\n\nC1'C2'" +
		"\n\n— p1.4 left out: no inputs\n\n" +
		"Council ranking: B (p1.2, 1.00), A (p1.1, 2.00)\n\n"
	r, c, abort := viewOf("aggregator", true, evs)
	if r != want || c != "XY" || abort != "" {
		t.Fatalf("reasoning:\n%q\nwant:\n%q\ncontent %q, abort %q", r, want, c, abort)
	}
	// Without -thinking: the answer only.
	if r, c, abort := viewOf("aggregator", false, evs); r != "" || c != "XY" || abort != "" {
		t.Fatalf("without thinking: %q %q %q", r, c, abort)
	}
	// The final step restarted after its text went out: the stream cannot go on.
	cut := append(evs[:len(evs)-2:len(evs)-2], ev(&messages.StageRestarted{Stage: messages.Stage_STAGE_AGGREGATOR, Step: "aggregator", Reason: "cut"}))
	if _, _, abort := viewOf("aggregator", true, cut); abort != "stage_restarted" {
		t.Fatalf("final step restarted after streaming: abort %q", abort)
	}
}

// BenchmarkThinkingFirstChunk: a streamed chat completion with a -thinking
// model on zero-latency profiles (a chain, and a moa whose three proposers
// start at once): the time from sending the request to the first chunk
// carrying reasoning_content (the first step's header, sent as it starts)
// and to the first chunk carrying the first step's text, against the first
// step's own time to first token (its StageCompleted ttft, from the log).
// Reported, in µs: ttfc (first reasoning chunk), ttft (the step's), tok
// (first chunk with the step's text) at p50 and p99; over-p99 = p99 of
// tok − ttft per request (the goal: ≤ 2 ms); relay = the time
// from the first token's entry in the log (its event time) to the client
// reading it, at p50 and p99.
func BenchmarkThinkingFirstChunk(b *testing.B) {
	g := startGateway(b, `
providers:
  sim: {kind: sim, sim: {output_tokens: 60}}
profiles:
  chain:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  moa:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
`, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	report := benchTracing(b) // QLC_BENCH_TRACING=store: as make run does (-trace-store)
	defer report(1)
	for _, profile := range []string{"chain", "moa"} {
		b.Run(profile, func(b *testing.B) {
			body := `{"model":"qlc-` + profile + `-thinking","stream":true,"messages":[{"role":"user","content":"How do B-trees stay balanced?"}]}`
			br := bufio.NewReaderSize(nil, 32<<10)
			for range 20 {
				thinkingFirst(b, g, client, body, br)
			}
			var ttfc, ttft, tok, over, relay []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				m := thinkingFirst(b, g, client, body, br)
				ttfc, ttft, tok = append(ttfc, m.ttfc), append(ttft, m.ttft), append(tok, m.tok)
				over, relay = append(over, m.tok-m.ttft), append(relay, m.relay)
			}
			b.StopTimer()
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			b.ReportMetric(us(percentile(ttfc, 0.5)), "ttfc-p50-µs")
			b.ReportMetric(us(percentile(ttfc, 0.99)), "ttfc-p99-µs")
			b.ReportMetric(us(percentile(ttft, 0.5)), "ttft-p50-µs")
			b.ReportMetric(us(percentile(ttft, 0.99)), "ttft-p99-µs")
			b.ReportMetric(us(percentile(tok, 0.5)), "tok-p50-µs")
			b.ReportMetric(us(percentile(tok, 0.99)), "tok-p99-µs")
			b.ReportMetric(us(percentile(over, 0.99)), "over-p99-µs")
			b.ReportMetric(us(percentile(relay, 0.5)), "relay-p50-µs")
			b.ReportMetric(us(percentile(relay, 0.99)), "relay-p99-µs")
		})
	}
}

type firstChunk struct{ ttfc, tok, ttft, relay time.Duration }

var reasoningKey = []byte(`"reasoning_content":"`)

// thinkingFirst sends one streamed request and measures it (see
// BenchmarkThinkingFirstChunk); it reads the stream to its end.
func thinkingFirst(b *testing.B, g *testGateway, client *http.Client, body string, br *bufio.Reader) firstChunk {
	t0 := time.Now()
	resp, err := client.Post(g.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		b.Fatalf("chat: %d %s", resp.StatusCode, msg)
	}
	// The benchmark's own reader of the run's log, open until it has
	// read it (a run is not packed while it is read).
	hub, err := g.Engine.Hub(resp.Header.Get("X-QLC-Run-Id"))
	if err != nil {
		b.Fatal(err)
	}
	sub := hub.Subscribe(1)
	defer sub.Close()
	br.Reset(resp.Body)
	var m firstChunk
	var tokAt time.Time
	var reasoning strings.Builder
	for tokAt.IsZero() {
		line, err := br.ReadSlice('\n')
		now := time.Now()
		if err != nil {
			b.Fatalf("stream ended before the first step's text: %v", err)
		}
		if !bytes.HasPrefix(line, []byte("data: ")) || !bytes.Contains(line, reasoningKey) {
			continue
		}
		if m.ttfc == 0 {
			m.ttfc = now.Sub(t0)
		}
		var ch struct {
			Choices []struct {
				Delta struct {
					Reasoning string `json:"reasoning_content"`
				}
			}
		}
		if err := json.Unmarshal(line[len("data: "):], &ch); err != nil || len(ch.Choices) != 1 {
			b.Fatalf("chunk %q: %v", line, err)
		}
		reasoning.WriteString(ch.Choices[0].Delta.Reasoning)
		if _, text, ok := strings.Cut(reasoning.String(), "\n\n"); ok && text != "" { // past the header
			m.tok, tokAt = now.Sub(t0), now
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	first := ""
	for _, ev := range hub.Events(1) {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			if first == "" {
				first = chatStepID(k.StageStarted.Step, k.StageStarted.Stage)
			}
		case *messages.RunEvent_TokenDelta:
			if m.relay == 0 && chatStepID(k.TokenDelta.Step, k.TokenDelta.Stage) == first {
				m.relay = tokAt.Round(0).Sub(ev.Time.AsTime())
			}
		case *messages.RunEvent_StageCompleted:
			if chatStepID(k.StageCompleted.Step, k.StageCompleted.Stage) == first {
				m.ttft = k.StageCompleted.Ttft.AsDuration()
			}
		}
	}
	return m
}

// rawStreamChat reads a streamed chat completion line by line, as a client
// with a plain SSE reader does, and returns it and its largest event.
func rawStreamChat(t *testing.T, g *testGateway, model string) (chatOutcome, int) {
	t.Helper()
	resp, err := http.Post(g.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"`+model+`","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Explain everything."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := chatOutcome{runID: resp.Header.Get("X-QLC-Run-Id")}
	var reasoning, content strings.Builder
	biggest, done := 0, false
	sc := bufio.NewScanner(resp.Body) // its 64 KiB line limit
	for sc.Scan() {
		biggest = max(biggest, len(sc.Bytes())+2)
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ch struct {
			Choices []struct {
				Delta struct {
					Content   string
					Reasoning *string `json:"reasoning_content"`
				}
			}
			Usage *openai.CompletionUsage
			Error *struct{ Message string }
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || ch.Error != nil {
			t.Fatalf("chunk %.200q: %v %v", data, err, ch.Error)
		}
		if ch.Usage != nil {
			out.usage = *ch.Usage
		}
		for _, c := range ch.Choices {
			content.WriteString(c.Delta.Content)
			if c.Delta.Reasoning != nil {
				out.reasoningChunks++
				reasoning.WriteString(*c.Delta.Reasoning)
			}
		}
	}
	if err := sc.Err(); err != nil || !done {
		t.Fatalf("%s: %v, [DONE] seen: %v", model, err, done)
	}
	out.content, out.reasoning = content.String(), reasoning.String()
	return out, biggest
}

// Under the smallest event bound, parallel steps with huge outputs — one
// whole output in a single delta, another in thousands of small ones —
// arrive as chunks within the bound, and decode to the steps' texts.
func TestOpenAIThinkingChunksStayWithinTheBound(t *testing.T) {
	up := startUpstream(t, nil, []string{awkwardText(20000)})
	g := startGateway(t, fmt.Sprintf(`
providers:
  bulk: {kind: sim, sim: {output_tokens: 20000, truncate_at_max_tokens: true}}
  up:   {kind: openai, base_url: %s/v1}
profiles:
  wide:
    strategy: moa
    provider: up
    proposers: [{model: a, max_tokens: 100000}, {provider: bulk, model: b, max_tokens: 20000}, {model: c, max_tokens: 100000}]
    aggregator: {model: d, max_tokens: 100000}
`, up.URL), func(c *Config, _ *actors.Config) { c.MaxEventBytes = MinMaxEventBytes })
	for _, model := range []string{"qlc-wide-thinking", "qlc-wide"} {
		out, biggest := rawStreamChat(t, g, model)
		if biggest > MinMaxEventBytes {
			t.Errorf("%s: an event of %d bytes under a bound of %d", model, biggest, MinMaxEventBytes)
		}
		checkChat(t, g, model, out, strings.HasSuffix(model, "-thinking"))
		t.Logf("%s: %d reasoning chunks, %d bytes of reasoning, %d of content; largest event %d bytes", model, out.reasoningChunks, len(out.reasoning), len(out.content), biggest)
	}
}
