package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// tokenizeRequest is the body of POST /v1/tokenize: a model (its encoding,
// or an approximation for non-OpenAI models) or an encoding, and the text.
type tokenizeRequest struct {
	Model    string `json:"model"`
	Encoding string `json:"encoding"`
	Text     string `json:"text"`
	// MaxTokens, when set, asks for the text cut to at most that many
	// tokens at a token boundary (FitToBudget) instead of its tokens.
	MaxTokens *int64 `json:"max_tokens"`
}

func (s *Server) tokenize(w http.ResponseWriter, r *http.Request) {
	var req tokenizeRequest
	if e := s.decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if req.Model == "" && req.Encoding == "" {
		writeError(w, errInvalidParam("model", "missing_model", `give "model" (e.g. "gpt-4o") or "encoding" ("cl100k_base", "o200k_base")`))
		return
	}
	if req.MaxTokens != nil && *req.MaxTokens < 0 {
		writeError(w, errInvalidParam("max_tokens", "invalid_max_tokens", "max_tokens must not be negative"))
		return
	}
	// A tokenize request is a request: it counts against the tenant's
	// requests_per_minute like a run (429 with Retry-After beyond it).
	if e := s.countRequest(principalOf(r)); e != nil {
		writeError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if req.MaxTokens != nil {
		ft, err := s.engine.Tokenizer().FitToBudget(ctx, &messages.FitToBudget{Model: req.Model, Encoding: req.Encoding, Text: req.Text, MaxTokens: *req.MaxTokens})
		if err != nil {
			if errors.Is(err, actors.ErrTokenize) {
				writeError(w, errInvalid("tokenize_failed", err.Error()))
				return
			}
			writeError(w, errServer(http.StatusInternalServerError, "internal_error", "tokenizer failed"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"text": ft.Text, "count": ft.Tokens, "truncated": ft.Truncated, "original_count": ft.OriginalTokens,
			"encoding": ft.Encoding, "approximate": ft.Approximate, "label": ft.Label, "served_by": ft.ServedBy,
		})
		return
	}
	tc, err := s.engine.Tokenizer().CountTokens(ctx, &messages.CountTokens{Model: req.Model, Encoding: req.Encoding, Texts: []string{req.Text}, WithTokens: true})
	if err != nil {
		if errors.Is(err, actors.ErrTokenize) {
			writeError(w, errInvalid("tokenize_failed", err.Error()))
			return
		}
		writeError(w, errServer(http.StatusInternalServerError, "internal_error", "tokenizer failed"))
		return
	}
	tokens := []int32{}
	if len(tc.Tokens) > 0 && tc.Tokens[0].Ids != nil {
		tokens = tc.Tokens[0].Ids
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tokens": tokens, "count": tc.Counts[0], "encoding": tc.Encoding,
		"approximate": tc.Approximate, "label": tc.Label, "served_by": tc.ServedBy,
	})
}
