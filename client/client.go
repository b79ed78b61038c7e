package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultURL is where a gateway started with its defaults listens.
const DefaultURL = "http://localhost:8080"

// Config configures a Client.
type Config struct {
	// BaseURL is the gateway's address, e.g. "http://localhost:8080"
	// (DefaultURL when empty). A trailing slash is ignored.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>" (none when empty).
	APIKey string
	// HTTPClient makes the requests (a client without a timeout when nil:
	// event streams last as long as their runs; calls are bounded by their
	// contexts).
	HTTPClient *http.Client
	// UserAgent is sent with every request ("qlc-client" when empty).
	UserAgent string
	// MaxReconnects bounds how many times in a row a Stream reconnects
	// without receiving an event before it gives up (default 8; reset by
	// every event received).
	MaxReconnects int
	// MinBackoff and MaxBackoff bound the wait before a reconnect; it
	// doubles from MinBackoff (default 100 ms) up to MaxBackoff (default
	// 5 s), or is the server's Retry-After when it gave one.
	MinBackoff, MaxBackoff time.Duration
}

// DefaultConfig is a Config for a local gateway, without a key.
func DefaultConfig() Config {
	return Config{BaseURL: DefaultURL, UserAgent: "qlc-client", MaxReconnects: 8,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// ErrBadConfig is returned by New for a Config it cannot use.
var ErrBadConfig = errors.New("client: bad config")

func (c *Config) validate() error {
	d := DefaultConfig()
	if c.BaseURL == "" {
		c.BaseURL = d.BaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: URL %q is not an http(s) address", ErrBadConfig, c.BaseURL)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.UserAgent == "" {
		c.UserAgent = d.UserAgent
	}
	if c.MaxReconnects < 0 {
		return fmt.Errorf("%w: negative MaxReconnects", ErrBadConfig)
	}
	if c.MaxReconnects == 0 {
		c.MaxReconnects = d.MaxReconnects
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(d.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// Client calls one gateway. It is safe for concurrent use.
type Client struct {
	cfg Config
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg}, nil
}

// BaseURL is the gateway's address, without a trailing slash.
func (c *Client) BaseURL() string { return c.cfg.BaseURL }

// APIError is an error the API answered, in OpenAI's shape
// ({"error":{"message","type","param","code"}}), with the HTTP status.
type APIError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code"`
	// RetryAfter is the Retry-After header's wait, when the answer had one.
	RetryAfter time.Duration `json:"-"`
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (HTTP %d, %s)", msg, e.Status, e.Code)
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

// readAPIError turns a non-2xx answer into an *APIError (a body that is
// not the error shape gives its first line as the message).
func readAPIError(resp *http.Response) *APIError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var body struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil && body.Error != nil {
		e.Message, e.Type, e.Code = body.Error.Message, body.Error.Type, body.Error.Code
		if body.Error.Param != nil {
			e.Param = *body.Error.Param
		}
	} else {
		line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		e.Message = line
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.cfg.BaseURL+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	return req, nil
}

// do sends a request with an optional JSON body and decodes a 2xx JSON
// answer into out (when not nil); any other status is an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: bad answer: %w", method, path, err)
	}
	return nil
}
