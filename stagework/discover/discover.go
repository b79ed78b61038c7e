package discover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kind is the kind of model server.
type Kind string

// The servers Discover knows, each at its usual port (DefaultTargets).
const (
	Ollama   Kind = "ollama"   // Ollama: /api/tags, and /v1 for chat
	LlamaCpp Kind = "llamacpp" // llama.cpp's llama-server
	VLLM     Kind = "vllm"     // vLLM's OpenAI-compatible server
	LMStudio Kind = "lmstudio" // LM Studio's local server
)

// Title is the kind's name for people ("LM Studio").
func (k Kind) Title() string {
	switch k {
	case Ollama:
		return "Ollama"
	case LlamaCpp:
		return "llama.cpp"
	case VLLM:
		return "vLLM"
	case LMStudio:
		return "LM Studio"
	}
	return string(k)
}

// QLCHeader is the response header every QLC gateway sets: a server that
// sends it is QLC itself (or another QLC), never a model server to add.
const QLCHeader = "X-Qlc-Server"

// ErrNotLoopback is returned (wrapped) for a host or a connection that is
// not this machine's loopback interface.
var ErrNotLoopback = errors.New("discover: not a loopback address")

// Target is a port to probe and the kind of server usually found there.
type Target struct {
	Kind Kind
	Port int
}

// DefaultTargets are the well-known ports of local model servers: Ollama
// 11434, llama.cpp 8080 and 8081 (8080 is also QLC's default: QLC is
// recognised by its QLCHeader and skipped), vLLM 8000, LM Studio 1234.
func DefaultTargets() []Target {
	return []Target{{Ollama, 11434}, {LlamaCpp, 8080}, {LlamaCpp, 8081}, {VLLM, 8000}, {LMStudio, 1234}}
}

// Config says where and how to look. The zero value is usable: every
// empty field takes DefaultConfig's value.
type Config struct {
	// Targets are the ports probed on each host. Default DefaultTargets().
	Targets []Target
	// Hosts are the addresses probed, IP literals that must be loopback
	// (no names: a name could resolve elsewhere). A server answering on
	// several is reported once, at the first. Default 127.0.0.1, ::1.
	Hosts []string
	// SkipPorts are ports not probed, e.g. the caller's own listener.
	SkipPorts []int
	// Timeout bounds one probe (all its requests), connection included:
	// a server that has not answered by then is skipped. Default 300ms,
	// long enough for a loopback answer from a busy server, short enough
	// not to delay a start noticeably.
	Timeout time.Duration
	// Parallel bounds the probes in flight at once. Default 16 (every
	// default probe at once).
	Parallel int
	// Logger receives a debug line per skipped server. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{Targets: DefaultTargets(), Hosts: []string{"127.0.0.1", "::1"}, Timeout: 300 * time.Millisecond, Parallel: 16,
		Logger: slog.New(slog.DiscardHandler)}
}

// validate fills defaults and refuses a host that is not a loopback IP.
func (c *Config) validate() error {
	d := DefaultConfig()
	if c.Targets == nil {
		c.Targets = d.Targets
	}
	if c.Hosts == nil {
		c.Hosts = d.Hosts
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.Parallel <= 0 {
		c.Parallel = d.Parallel
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	for _, h := range c.Hosts {
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%w: host %q (only 127.0.0.1/8 and ::1)", ErrNotLoopback, h)
		}
	}
	for _, t := range c.Targets {
		if t.Port < 1 || t.Port > 65535 {
			return fmt.Errorf("discover: bad port %d", t.Port)
		}
	}
	return nil
}

// Model is one model a server serves.
type Model struct {
	// ID is the model's name on the server (what a request names).
	ID string
	// Params is the model's size in billions of parameters, when the
	// server or the name says it; 0 if unknown.
	Params float64
	// ContextWindow is the server's context length for the model, when it
	// says (vLLM's max_model_len); 0 if unknown.
	ContextWindow int
}

// Server is a model server found.
type Server struct {
	// Kind is the server's kind: the port's usual kind, unless its answer
	// says otherwise (vLLM answering on 8080).
	Kind Kind
	// Addr is host:port, e.g. "127.0.0.1:11434".
	Addr string
	// BaseURL is its OpenAI-compatible API root, e.g. "http://127.0.0.1:11434/v1".
	BaseURL string
	// Models are the chat models it lists, in its order.
	Models []Model
	// Ignored are models it lists that cannot chat (embedding, reranking).
	Ignored []string
}

// Skipped is a server that answered but is not used, and why.
type Skipped struct {
	Addr   string
	Kind   Kind
	Reason string
}

// Result is what Discover found.
type Result struct {
	// Servers are the servers found, in Targets order.
	Servers []Server
	// Skipped are servers seen but not used (QLC itself, one asking for a
	// key, one too slow, one listing no chat model). A closed port is not
	// listed.
	Skipped []Skipped
}

// Discover probes every Hosts × Targets address at once (at most Parallel
// in flight) and returns what answered. It returns an error only for a bad
// Config; it takes at most about Timeout × ⌈probes/Parallel⌉, less if ctx
// ends first.
func Discover(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	client := newClient(cfg.Timeout)
	defer client.CloseIdleConnections()
	type probe struct {
		target Target
		host   string
		server *Server
		skip   *Skipped
	}
	var probes []*probe
	for _, t := range cfg.Targets {
		if slices.Contains(cfg.SkipPorts, t.Port) {
			continue
		}
		for _, h := range cfg.Hosts {
			probes = append(probes, &probe{target: t, host: h})
		}
	}
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			p.server, p.skip = probeOne(pctx, client, p.target, p.host, cfg.Timeout)
		})
	}
	wg.Wait()
	var res Result
	found := map[int]bool{}
	for _, p := range probes { // in Targets × Hosts order: the first host wins a port
		if p.server != nil && !found[p.target.Port] {
			found[p.target.Port] = true
			res.Servers = append(res.Servers, *p.server)
		}
	}
	// A port is skipped once per reason (a server on 127.0.0.1 and ::1
	// is one server), and not at all where a server was found.
	type portReason struct {
		port   int
		reason string
	}
	said := map[portReason]bool{}
	for _, p := range probes {
		if p.skip == nil || found[p.target.Port] || said[portReason{p.target.Port, p.skip.Reason}] {
			continue
		}
		said[portReason{p.target.Port, p.skip.Reason}] = true
		cfg.Logger.Debug("local model server skipped", "addr", p.skip.Addr, "kind", p.skip.Kind, "reason", p.skip.Reason)
		res.Skipped = append(res.Skipped, *p.skip)
	}
	return res, nil
}

// newClient is an HTTP client that reaches loopback addresses only: its
// dialer refuses any other address (after name resolution, so a redirect
// or a name cannot lead elsewhere), it uses no proxy, and it follows no
// redirect.
func newClient(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, Control: func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrNotLoopback, address)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%w: %s", ErrNotLoopback, address)
		}
		return nil
	}}
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true,
			ResponseHeaderTimeout: timeout},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
}

// maxListBytes bounds a model list read from a server.
const maxListBytes = 1 << 20

// errQLC marks an answer from a QLC gateway.
var errQLC = errors.New("QLC itself")

// probeOne asks one address for its models: nil, nil when nothing listens.
func probeOne(ctx context.Context, c *http.Client, t Target, host string, timeout time.Duration) (*Server, *Skipped) {
	addr := net.JoinHostPort(host, strconv.Itoa(t.Port))
	base := "http://" + addr
	srv := &Server{Kind: t.Kind, Addr: addr, BaseURL: base + "/v1"}
	skip := func(reason string) (*Server, *Skipped) {
		return nil, &Skipped{Addr: addr, Kind: t.Kind, Reason: reason}
	}
	fail := func(err error) (*Server, *Skipped) {
		switch {
		case errors.Is(err, ErrNotLoopback):
			return skip(err.Error())
		case isRefused(err):
			return nil, nil // nothing listens there
		case errors.Is(err, errQLC):
			return skip("QLC itself")
		case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
			return skip(fmt.Sprintf("no answer within %v", timeout))
		}
		return skip(err.Error())
	}
	var models []Model
	if t.Kind == Ollama {
		var tags ollamaTags
		if err := getJSON(ctx, c, base+"/api/tags", &tags); err == nil && tags.Models != nil {
			for _, m := range tags.Models {
				name := first(m.Model, m.Name)
				if chatModel(name) && !strings.Contains(strings.ToLower(m.Details.Family), "bert") {
					models = append(models, Model{ID: name, Params: firstF(parseSize(m.Details.ParameterSize), paramsFromName(name))})
				} else {
					srv.Ignored = append(srv.Ignored, name)
				}
			}
			return found(srv, models, skip)
		} else if err != nil && (errors.Is(err, errQLC) || ctx.Err() != nil || isRefused(err)) {
			return fail(err)
		}
		// Not Ollama's own API: try the OpenAI one.
	}
	var list openAIModels
	if err := getJSON(ctx, c, base+"/v1/models", &list); err != nil {
		return fail(err)
	}
	entries := list.Data
	if entries == nil && list.Models != nil { // a list under "models" only
		entries = list.Models
	}
	if entries == nil {
		return skip("/v1/models is not a model list")
	}
	qlc := len(entries) > 0
	for _, e := range entries {
		id := first(e.ID, e.Model, e.Name)
		qlc = qlc && strings.HasPrefix(id, "qlc-") && e.OwnedBy == "qlc"
		if k, ok := ownerKinds[strings.ToLower(e.OwnedBy)]; ok {
			srv.Kind = k
		}
		if !chatModel(id) {
			srv.Ignored = append(srv.Ignored, id)
			continue
		}
		params := paramsFromName(id)
		if e.Meta.NParams > 0 {
			params = float64(e.Meta.NParams) / 1e9
		}
		models = append(models, Model{ID: id, Params: params, ContextWindow: e.MaxModelLen})
	}
	if qlc {
		return skip("QLC itself")
	}
	return found(srv, models, skip)
}

func found(srv *Server, models []Model, skip func(string) (*Server, *Skipped)) (*Server, *Skipped) {
	if len(models) == 0 {
		return skip("lists no chat model")
	}
	srv.Models = models
	return srv, nil
}

// ownerKinds maps a /v1/models owned_by to the server that writes it.
var ownerKinds = map[string]Kind{"vllm": VLLM, "llamacpp": LlamaCpp, "library": Ollama, "ollama": Ollama, "organization_owner": LMStudio}

// getJSON GETs url into v. A QLC gateway (QLCHeader) gives errQLC; a
// status other than 200 an error naming it.
func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.Header.Get(QLCHeader) != "" {
		return errQLC
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("asks for an API key (HTTP %d)", resp.StatusCode)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("redirects (HTTP %d to %q)", resp.StatusCode, resp.Header.Get("Location"))
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: HTTP %d", req.URL.Path, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err != nil {
		return err
	}
	if len(body) > maxListBytes {
		return fmt.Errorf("%s: model list larger than %d bytes", req.URL.Path, maxListBytes)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: not a model list: %w", req.URL.Path, err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isRefused(err error) bool {
	var op *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &op) && op.Op == "dial" && !op.Timeout()
}

// ollamaTags is Ollama's GET /api/tags.
type ollamaTags struct {
	Models []struct {
		Name    string `json:"name"`
		Model   string `json:"model"`
		Details struct {
			Family        string `json:"family"`
			ParameterSize string `json:"parameter_size"` // "8.0B", "270M"
		} `json:"details"`
	} `json:"models"`
}

// openAIModels is GET /v1/models as OpenAI, vLLM, llama.cpp, LM Studio
// and Ollama write it (llama.cpp adds "models" and "meta").
type openAIModels struct {
	Data   []openAIModel `json:"data"`
	Models []openAIModel `json:"models"`
}

type openAIModel struct {
	ID          string `json:"id"`
	Model       string `json:"model"`
	Name        string `json:"name"`
	OwnedBy     string `json:"owned_by"`
	MaxModelLen int    `json:"max_model_len"` // vLLM
	Meta        struct {
		NParams int64 `json:"n_params"` // llama.cpp
	} `json:"meta"`
}

// chatModel reports whether a model id looks like one that chats: not an
// embedding, reranking, speech or image model.
func chatModel(id string) bool {
	if id == "" {
		return false
	}
	l := strings.ToLower(id)
	for _, w := range []string{"embed", "rerank", "whisper", "tts", "bge-", "clip"} {
		if strings.Contains(l, w) {
			return false
		}
	}
	return true
}

var sizeRE = regexp.MustCompile(`(?i)(?:^|[^a-z0-9.])(\d+(?:\.\d+)?)([bm])(?:$|[^a-z0-9])`)

// paramsFromName reads a size such as "8b", "14B" or "270m" from a model
// name, in billions; 0 if it has none.
func paramsFromName(id string) float64 {
	m := sizeRE.FindStringSubmatch(id)
	if m == nil {
		return 0
	}
	return parseSize(m[1] + m[2])
}

// parseSize parses Ollama's parameter_size ("8.0B", "270M") in billions.
func parseSize(s string) float64 {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "B"):
		s = s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		s, mult = s[:len(s)-1], 1e-3
	default:
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return f * mult
}

func first(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func firstF(f ...float64) float64 {
	for _, x := range f {
		if x > 0 {
			return x
		}
	}
	return 0
}

// ParseTargets reads a list of targets as "kind:port" items separated by
// commas, e.g. "ollama:11434,vllm:8001" (kinds: ollama, llamacpp, vllm,
// lmstudio), for a server on a port of its own. Empty means
// DefaultTargets().
func ParseTargets(s string) ([]Target, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultTargets(), nil
	}
	var out []Target
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind, port, ok := strings.Cut(item, ":")
		k := Kind(strings.ToLower(strings.TrimSpace(kind)))
		n, err := strconv.Atoi(strings.TrimSpace(port))
		switch {
		case !ok || err != nil || n < 1 || n > 65535:
			return nil, fmt.Errorf("discover: %q is not kind:port (e.g. ollama:11434)", item)
		case k != Ollama && k != LlamaCpp && k != VLLM && k != LMStudio:
			return nil, fmt.Errorf("discover: unknown server kind %q (ollama, llamacpp, vllm or lmstudio)", kind)
		}
		out = append(out, Target{Kind: k, Port: n})
	}
	return out, nil
}
