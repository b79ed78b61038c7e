package openai

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/qlc-project/qlc/stagework/sse"
)

// Defaults for Config. Each says why it is what it is.
const (
	// DefaultName is the provider kind as written in profiles.
	DefaultName = "openai"
	// DefaultConnectTimeout bounds a TCP connect: a healthy endpoint answers
	// in milliseconds, a dead one should fail over fast.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultTLSHandshakeTimeout is net/http's own default.
	DefaultTLSHandshakeTimeout = 10 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for response headers.
	// Streaming servers send headers as soon as they accept the request, but
	// vLLM and llama.cpp may queue a request behind others first.
	DefaultResponseHeaderTimeout = 2 * time.Minute
	// DefaultIdleTimeout is the longest silence (no event and no comment)
	// accepted once the stream is open: longer than the silent "thinking"
	// phase of the reasoning models we know, short enough to catch a hung
	// upstream. OpenRouter's keep-alive comments reset it.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxIdleConns is the idle pool size. One Provider serves one
	// endpoint, so it equals DefaultMaxIdleConnsPerHost.
	DefaultMaxIdleConns = 64
	// DefaultMaxIdleConnsPerHost keeps a connection per concurrent stage
	// worker warm (net/http's own default of 2 would redial under load).
	DefaultMaxIdleConnsPerHost = 64
	// DefaultIdleConnTimeout is net/http's DefaultTransport value.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultMaxErrorBodySize bounds how much of an HTTP error body is read
	// to find the provider's message.
	DefaultMaxErrorBodySize = 64 << 10
	// DefaultDrainTimeout bounds the wait, after "data: [DONE]", for the end
	// of the response body, which lets an HTTP/1.1 connection go back to the
	// pool. Servers end the body right after [DONE]; one that does not loses
	// its connection instead.
	DefaultDrainTimeout = time.Second
	// DefaultUserAgent identifies QLC to the endpoint.
	DefaultUserAgent = "qlc-openai/1"
)

// Config describes one OpenAI-compatible endpoint. Zero-valued fields take
// their defaults (validate fills them in); a negative timeout disables it.
type Config struct {
	// Name is the provider's name, returned by Name and put in every
	// ProviderError ("openai", "openrouter", "vllm", ...). Default "openai".
	Name string
	// BaseURL is the API root including its version, without
	// "/chat/completions": "https://api.openai.com/v1",
	// "https://openrouter.ai/api/v1", "http://localhost:8000/v1" (vLLM),
	// "http://localhost:11434/v1" (Ollama), "http://localhost:8080/v1"
	// (llama.cpp). Required.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>"; empty sends no
	// Authorization header (local servers). It is never logged, and is
	// redacted from error messages that echo it.
	APIKey string
	// Headers are extra request headers, e.g. OpenRouter's "HTTP-Referer"
	// and "X-Title". They are set after the standard ones and may replace them.
	Headers map[string]string
	// UserAgent is the User-Agent header. Default DefaultUserAgent.
	UserAgent string

	// ConnectTimeout bounds establishing a TCP connection.
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written.
	ResponseHeaderTimeout time.Duration
	// FirstTokenTimeout bounds the time from the start of Stream to the first
	// text chunk (headers included). Default: no limit, because a reasoning
	// model may think for minutes; IdleTimeout still catches a dead upstream.
	FirstTokenTimeout time.Duration
	// IdleTimeout is the longest the stream may wait in a read of the body
	// without a byte arriving, once the headers are in. Keep-alive comments
	// are bytes, so they count as activity; time the consumer spends away
	// from Recv does not count as silence.
	IdleTimeout time.Duration
	// DrainTimeout bounds reading the rest of the body after [DONE].
	DrainTimeout time.Duration

	// MaxIdleConns is the size of the idle connection pool.
	MaxIdleConns int
	// MaxIdleConnsPerHost is the idle pool size for the endpoint's host.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost caps all connections to the host; 0 means no cap.
	MaxConnsPerHost int
	// IdleConnTimeout closes pooled connections idle this long.
	IdleConnTimeout time.Duration
	// MaxErrorBodySize bounds how much of an error response body is read.
	MaxErrorBodySize int64

	// UseMaxCompletionTokens sends Request.MaxTokens as
	// "max_completion_tokens" instead of "max_tokens" (OpenAI's reasoning
	// models accept only the former).
	UseMaxCompletionTokens bool

	// SSE bounds the event-stream parser (line and event size). Its
	// OnComment is ignored: the provider sets its own.
	SSE sse.Config
	// TLSConfig, if set, is used (cloned) for HTTPS: custom root CAs, client
	// certificates. HTTP/2 is negotiated through ALPN either way.
	TLSConfig *tls.Config
	// DialContext, if set, replaces the default TCP dialer (custom networks,
	// tests). ConnectTimeout still applies to it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives debug lines about streams and errors; nil discards them.
	Logger *slog.Logger
	// Now is the clock used to turn a Retry-After HTTP-date into a
	// duration; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with every default filled in except
// BaseURL and APIKey.
func DefaultConfig() Config {
	return Config{
		Name:                  DefaultName,
		UserAgent:             DefaultUserAgent,
		ConnectTimeout:        DefaultConnectTimeout,
		TLSHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		ResponseHeaderTimeout: DefaultResponseHeaderTimeout,
		IdleTimeout:           DefaultIdleTimeout,
		DrainTimeout:          DefaultDrainTimeout,
		MaxIdleConns:          DefaultMaxIdleConns,
		MaxIdleConnsPerHost:   DefaultMaxIdleConnsPerHost,
		IdleConnTimeout:       DefaultIdleConnTimeout,
		MaxErrorBodySize:      DefaultMaxErrorBodySize,
		SSE:                   sse.DefaultConfig(),
	}
}

// errConfig prefixes configuration errors.
var errConfig = errors.New("openai: invalid config")

// validate rejects bad values and fills defaults. A negative timeout means
// "none" and becomes 0 (net/http's "no limit").
func (c *Config) validate() error {
	def := DefaultConfig()
	if c.Name == "" {
		c.Name = def.Name
	}
	if c.UserAgent == "" {
		c.UserAgent = def.UserAgent
	}
	if c.BaseURL == "" {
		return fmt.Errorf("%w: BaseURL is required", errConfig)
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return fmt.Errorf("%w: BaseURL: %w", errConfig, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: BaseURL %q: scheme must be http or https", errConfig, c.BaseURL)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: BaseURL %q has no host", errConfig, c.BaseURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: BaseURL must not carry credentials; use APIKey", errConfig)
	}
	if strings.ContainsAny(c.APIKey, "\r\n") {
		return fmt.Errorf("%w: APIKey contains a line break", errConfig)
	}
	for k, v := range c.Headers {
		if k == "" || strings.ContainsAny(k, "\r\n: ") || strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("%w: bad header %q", errConfig, k)
		}
	}
	durations := []struct {
		p   *time.Duration
		def time.Duration
	}{
		{&c.ConnectTimeout, def.ConnectTimeout},
		{&c.TLSHandshakeTimeout, def.TLSHandshakeTimeout},
		{&c.ResponseHeaderTimeout, def.ResponseHeaderTimeout},
		{&c.FirstTokenTimeout, def.FirstTokenTimeout},
		{&c.IdleTimeout, def.IdleTimeout},
		{&c.DrainTimeout, def.DrainTimeout},
		{&c.IdleConnTimeout, def.IdleConnTimeout},
	}
	for _, d := range durations {
		switch {
		case *d.p == 0:
			*d.p = d.def
		case *d.p < 0:
			*d.p = 0
		}
	}
	if c.MaxIdleConns < 0 || c.MaxIdleConnsPerHost < 0 || c.MaxConnsPerHost < 0 || c.MaxErrorBodySize < 0 {
		return fmt.Errorf("%w: negative pool or size limit", errConfig)
	}
	if c.MaxIdleConns == 0 {
		c.MaxIdleConns = def.MaxIdleConns
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = def.MaxIdleConnsPerHost
	}
	if c.MaxErrorBodySize == 0 {
		c.MaxErrorBodySize = def.MaxErrorBodySize
	}
	if c.SSE.MaxLineSize < 0 || c.SSE.MaxEventSize < 0 || c.SSE.BufferSize < 0 {
		return fmt.Errorf("%w: negative SSE limit", errConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
