package gateway

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/route"
)

// routeAuto resolves a request for profile "auto" (model "qlc-auto"):
// the question's complexity tier (route.Classify, no model call) picks a
// profile through the profiles file's routing, and the decision is
// recorded in the run (req.Routing). A tenant not allowed the tier's
// profile gets the nearest tier whose profile it may run (fallbackTiers);
// if it may run none, the request is refused naming why. A request for
// another profile is left alone.
func (s *Server) routeAuto(p principal, req *actors.RunRequest) *apiError {
	if req.Profile != stagework.AutoProfile {
		return nil
	}
	cfg := s.engine.Stages()
	if cfg.Routing == nil {
		return errInvalidParam("profile", "routing_not_configured",
			`profile "auto" needs routing in the profiles file (routing: {simple: …, standard: …, complex: …}); this server's file has none`)
	}
	d := route.Classify(req.Query, req.History)
	reasons := d.Reasons
	var tried []string
	for _, tier := range fallbackTiers(d.Tier) {
		name, ok := cfg.RoutedProfile(tier)
		if !ok {
			continue
		}
		if _, err := cfg.Profile(name); err != nil {
			continue
		}
		if !p.allows(name) {
			tried = append(tried, name)
			continue
		}
		if tier != d.Tier {
			reasons = append(reasons, fmt.Sprintf("tier %s's profile %s not allowed: used tier %s's", d.Tier, tried[0], tier))
		}
		req.Profile = name
		req.Routing = &messages.RunRouting{Tier: d.Tier, Reasons: reasons, Profile: name}
		return nil
	}
	return &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "profile_not_allowed",
		Message: fmt.Sprintf(`profile "auto" put this question in tier %s (%s); this tenant may run none of the routed profiles (%s); allowed: %s`,
			d.Tier, strings.Join(d.Reasons, ", "), strings.Join(tried, ", "), strings.Join(p.tenant.Limits.Profiles, ", "))}
}

// fallbackTiers lists the tiers to try for tier, nearest first: the tier
// itself, then the next cheaper, then the next dearer (a cheaper answer
// is preferred to a surprise on the bill), and so on outwards.
func fallbackTiers(tier string) []string {
	i := -1
	for j, t := range stagework.Tiers {
		if t == tier {
			i = j
		}
	}
	if i < 0 {
		return nil
	}
	out := []string{tier}
	for d := 1; d < len(stagework.Tiers); d++ {
		if i-d >= 0 {
			out = append(out, stagework.Tiers[i-d])
		}
		if i+d < len(stagework.Tiers) {
			out = append(out, stagework.Tiers[i+d])
		}
	}
	return out
}

// autoAllowed reports whether the tenant may ask for profile "auto": the
// file has routing and the tenant may run at least one routed profile.
func (s *Server) autoAllowed(p principal) bool {
	cfg := s.engine.Stages()
	for _, tier := range stagework.Tiers {
		if name, ok := cfg.RoutedProfile(tier); ok && p.allows(name) {
			return true
		}
	}
	return false
}

// routingView is a run's routing decision (docs/api.md, Auto routing).
type routingView struct {
	Tier    string   `json:"tier"`
	Reasons []string `json:"reasons"`
	Profile string   `json:"profile"`
}

func toRoutingView(r *messages.RunRouting) *routingView {
	if r == nil {
		return nil
	}
	return &routingView{Tier: r.GetTier(), Reasons: append([]string{}, r.GetReasons()...), Profile: r.GetProfile()}
}
