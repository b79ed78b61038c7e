package stagework

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A Secret, alone or inside a Request, prints as "[redacted]" whatever the
// verb, in JSON and in slog.
func TestSecretNeverPrints(t *testing.T) {
	const key = "sk-never-printed-1234"
	req := Request{Model: "m", APIKey: Secret(key)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", req.APIKey, "req", req)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", req.APIKey, "req", req)
	j, _ := json.Marshal(req)
	out := fmt.Sprintf("%s %v %+v %#v %q %x %X", req.APIKey, req, req, req, req.APIKey, req.APIKey, req.APIKey) + string(j) + logs.String()
	if strings.Contains(out, key) || strings.Contains(out, fmt.Sprintf("%x", key)) || !strings.Contains(out, "[redacted]") {
		t.Fatalf("a secret printed: %s", out)
	}
	if req.APIKey.Reveal() != key {
		t.Fatal("Reveal")
	}
}
