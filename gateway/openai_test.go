package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/qlc-project/qlc/tokenizer"
)

func sdkClient(base string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

func TestOpenAISDKNonStreaming(t *testing.T) {
	g := startGateway(t, "", nil)
	client := sdkClient(g.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var httpResp *http.Response
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "qlc-instant",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Be brief."),
			openai.UserMessage("What is a B-tree?"),
		},
	}, option.WithResponseInto(&httpResp))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Choices[0].FinishReason != "stop" {
		t.Fatalf("completion: %+v", resp)
	}
	if resp.Usage.CompletionTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
		t.Fatalf("usage: %+v", resp.Usage)
	}
	hub, err := g.Engine.Hub(httpResp.Header.Get("X-QLC-Run-Id"))
	if err != nil {
		t.Fatal(err)
	}
	evs := hub.Events(1)
	if got := evs[len(evs)-1].GetRunCompleted().GetAnswer(); got != resp.Choices[0].Message.Content {
		t.Fatal("the completion is not the run's answer")
	}
}

func TestOpenAISDKStreaming(t *testing.T) {
	g := startGateway(t, "", nil)
	client := sdkClient(g.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "qlc-instant",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Explain DNS caching.")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	var text strings.Builder
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		chunks++
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks < 4 || text.String() == "" || acc.Choices[0].Message.Content != text.String() || acc.Choices[0].FinishReason != "stop" {
		t.Fatalf("stream: %d chunks, text %q, acc %+v", chunks, text.String(), acc.Choices)
	}
	if acc.Usage.CompletionTokens == 0 {
		t.Fatalf("no usage chunk: %+v", acc.Usage)
	}
}

func TestOpenAISDKErrors(t *testing.T) {
	g := startGateway(t, "", nil)
	client := sdkClient(g.URL)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "qlc-nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || !strings.Contains(apiErr.Message, "qlc-instant") {
		t.Fatalf("unknown model: %v", err)
	}
	models, err := client.Models.List(context.Background())
	if err != nil || len(models.Data) != 4 || models.Data[0].ID != "qlc-instant" {
		t.Fatalf("models: %v %+v", err, models)
	}
}

// Closing the connection of a streamed chat completion cancels its run.
func TestOpenAIStreamCloseCancelsRun(t *testing.T) {
	g := startGateway(t, "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var httpResp *http.Response
	client := sdkClient(g.URL)
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "qlc-slow", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithResponseInto(&httpResp))
	if !stream.Next() { // the role chunk
		t.Fatal(stream.Err())
	}
	hub, err := g.Engine.Hub(httpResp.Header.Get("X-QLC-Run-Id"))
	if err != nil {
		t.Fatal(err)
	}
	stream.Close()
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := hub.WaitDone(wctx); err != nil {
		t.Fatal(err)
	}
	evs := hub.Events(1)
	if c := evs[len(evs)-1].GetRunCancelled(); c == nil || c.Reason != "client disconnected" {
		t.Fatalf("run should be cancelled by the disconnect: %v", evs[len(evs)-1])
	}
}

// One QLC's stages can use another QLC as their model, through the openai provider.
func TestQLCAsAnotherQLCsModel(t *testing.T) {
	upstream := startGateway(t, "", nil)
	downstream := startGateway(t, fmt.Sprintf(`
providers:
  qlc: {kind: openai, base_url: %s/v1}
profiles:
  stacked:
    provider: qlc
    stages: {generator: {model: qlc-instant}, refiner: {model: qlc-instant}, validator: {model: qlc-instant}, curator: {model: qlc-instant}}
`, upstream.URL), nil)
	id := createRun(t, downstream.URL, "stacked", "What is consensus?")
	var v runView
	waitStatus(t, downstream.URL, id, "completed", &v)
	for _, s := range v.Stages {
		if s.Output == "" || s.Usage == nil || s.Usage.Estimated {
			t.Fatalf("stage %s via QLC: %+v (usage should be the upstream's own)", s.Stage, s)
		}
	}
	// Each stage was a whole run on the upstream QLC.
	if got := metricValue(t, upstream, `qlc_runs_total{outcome="completed",profile="instant"}`); got != "4" {
		t.Fatalf("upstream completed %s runs, want 4", got)
	}
}

func metricValue(t *testing.T, g *testGateway, series string) string {
	t.Helper()
	resp, err := http.Get(g.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// A provider that answers garbage fails the run with a clear reason; other
// runs are not affected.
func TestProviderGarbageFailsRunClearly(t *testing.T) {
	var calls atomic.Int32
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {this is not json\n\n")
	}))
	defer garbage.Close()
	g := startGateway(t, fmt.Sprintf(`
providers:
  bad: {kind: openai, base_url: %s/v1}
  sim: {kind: sim, sim: {output_tokens: 30}}
profiles:
  broken:
    provider: sim
    stages: {generator: {provider: bad, model: m}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  fine:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`, garbage.URL), nil)
	bad := createRun(t, g.URL, "broken", "q")
	good := createRun(t, g.URL, "fine", "q")
	var v runView
	waitStatus(t, g.URL, bad, "failed", &v)
	if v.Error == nil || v.Error.Code != "protocol" || v.Error.Stage != "generator" || !strings.Contains(v.Error.Message, "Generator failed after 2 attempts") {
		t.Fatalf("failure not clear: %+v", v.Error)
	}
	if calls.Load() != 2 {
		t.Fatalf("garbage provider called %d times, want 2 (the policy's attempts)", calls.Load())
	}
	waitStatus(t, g.URL, good, "completed", &v)
}

// A provider that reports no usage: QLC counts it with its tokenizer (exact
// for OpenAI models) and marks it estimated.
func TestUsageIsCountedWhenTheProviderSendsNone(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, piece := range []string{"Consensus", " means", " agreement", "."} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", piece)
		}
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer upstream.Close()
	g := startGateway(t, fmt.Sprintf(`
providers:
  up: {kind: openai, base_url: %s/v1}
profiles:
  counted:
    provider: up
    stages: {generator: {model: gpt-4o}, refiner: {model: gpt-4o}, validator: {model: gpt-4o}, curator: {model: gpt-4o}}
`, upstream.URL), nil)
	id := createRun(t, g.URL, "counted", "What is consensus?")
	var v runView
	waitStatus(t, g.URL, id, "completed", &v)
	enc, _ := tokenizer.Get(tokenizer.O200kBase)
	want := int64(enc.Count("Consensus means agreement."))
	hub, _ := g.Engine.Hub(id)
	prompts := map[string]int64{}
	for _, ev := range hub.Events(1) {
		if s := ev.GetStageStarted(); s != nil {
			prompts[stageString(s.Stage)] = s.PromptTokens
		}
	}
	for _, s := range v.Stages {
		if s.Usage == nil || !s.Usage.Estimated || s.Usage.CompletionTokens != want || s.Usage.PromptTokens != prompts[s.Stage] || s.Usage.PromptTokens < 10 {
			t.Fatalf("stage %s usage %+v, want %d completion tokens and the %d prompt tokens QLC counted", s.Stage, s.Usage, want, prompts[s.Stage])
		}
	}
}
