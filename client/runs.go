package client

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"
)

// RunRequest is the body of POST /v1/runs.
type RunRequest struct {
	Query string `json:"query"`
	// Profile is the profile's name ("" for the tenant's default).
	Profile string `json:"profile,omitempty"`
	// Seed makes a simulated run repeatable (0: none).
	Seed int64 `json:"seed,omitempty"`
	// MaxTokens overrides every step's max_tokens (0: the profile's).
	MaxTokens int `json:"max_tokens,omitempty"`
}

// Usage is a token count.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	Estimated        bool  `json:"estimated,omitempty"`
}

// Rank is one answer's place in a council's ranking.
type Rank struct {
	Step        string  `json:"step"`
	Label       string  `json:"label"`
	AverageRank float64 `json:"average_rank"`
	Votes       int     `json:"votes"`
}

// Skip says why a step was left out.
type Skip struct {
	Reason string `json:"reason"`
	Code   string `json:"code"`
}

// Note is a step_note of a step.
type Note struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Raw     string `json:"raw,omitempty"`
}

// Step is one step of the run resource.
type Step struct {
	ID         string   `json:"id"`
	Stage      string   `json:"stage"`
	Title      string   `json:"title"`
	Model      string   `json:"model"`
	Provider   string   `json:"provider"`
	Status     string   `json:"status"`
	Final      bool     `json:"final"`
	Inputs     []string `json:"inputs"`
	MinInputs  int      `json:"min_inputs"`
	Layer      int      `json:"layer"`
	Attempts   int      `json:"attempts"`
	Restarts   int      `json:"restarts"`
	Fallback   bool     `json:"fallback"`
	Tokens     int64    `json:"tokens"`
	Output     string   `json:"output"`
	TTFTMs     float64  `json:"ttft_ms"`
	DurationMs float64  `json:"duration_ms"`
	Usage      *Usage   `json:"usage,omitempty"`
	CostUSD    float64  `json:"cost_usd"`
	Note       string   `json:"note,omitempty"`
	Skipped    *Skip    `json:"skipped,omitempty"`
	Ranking    []Rank   `json:"ranking,omitempty"`
	Notes      []Note   `json:"notes,omitempty"`
}

// RunError is why a run failed.
type RunError struct {
	Message string `json:"message"`
	Code    string `json:"code"`
	Stage   string `json:"stage,omitempty"`
	Step    string `json:"step,omitempty"`
}

// Run is the run resource (GET /v1/runs/{id}).
type Run struct {
	ID        string    `json:"id"`
	Object    string    `json:"object"`
	Status    string    `json:"status"` // running, completed, failed, cancelled
	Profile   string    `json:"profile"`
	Query     string    `json:"query"`
	CreatedAt time.Time `json:"created_at"`
	LastSeq   uint64    `json:"last_seq"`
	Strategy  string    `json:"strategy"`
	Steps     []Step    `json:"steps"`
	Ranking   []Rank    `json:"ranking,omitempty"`
	Answer    string    `json:"answer,omitempty"`
	Usage     *Usage    `json:"usage,omitempty"`
	Error     *RunError `json:"error,omitempty"`
	EventsURL string    `json:"events_url"`
	WSURL     string    `json:"ws_url"`
}

// Ended reports whether the run's status is final.
func (r *Run) Ended() bool {
	return r.Status == "completed" || r.Status == "failed" || r.Status == "cancelled"
}

// CostUSD is the sum of the steps' costs.
func (r *Run) CostUSD() float64 {
	var c float64
	for _, s := range r.Steps {
		c += s.CostUSD
	}
	return c
}

// CreateRun starts a run (POST /v1/runs) and returns its resource.
func (c *Client) CreateRun(ctx context.Context, req RunRequest) (*Run, error) {
	var r Run
	if err := c.do(ctx, "POST", "/v1/runs", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RunList is GET /v1/runs: the caller's runs in flight admitted through the
// gateway that answered (Scope "gateway"), newest first, each without its
// steps' outputs. Ended runs are in the usage ledger (Usage).
type RunList struct {
	Object string `json:"object"`
	Scope  string `json:"scope"`
	Data   []Run  `json:"data"`
}

// RunsInFlight lists the caller's runs in flight (GET /v1/runs), at most
// limit (0: the gateway's default, 20; at most 100). A gateway older than
// the endpoint answers an *APIError with code "unknown_endpoint".
func (c *Client) RunsInFlight(ctx context.Context, limit int) (*RunList, error) {
	path := "/v1/runs"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var l RunList
	if err := c.do(ctx, "GET", path, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// GetRun returns the run resource.
func (c *Client) GetRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	if err := c.do(ctx, "GET", "/v1/runs/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CancelRun cancels a run (DELETE /v1/runs/{id}) and returns its resource
// once it ended (or after the gateway's wait). A run that already ended is
// an *APIError with code "run_finished" (HTTP 409).
func (c *Client) CancelRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	if err := c.do(ctx, "DELETE", "/v1/runs/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ProfileStep is one step of a profile's plan.
type ProfileStep struct {
	ID         string   `json:"id"`
	Stage      string   `json:"stage"`
	Title      string   `json:"title"`
	Provider   string   `json:"provider"`
	Model      string   `json:"model"`
	Inputs     []string `json:"inputs"`
	MinInputs  int      `json:"min_inputs"`
	Final      bool     `json:"final"`
	Layer      int      `json:"layer"`
	Method     string   `json:"method,omitempty"`
	DeadlineMs float64  `json:"deadline_ms,omitempty"`
}

// Profile is one entry of GET /v1/profiles.
type Profile struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Strategy    string        `json:"strategy"`
	Steps       []ProfileStep `json:"steps"`
}

// Profiles is GET /v1/profiles: the profiles the key may use.
type Profiles struct {
	Default string    `json:"default"`
	Data    []Profile `json:"data"`
}

// Profiles lists the profiles the key may use, and its default.
func (c *Client) Profiles(ctx context.Context) (*Profiles, error) {
	var p Profiles
	if err := c.do(ctx, "GET", "/v1/profiles", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// StepUsage is one billed step of a usage record.
type StepUsage struct {
	Step             string  `json:"step"`
	Stage            string  `json:"stage"`
	Model            string  `json:"model"`
	Provider         string  `json:"provider"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	DurationMs       int64   `json:"duration_ms"`
	Status           string  `json:"status,omitempty"`
}

// UsageRecord is one ended run's usage.
type UsageRecord struct {
	RunID            string      `json:"run_id"`
	Tenant           string      `json:"tenant"`
	Profile          string      `json:"profile"`
	Status           string      `json:"status"`
	AdmittedAt       time.Time   `json:"admitted_at"`
	EndedAt          time.Time   `json:"ended_at"`
	PromptTokens     int64       `json:"prompt_tokens"`
	CompletionTokens int64       `json:"completion_tokens"`
	TotalTokens      int64       `json:"total_tokens"`
	CostUSD          float64     `json:"cost_usd"`
	TTFTMs           int64       `json:"ttft_ms"`
	DurationMs       int64       `json:"duration_ms"`
	Stages           []StepUsage `json:"stages"`
}

// UsageTotals sums a usage answer.
type UsageTotals struct {
	Runs             int     `json:"runs"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

// UsageReport is GET /v1/usage.
type UsageReport struct {
	From   time.Time     `json:"from"`
	To     time.Time     `json:"to"`
	Data   []UsageRecord `json:"data"`
	Totals UsageTotals   `json:"totals"`
}

// UsageQuery selects usage records; zero fields take the API's defaults
// (the last 30 days, every record, the key's own tenant or every tenant's
// for an admin key).
type UsageQuery struct {
	// From and To are RFC 3339 times or Unix seconds, passed as given.
	From, To string
	Limit    int
	// Tenant selects one tenant (admin key only).
	Tenant string
}

// Usage returns the usage records of ended runs.
func (c *Client) Usage(ctx context.Context, q UsageQuery) (*UsageReport, error) {
	v := url.Values{}
	if q.From != "" {
		v.Set("from", q.From)
	}
	if q.To != "" {
		v.Set("to", q.To)
	}
	if q.Limit > 0 {
		v.Set("limit", itoa(q.Limit))
	}
	if q.Tenant != "" {
		v.Set("tenant", q.Tenant)
	}
	var u UsageReport
	if err := c.do(ctx, "GET", "/v1/usage"+query(v), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// TokenizeRequest is the body of POST /v1/tokenize: a Model or an
// Encoding, and the text.
type TokenizeRequest struct {
	Model    string `json:"model,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Text     string `json:"text"`
	// MaxTokens, when set, asks for the text cut to at most that many tokens.
	MaxTokens *int64 `json:"max_tokens,omitempty"`
}

// Tokens is the answer of POST /v1/tokenize.
type Tokens struct {
	Tokens        []int  `json:"tokens,omitempty"`
	Count         int    `json:"count"`
	Encoding      string `json:"encoding"`
	Approximate   bool   `json:"approximate"`
	Label         string `json:"label,omitempty"`
	ServedBy      string `json:"served_by,omitempty"`
	Text          string `json:"text,omitempty"`
	Truncated     bool   `json:"truncated,omitempty"`
	OriginalCount int    `json:"original_count,omitempty"`
}

// Tokenize counts (or cuts) a text's tokens.
func (c *Client) Tokenize(ctx context.Context, req TokenizeRequest) (*Tokens, error) {
	var t Tokens
	if err := c.do(ctx, "POST", "/v1/tokenize", req, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Raw sends a request to any API path with an optional JSON body and
// returns the 2xx answer's JSON (for endpoints without a typed call).
func (c *Client) Raw(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, method, path, body, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func query(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
