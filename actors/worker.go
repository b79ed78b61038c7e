package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// stageWorker is the StageWorker: one attempt of one stage. On Started it
// streams from the provider on a goroutine it owns; on Stopping it cancels
// that goroutine's context, which aborts the provider request (and closes its
// connection) at once. It reports to its parent, the coordinator, with
// messages whose sender is the worker's PID, so the coordinator can tell the
// current attempt's messages from a stopped attempt's stragglers.
type stageWorker struct {
	provider    stagework.Provider
	req         stagework.Request
	stage       messages.Stage
	step        string // the step's id; empty for a chain's stage (its name)
	attempt     int32
	coordinator *actor.PID
	timeouts    Timeouts
	cancel      context.CancelFunc
	// counter and promptTokens count usage when the provider reports none.
	// promptTokens is the prompt's count, 0 until the coordinator has it
	// (it may count after the spawn); the worker counts itself if need be.
	counter      stagework.TokenCounter
	promptTokens atomic.Int64
	// accept, for a worker a stage host started for a coordinator on any
	// node, is sent to the coordinator first (with this worker's PID), and
	// the worker watches the coordinator: it stops when the coordinator
	// is gone. Nil for a worker the coordinator spawned itself.
	accept *messages.StepAccepted
	// started, if set, is called when the worker first runs (the stage
	// host measures how long attempts wait to start: StageCapacity).
	started func()
	// traceCtx holds the attempt's span (from the coordinator, or from
	// StartStep.trace_context); the provider call's span is its child.
	// Nil: no trace.
	traceCtx context.Context
	// span is the provider call's GenAI client span ("chat {model}"),
	// started by Receive, then owned by the stream goroutine.
	span trace.Span
}

// Timeouts bound how long a stage worker waits on its provider. A hung or
// stalled provider is cut off and the attempt fails with kind "timeout"
// (retryable: the coordinator retries or falls back).
type Timeouts struct {
	// FirstToken is the longest wait from the request to the first token.
	// Default 60 s: a large model on a busy endpoint can take tens of seconds.
	FirstToken time.Duration
	// Stall is the longest wait between two tokens. Default 30 s.
	Stall time.Duration
}

// DefaultTimeouts returns the defaults described on each field.
func DefaultTimeouts() Timeouts {
	return Timeouts{FirstToken: 60 * time.Second, Stall: 30 * time.Second}
}

// maxDeltaBatch bounds one TokenDeltaBatch (and so one RunEventBatch).
const maxDeltaBatch = 256

// errWatchdog is the cause given to a worker's context when the watchdog fires.
type errWatchdog struct{ what string }

func (e errWatchdog) Error() string { return e.what }

func (w *stageWorker) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if w.started != nil {
			w.started()
		}
		if w.accept != nil {
			// Before any delta: the coordinator learns this PID first
			// (one sender, one order).
			w.accept.Worker = refOf(ctx.Self())
			ctx.Request(w.coordinator, w.accept)
			ctx.Watch(w.coordinator)
		}
		base := w.traceCtx
		if base == nil {
			base = context.Background()
		}
		c, cancel := context.WithCancelCause(base)
		w.cancel = func() { cancel(context.Canceled) }
		// The provider call's span starts here, on the actor's goroutine,
		// whose stack has grown already: as the stream goroutine's first
		// call it grew that goroutine's stack (a copy) on every attempt.
		w.span = noSpan
		if spanOn() {
			c, w.span = tracer.Start(c, "chat "+w.req.Model, trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(append(genAIRequest(w.provider.Name(), w.req), attrNode.String(ctx.Self().Address))...))
		}
		go w.stream(c, cancel, ctx.ActorSystem().Root, ctx.Self())
	case *actor.Terminated:
		if w.accept != nil && m.Who.Equal(w.coordinator) {
			ctx.Stop(ctx.Self()) // its run is gone (ended, or its node lost)
		}
	case *actor.Stopping:
		if w.cancel != nil {
			w.cancel()
		}
	}
}

// stream runs on the worker's goroutine; it ends when the provider's stream
// does or when ctx is cancelled (the worker stopped: nothing is reported then).
func (w *stageWorker) stream(ctx context.Context, cancel context.CancelCauseFunc, root *actor.RootContext, self *actor.PID) {
	tokens := int32(0)
	defer func() {
		if r := recover(); r != nil {
			w.fail(ctx, root, self, fmt.Errorf("actors: stage worker panicked: %v", r), tokens)
		}
	}()
	start := time.Now()
	if w.span.IsRecording() && tracing.CaptureContent() {
		w.span.SetAttributes(semconv.GenAIInputMessagesKey.String(messagesJSON(w.req.Messages)))
	}
	// The watchdog cancels the request when the provider is silent too long:
	// first for FirstToken, then for Stall after each token.
	watchdog := time.AfterFunc(w.timeouts.FirstToken, func() {
		cancel(errWatchdog{fmt.Sprintf("no first token within %v", w.timeouts.FirstToken)})
	})
	defer func() { watchdog.Stop() }()
	s, err := w.provider.Stream(ctx, w.req)
	if err != nil {
		w.fail(ctx, root, self, err, 0)
		return
	}
	defer s.Close()
	var ttft time.Duration
	// Chunks the provider has already delivered go out in one batch; a chunk
	// that the next Recv would have to wait for goes out alone, at once.
	buffered, _ := s.(stagework.Buffered)
	var batch []*messages.TokenDelta
	var output strings.Builder // for counting usage if the provider sends none
	var itl ITLRecorder
	flush := func() {
		switch len(batch) {
		case 0:
			return
		case 1:
			root.RequestWithCustomSender(w.coordinator, batch[0], self)
		default:
			root.RequestWithCustomSender(w.coordinator, &messages.TokenDeltaBatch{Deltas: batch}, self)
		}
		batch = nil
	}
	for {
		ch, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			flush()
			w.fail(ctx, root, self, err, tokens)
			return
		}
		if ch.Text == "" {
			continue
		}
		n := int32(ch.Tokens)
		if n <= 0 {
			n = 1
		}
		if tokens == 0 {
			ttft = time.Since(start)
			watchdog.Stop()
			watchdog = time.AfterFunc(w.timeouts.Stall, func() {
				cancel(errWatchdog{fmt.Sprintf("no token for %v (stream stalled)", w.timeouts.Stall)})
			})
		}
		tokens += n
		itl.Chunk(time.Now(), int(n))
		output.WriteString(ch.Text)
		batch = append(batch, &messages.TokenDelta{Stage: w.stage, Step: w.step, Text: ch.Text, Tokens: n})
		if len(batch) >= maxDeltaBatch || buffered == nil || !buffered.Buffered() {
			flush()
			watchdog.Reset(w.timeouts.Stall)
		}
	}
	flush()
	usage, ok := s.Usage()
	if !ok {
		usage = w.countUsage(output.String())
	}
	if w.span.IsRecording() {
		finish := ""
		if f, ok := s.(stagework.Finished); ok {
			finish = f.FinishReason()
		}
		w.span.SetAttributes(semconv.GenAIResponseModel(w.req.Model), // the parser does not read the response's model: the requested one
			semconv.GenAIUsageInputTokens(int(usage.PromptTokens)), semconv.GenAIUsageOutputTokens(int(usage.CompletionTokens)))
		if finish != "" {
			w.span.SetAttributes(semconv.GenAIResponseFinishReasons(finish))
		}
		if tracing.CaptureContent() {
			w.span.SetAttributes(semconv.GenAIOutputMessagesKey.String(outputJSON(output.String(), finish)))
		}
	}
	endSpan(&w.span, "", "")
	root.RequestWithCustomSender(w.coordinator, &messages.StageAttemptDone{
		Stage: w.stage, Step: w.step, Attempt: w.attempt, Usage: toMsgUsage(usage),
		Ttft: durationpb.New(ttft), Duration: durationpb.New(time.Since(start)), Itl: itl.Encode(),
	}, self)
}

func (w *stageWorker) fail(ctx context.Context, root *actor.RootContext, self *actor.PID, err error, tokens int32) {
	var wd errWatchdog
	if cause := context.Cause(ctx); errors.As(cause, &wd) {
		err = &stagework.ProviderError{Kind: stagework.ErrTimeout, Provider: w.provider.Name(), Message: wd.what}
	} else if ctx.Err() != nil {
		endSpan(&w.span, "", "cancelled")
		return // the worker was stopped (cancel, or the coordinator moved on)
	}
	f := &messages.StageAttemptFailed{
		Stage: w.stage, Step: w.step, Attempt: w.attempt, TokensStreamed: tokens,
		Provider: w.provider.Name(), Kind: "internal", Message: err.Error(), Retryable: true,
	}
	if pe, ok := stagework.AsProviderError(err); ok {
		f.Kind = pe.Kind.String()
		f.Retryable = pe.Retryable()
		f.HttpStatus = int32(pe.Status)
		if pe.RetryAfter > 0 {
			f.RetryAfter = durationpb.New(pe.RetryAfter)
		}
	} else if errors.Is(err, context.DeadlineExceeded) {
		f.Kind = stagework.ErrTimeout.String()
	}
	endSpan(&w.span, f.Kind, f.Message)
	root.RequestWithCustomSender(w.coordinator, f, self)
}

// countUsage counts usage with QLC's tokenizer when the provider sent none
// (Estimated: the count is ours, exact for OpenAI models, approximate for others).
func (w *stageWorker) countUsage(output string) stagework.Usage {
	prompt := w.promptTokens.Load()
	if prompt == 0 { // not counted when the prompt was built (no context window to fit)
		prompt = int64(stagework.PromptTokens(w.req.Messages, w.counter))
	}
	completion := int64(w.counter.Count(output))
	return stagework.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion, Estimated: true}
}

// messagesJSON is a prompt in the GenAI conventions' gen_ai.input.messages
// shape (recorded only when the operator opts in to content capture).
func messagesJSON(msgs []stagework.Message) string {
	type part struct {
		Type    string `json:"type"`
		Content string `json:"content"`
	}
	type msg struct {
		Role  string `json:"role"`
		Parts []part `json:"parts"`
	}
	out := make([]msg, len(msgs))
	for i, m := range msgs {
		out[i] = msg{Role: m.Role, Parts: []part{{Type: "text", Content: m.Content}}}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// outputJSON is an answer in the gen_ai.output.messages shape.
func outputJSON(text, finish string) string {
	b, _ := json.Marshal([]map[string]any{{"role": "assistant", "finish_reason": finish,
		"parts": []map[string]string{{"type": "text", "content": text}}}})
	return string(b)
}
