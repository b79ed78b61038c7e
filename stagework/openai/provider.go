package openai

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/sse"
)

// Provider streams chat completions from one OpenAI-compatible endpoint
// through one pooled HTTP client. It implements stagework.Provider and is
// safe for concurrent use.
type Provider struct {
	cfg    Config
	url    string // BaseURL + "/chat/completions"
	client *http.Client
	tr     *http.Transport
	log    *slog.Logger
}

var _ stagework.Provider = (*Provider)(nil)

// New validates cfg and returns a Provider with its own connection pool.
func New(cfg Config) (*Provider, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := cfg.DialContext
	if base == nil {
		base = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	tlsCfg := &tls.Config{}
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	}
	if len(tlsCfg.NextProtos) == 0 {
		tlsCfg.NextProtos = []string{"h2", "http/1.1"} // ALPN: HTTP/2 when the server offers it
	}
	d := &dialer{base: base, connectTimeout: cfg.ConnectTimeout, tlsTimeout: cfg.TLSHandshakeTimeout, tls: tlsCfg}
	tr := &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: d.dial,
		// Our own TLS dial, so that the handshake too is aborted by the
		// request's cancellation (see dialer). TLSClientConfig is still
		// used for HTTPS through a proxy.
		DialTLSContext:        d.dialTLS,
		TLSClientConfig:       tlsCfg.Clone(),
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		MaxIdleConns:          cfg.MaxIdleConns,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		// Event streams are not worth compressing, and a gzip layer could
		// hold tokens back until its window fills.
		DisableCompression: true,
		// Detect a dead HTTP/2 connection on which streams would hang.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	p := &Provider{
		cfg: cfg,
		url: strings.TrimRight(cfg.BaseURL, "/") + "/chat/completions",
		client: &http.Client{
			Transport: tr,
			// A redirected POST would be replayed as a GET; report it instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		tr:  tr,
		log: cfg.Logger.With("provider", cfg.Name),
	}
	return p, nil
}

// Name is the provider's name from Config.Name ("openai" by default).
func (p *Provider) Name() string { return p.cfg.Name }

// CloseIdleConnections closes the pool's idle connections; streams in
// flight are not affected.
func (p *Provider) CloseIdleConnections() { p.tr.CloseIdleConnections() }

// chatRequest is the JSON body sent to /chat/completions.
type chatRequest struct {
	Model               string              `json:"model"`
	Messages            []stagework.Message `json:"messages"`
	Temperature         float64             `json:"temperature"`
	MaxTokens           int                 `json:"max_tokens,omitempty"`
	MaxCompletionTokens int                 `json:"max_completion_tokens,omitempty"`
	Seed                int64               `json:"seed,omitempty"`
	Stream              bool                `json:"stream"`
	StreamOptions       streamOptions       `json:"stream_options"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// encodeRequest renders req as the request body.
func (p *Provider) encodeRequest(req stagework.Request) ([]byte, error) {
	if req.Model == "" {
		return nil, p.newError(stagework.ErrBadRequest, 0, "", "request has no model", nil)
	}
	if len(req.Messages) == 0 {
		return nil, p.newError(stagework.ErrBadRequest, 0, "", "request has no messages", nil)
	}
	body := chatRequest{
		Model:         req.Model,
		Messages:      req.Messages,
		Temperature:   req.Temperature,
		Seed:          req.Seed,
		Stream:        true,
		StreamOptions: streamOptions{IncludeUsage: true},
	}
	if req.MaxTokens > 0 {
		if p.cfg.UseMaxCompletionTokens {
			body.MaxCompletionTokens = req.MaxTokens
		} else {
			body.MaxTokens = req.MaxTokens
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // prompts full of code keep their '<' and '&'
	if err := enc.Encode(body); err != nil {
		return nil, p.newError(stagework.ErrBadRequest, 0, "", "cannot encode request: "+err.Error(), err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Stream sends req with stream:true and returns once the response headers
// have arrived. Errors are *stagework.ProviderError, except that a cancelled
// ctx yields ctx.Err(). Cancelling ctx later aborts the stream at once.
func (p *Provider) Stream(ctx context.Context, req stagework.Request) (stagework.Stream, error) {
	if ctx.Err() != nil {
		return nil, p.callerError(ctx)
	}
	body, err := p.encodeRequest(req)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	key := p.cfg.APIKey
	if req.APIKey != "" {
		key = req.APIKey.Reveal()
		if strings.ContainsAny(key, "\r\n") {
			cancel(nil)
			return nil, p.newError(stagework.ErrAuth, 0, "", "the tenant's API key for this endpoint contains a line break", nil)
		}
	}
	s := &stream{p: p, ctx: ctx, sctx: sctx, cancel: cancel, model: req.Model, start: time.Now(), apiKey: req.APIKey.Reveal()}
	if d := p.cfg.FirstTokenTimeout; d > 0 {
		s.firstTimer = time.AfterFunc(d, func() { cancel(&timeoutCause{what: "first token", d: d}) })
	}
	// The request context carries itself as a value, which survives
	// net/http's detaching of dials from the request (see dialer).
	rctx := context.WithValue(sctx, requestCtxKey{}, sctx)
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil { // only a malformed URL, which validate rules out
		s.release()
		return nil, p.newError(stagework.ErrBadRequest, 0, "", err.Error(), err)
	}
	h := hreq.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "text/event-stream")
	h.Set("User-Agent", p.cfg.UserAgent)
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	for k, v := range p.cfg.Headers {
		if req.APIKey != "" && http.CanonicalHeaderKey(k) == "Authorization" {
			continue // the tenant's own key wins over the endpoint's
		}
		h.Set(k, v)
	}
	// The caller's trace (its provider span) goes upstream as W3C
	// traceparent, so a traced vLLM or proxy joins the run's trace. With
	// tracing off the global propagator writes nothing.
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))

	resp, err := p.client.Do(hreq)
	if err != nil {
		e := redactKey(p.transportError(ctx, sctx, err, "request failed"), s.apiKey)
		s.release()
		p.logFailure(req.Model, e)
		return nil, e
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := redactKey(p.statusError(resp), s.apiKey)
		resp.Body.Close()
		s.release()
		p.logFailure(req.Model, e)
		return nil, e
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		// Not a stream: an error object sent with 200, or a server that
		// ignored stream:true.
		e := redactKey(p.jsonInsteadOfStream(resp), s.apiKey)
		resp.Body.Close()
		s.release()
		p.logFailure(req.Model, e)
		return nil, e
	}
	s.body = resp.Body
	var src io.Reader = resp.Body
	if d := p.cfg.IdleTimeout; d > 0 {
		s.idle = newIdleWatch(d, cancel)
		src = watchedBody{r: resp.Body, w: s.idle}
	}
	sseCfg := p.cfg.SSE
	sseCfg.OnComment = s.onComment
	s.dec, err = sse.NewDecoder(src, sseCfg)
	if err != nil { // validate checked the limits already
		s.release()
		return nil, p.newError(stagework.ErrProtocol, 0, "", err.Error(), err)
	}
	p.log.Debug("openai: stream open", "model", req.Model, "proto", resp.Proto,
		"status", resp.StatusCode, "headers_after", time.Since(s.start))
	return s, nil
}

// statusError reads an HTTP error response into a ProviderError.
func (p *Provider) statusError(resp *http.Response) *stagework.ProviderError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxErrorBodySize))
	kind := kindForStatus(resp.StatusCode)
	e := p.newError(kind, resp.StatusCode, "", "", nil)
	if ae, ok := parseAPIError(body); ok {
		e.Message, e.Code = ae.message, ae.displayCode()
	} else if t := strings.TrimSpace(string(body)); t != "" && !strings.HasPrefix(t, "<") {
		e.Message = t // a plain-text body; an HTML error page says nothing useful
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Message = fmt.Sprintf("redirected to %q; check BaseURL", resp.Header.Get("Location"))
	}
	e.Message = p.redact(truncate(e.Message, 1000))
	e.RetryAfter = parseRetryAfter(resp.Header, p.cfg.Now())
	return e
}

// jsonInsteadOfStream handles a 200 response with a JSON body.
func (p *Provider) jsonInsteadOfStream(resp *http.Response) *stagework.ProviderError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxErrorBodySize))
	if ae, ok := parseAPIError(body); ok {
		e := p.newError(kindForCode(ae.code, ae.typ), resp.StatusCode, ae.displayCode(), p.redact(truncate(ae.message, 1000)), nil)
		e.RetryAfter = parseRetryAfter(resp.Header, p.cfg.Now())
		return e
	}
	return p.newError(stagework.ErrProtocol, resp.StatusCode, "",
		"expected text/event-stream, got application/json: "+snippet(body, 120), nil)
}

func (p *Provider) logFailure(model string, err error) {
	if pe, ok := stagework.AsProviderError(err); ok {
		p.log.Debug("openai: request failed", "model", model, "kind", pe.Kind.String(),
			"status", pe.Status, "code", pe.Code, "error", pe.Error())
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "..."
}

// requestCtxKey is the context key under which Stream stores the request's
// own (cancellable) context.
type requestCtxKey struct{}

// dialer connects to the endpoint. net/http runs a dial under a context
// detached from the request's cancellation, so that a connection dialled
// for a cancelled request can serve a later one; the dial and the TLS
// handshake would then outlive a cancel by up to ConnectTimeout plus
// TLSHandshakeTimeout. QLC wants a cancel to close everything at once, so the
// dialer finds the request's context in the dial context's values (which
// net/http keeps) and aborts when it ends.
type dialer struct {
	base           func(ctx context.Context, network, addr string) (net.Conn, error)
	connectTimeout time.Duration
	tlsTimeout     time.Duration
	tls            *tls.Config
}

// bind returns ctx, cancelled also when the request it was dialled for
// ends, and a func to release it.
func bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if rc, ok := ctx.Value(requestCtxKey{}).(context.Context); ok {
		stop := context.AfterFunc(rc, cancel)
		return ctx, func() { stop(); cancel() }
	}
	return ctx, cancel
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, release := bind(ctx)
	defer release()
	return d.dialTCP(ctx, network, addr)
}

func (d *dialer) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.connectTimeout)
		defer cancel()
	}
	return d.base(ctx, network, addr)
}

func (d *dialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, release := bind(ctx)
	defer release()
	raw, err := d.dialTCP(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := d.tls
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	hctx := ctx
	if d.tlsTimeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, d.tlsTimeout)
		defer cancel()
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}
