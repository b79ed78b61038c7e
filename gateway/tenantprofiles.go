package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/stagework"
)

// Tenants' own profiles (docs/api.md "Tenant profiles", docs/design.md).
//
// A tenant (or an admin for it) puts a profile of its own: one entry of a
// profile file's "profiles" section (JSON or YAML), checked against the
// operator's profile file by stagework's own validation (so it names only
// the file's provider endpoints: a tenant never makes the cluster call a
// URL of its choosing). The Tenancy keeps it (store, migration 6),
// replicates it to the other gateways (RegistryChange.tenant_profiles) and
// the runs of that tenant that name it carry its definition
// (actors.RunRequest.ProfileDefinition → StartRun.profile_definition): a
// node knows only the profile file, and parses and checks the definition
// again. Other tenants never see it or run it (404 for them).
//
// Names: a tenant profile may not take the name of a profile of the file
// (409 profile_name_taken); if the operator later adds one with a tenant
// profile's name, that tenant's runs of the name keep using its own.
// Limits: max_profiles (0, the default: none; tenant profiles are off
// until an admin allows them); the profiles allow-list (limits.profiles)
// is about the file's profiles and does not apply to the tenant's own;
// every other limit applies to their runs as to any (the reservation
// counts the tenant profile's own steps).

var (
	errTenantProfileNone = errors.New("gateway: no such tenant profile")
	errTenantProfilesOff = errors.New("gateway: the tenant may keep no profiles of its own (max_profiles is 0)")
	errTenantProfileMax  = errors.New("gateway: the tenant keeps as many profiles as max_profiles allows")
)

func tenantProfileID(tenant, name string) string { return tenant + "\x00" + name }

// putTenantProfile stores p (newest wins) and caches it.
func (t *Tenancy) putTenantProfile(p store.TenantProfile) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok, err := t.st.PutTenantProfile(p)
	if err != nil || !ok {
		return ok, err
	}
	if p.Deleted {
		p.Definition = ""
	}
	t.tenantProfiles[tenantProfileID(p.TenantID, p.Name)] = p
	return true, nil
}

// PutTenantProfile stores def (checked by the caller: JSON of one profile)
// as tenant's profile name, replacing any earlier one, and sends it to the
// other gateways. A new name is refused past the tenant's max_profiles
// (errTenantProfilesOff, errTenantProfileMax); replacing one it has is
// not, while max_profiles is above 0.
func (t *Tenancy) PutTenantProfile(tenant, name string, def []byte) (store.TenantProfile, error) {
	tn, ok := t.Tenant(tenant)
	if !ok {
		return store.TenantProfile{}, fmt.Errorf("%w: %q", errTenantUnknown, tenant)
	}
	if tn.Limits.MaxProfiles <= 0 {
		return store.TenantProfile{}, errTenantProfilesOff
	}
	t.mu.RLock()
	prev, had := t.tenantProfiles[tenantProfileID(tenant, name)]
	n := 0
	for _, p := range t.tenantProfiles {
		if p.TenantID == tenant && !p.Deleted {
			n++
		}
	}
	t.mu.RUnlock()
	if (!had || prev.Deleted) && int64(n) >= tn.Limits.MaxProfiles {
		return store.TenantProfile{}, fmt.Errorf("%w (%d)", errTenantProfileMax, tn.Limits.MaxProfiles)
	}
	now := versionAfter(prev.UpdatedAt)
	p := store.TenantProfile{TenantID: tenant, Name: name, Definition: string(def), CreatedAt: now, UpdatedAt: now}
	if had && !prev.Deleted {
		p.CreatedAt = prev.CreatedAt
	}
	if _, err := t.putTenantProfile(p); err != nil {
		return store.TenantProfile{}, err
	}
	t.broadcastTenantProfiles(p)
	return p, nil
}

// DeleteTenantProfile removes tenant's profile name: runs started from now
// on cannot name it. errTenantProfileNone if there is none.
func (t *Tenancy) DeleteTenantProfile(tenant, name string) (store.TenantProfile, error) {
	t.mu.RLock()
	prev, had := t.tenantProfiles[tenantProfileID(tenant, name)]
	t.mu.RUnlock()
	if !had || prev.Deleted {
		return store.TenantProfile{}, errTenantProfileNone
	}
	p := store.TenantProfile{TenantID: tenant, Name: name, CreatedAt: prev.CreatedAt, UpdatedAt: versionAfter(prev.UpdatedAt), Deleted: true}
	if _, err := t.putTenantProfile(p); err != nil {
		return store.TenantProfile{}, err
	}
	t.broadcastTenantProfiles(p)
	return p, nil
}

// TenantProfile returns tenant's profile name, if it has one.
func (t *Tenancy) TenantProfile(tenant, name string) (store.TenantProfile, bool) {
	if t == nil {
		return store.TenantProfile{}, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.tenantProfiles[tenantProfileID(tenant, name)]
	return p, ok && !p.Deleted
}

// TenantProfilesOf returns tenant's profiles (tombstones left out), sorted
// by name.
func (t *Tenancy) TenantProfilesOf(tenant string) []store.TenantProfile {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []store.TenantProfile
	for _, p := range t.tenantProfiles {
		if p.TenantID == tenant && !p.Deleted {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b store.TenantProfile) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// tenantProfileSnapshot returns every tenant profile row, tombstones
// included.
func (t *Tenancy) tenantProfileSnapshot() []store.TenantProfile {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return sortedRows(t.tenantProfiles, func(p store.TenantProfile) string { return tenantProfileID(p.TenantID, p.Name) })
}

func (t *Tenancy) broadcastTenantProfiles(ps ...store.TenantProfile) {
	t.mu.RLock()
	engine, peers := t.engine, t.peers
	t.mu.RUnlock()
	if engine == nil {
		return
	}
	rc := encodeRegistry(nil, nil)
	addTenantProfiles(rc, ps)
	for _, p := range peers() {
		_, _ = engine.SendRegistry(context.Background(), p, rc)
	}
}

// ---- Resolution on the run path ----

// ownProfile returns tenant's own profile name, parsed and checked against
// this gateway's profile file, and its definition; ok false if the tenant
// has none of that name, may keep none (max_profiles 0), or it no longer
// checks (the file lost an endpoint it names: logged).
func (s *Server) ownProfile(tn store.Tenant, name string) (*stagework.Profile, []byte, bool) {
	if s.tenancy == nil || tn.ID == "" || tn.Limits.MaxProfiles <= 0 {
		return nil, nil, false
	}
	tp, ok := s.tenancy.TenantProfile(tn.ID, name)
	if !ok {
		return nil, nil, false
	}
	def := []byte(tp.Definition)
	p, err := s.engine.Profile(name, def)
	if err != nil {
		s.logger.Warn("a tenant profile no longer checks against the profile file", "tenant", tn.ID, "profile", name, "error", err)
		return nil, nil, false
	}
	return p, def, true
}

// runProfile resolves the profile a run of p names: the tenant's own
// (def: its definition), else the profile file's (def nil).
func (s *Server) runProfile(p principal, name string) (prof *stagework.Profile, def []byte, e *apiError) {
	if prof, def, ok := s.ownProfile(p.tenant, name); ok {
		return prof, def, nil
	}
	prof, err := s.engine.Stages().Profile(name)
	if err != nil {
		return nil, nil, s.profileErrorFor(p, name)
	}
	return prof, nil, nil
}

// hubProfile is the profile of a run this gateway follows: from its start
// message, else (a run attached from elsewhere) its tenant's own of that
// name, else the file's; nil if none.
func (s *Server) hubProfile(h *actors.Hub) *stagework.Profile {
	if p, ok := s.engine.RunProfile(h); ok {
		return p
	}
	if tn, ok := s.tenancy.tenantOrNil(h.Tenant); ok {
		if p, _, ok := s.ownProfile(tn, h.Profile); ok {
			return p
		}
	}
	return nil
}

// tenantOrNil is Tenant on a Tenancy that may be nil.
func (t *Tenancy) tenantOrNil(id string) (store.Tenant, bool) {
	if t == nil {
		return store.Tenant{}, false
	}
	return t.Tenant(id)
}

// profileErrorFor is profileError listing the tenant's own profiles too.
func (s *Server) profileErrorFor(p principal, name string) *apiError {
	known := s.engine.Stages().ProfileNames()
	if p.tenant.Limits.MaxProfiles > 0 {
		for _, tp := range s.tenancy.TenantProfilesOf(p.tenantID()) {
			known = append(known, tp.Name)
		}
	}
	return errNotFound("unknown_profile", fmt.Sprintf("unknown profile %q; known profiles: %s", name, strings.Join(known, ", ")))
}

// ---- HTTP ----

// tenantProfileView is a tenant profile as the API shows it: the profile's
// view (as GET /v1/profiles lists it) and its definition as stored.
type tenantProfileView struct {
	profileView
	Object     string          `json:"object"`
	Tenant     string          `json:"tenant"`
	Definition json.RawMessage `json:"definition"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

func viewTenantProfile(cfg *stagework.Config, tp store.TenantProfile, p *stagework.Profile) tenantProfileView {
	v := tenantProfileView{Object: "profile", Tenant: tp.TenantID, Definition: json.RawMessage(tp.Definition),
		CreatedAt: tp.CreatedAt, UpdatedAt: tp.UpdatedAt}
	if p != nil {
		v.profileView = viewProfile(cfg, p)
	} else {
		v.profileView = profileView{Name: tp.Name, Steps: []profileStepVw{}, Stages: []profileStageVw{}}
	}
	v.Owner = "tenant"
	return v
}

// profileTenant is the tenant a profiles request is about: the tenant
// key's own, or for an admin key the ?tenant= parameter (as for provider
// keys).
func (s *Server) profileTenant(r *http.Request) (store.Tenant, *apiError) {
	id, e := s.providerKeyTenant(r)
	if e != nil {
		return store.Tenant{}, e
	}
	tn, ok := s.tenancy.Tenant(id)
	if !ok {
		return store.Tenant{}, errNotFound("tenant_not_found", fmt.Sprintf("no tenant %q", id))
	}
	return tn, nil
}

// readProfileBody reads a profile definition (JSON, or YAML with a YAML
// content type) and returns it as JSON.
func (s *Server) readProfileBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	yamlBody := false
	switch mt {
	case "", "application/json", "application/x-www-form-urlencoded":
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		yamlBody = true
	default:
		return nil, &apiError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type must be application/json or application/yaml, not %q", ct)}
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, stagework.MaxProfileSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: fmt.Sprintf("a profile is at most %d bytes", stagework.MaxProfileSize)}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "body_timeout",
				Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyReadTimeout)}
		}
		return nil, errInvalid("body_read_error", "could not read the request body")
	}
	if strings.TrimSpace(string(body)) == "" {
		return nil, errInvalid("invalid_profile", "the body is empty: send the profile (description, strategy, provider, stages or the strategy's steps)")
	}
	if !yamlBody {
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			return nil, errInvalid("invalid_json", fmt.Sprintf("the body is not a JSON object: %v", err))
		}
		return body, nil
	}
	// YAML: checked as it is (its errors name lines), then kept as JSON.
	var v any
	if err := yaml.Unmarshal(body, &v); err != nil {
		return nil, errInvalid("invalid_profile", "the body is not YAML: "+err.Error())
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errInvalid("invalid_profile", "the body is not a YAML mapping (a profile's fields)")
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, errInvalid("invalid_profile", "the YAML does not map to JSON: "+err.Error())
	}
	return js, nil
}

// profileProblems turns ParseProfile's error into a 400 naming each field.
func profileProblems(err error) *apiError {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		lines = append(lines, strings.TrimPrefix(l, stagework.ErrInvalidConfig.Error()+": "))
	}
	return errInvalidParam("profile", "invalid_profile", strings.Join(lines, "; "))
}

func (s *Server) putTenantProfile(w http.ResponseWriter, r *http.Request) {
	tn, e := s.profileTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	name := r.PathValue("name")
	cfg := s.engine.Stages()
	if _, taken := cfg.Profiles[name]; taken || name == stagework.AutoProfile {
		writeError(w, &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "profile_name_taken",
			Message: fmt.Sprintf("%q is a profile of the server's profile file (or \"auto\"); choose another name", name)})
		return
	}
	def, e := s.readProfileBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	p, err := cfg.ParseProfile(name, def)
	if err != nil {
		writeError(w, profileProblems(err))
		return
	}
	tp, err := s.tenancy.PutTenantProfile(tn.ID, name, def)
	if e := tenantProfileError(err, tn); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "profile.put", tn.ID+"/"+name, map[string]string{"tenant": tn.ID, "profile": name})
	writeJSON(w, http.StatusOK, viewTenantProfile(s.engine.Stages(), tp, p))
}

func (s *Server) getTenantProfile(w http.ResponseWriter, r *http.Request) {
	tn, e := s.profileTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	name := r.PathValue("name")
	if tp, ok := s.tenancy.TenantProfile(tn.ID, name); ok && tn.Limits.MaxProfiles > 0 {
		p, _ := s.engine.Profile(name, []byte(tp.Definition))
		writeJSON(w, http.StatusOK, viewTenantProfile(s.engine.Stages(), tp, p))
		return
	}
	// A profile of the file's that the tenant may run.
	if p, err := s.engine.Stages().Profile(name); err == nil && (principalOf(r).admin || principal{tenant: tn}.allows(name)) {
		v := viewProfile(s.engine.Stages(), p)
		writeJSON(w, http.StatusOK, struct {
			profileView
			Object string `json:"object"`
		}{v, "profile"})
		return
	}
	writeError(w, errNotFound("profile_not_found", fmt.Sprintf("no profile %q", name)))
}

func (s *Server) deleteTenantProfile(w http.ResponseWriter, r *http.Request) {
	tn, e := s.profileTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	name := r.PathValue("name")
	tp, err := s.tenancy.DeleteTenantProfile(tn.ID, name)
	if err == nil {
		s.audit(r, "profile.delete", tn.ID+"/"+name, map[string]string{"tenant": tn.ID, "profile": name})
		writeJSON(w, http.StatusOK, map[string]any{"object": "profile", "tenant": tn.ID, "name": name, "deleted": true, "updated_at": tp.UpdatedAt})
		return
	}
	if _, builtin := s.engine.Stages().Profiles[name]; builtin && errors.Is(err, errTenantProfileNone) {
		writeError(w, &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "profile_not_owned",
			Message: fmt.Sprintf("%q is a profile of the server's profile file: it cannot be deleted through the API", name)})
		return
	}
	writeError(w, tenantProfileError(err, tn))
}

func tenantProfileError(err error, tn store.Tenant) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errTenantProfileNone):
		return errNotFound("profile_not_found", "the tenant has no profile of that name")
	case errors.Is(err, errTenantProfilesOff):
		return &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "tenant_profiles_off",
			Message: "this tenant may keep no profiles of its own (its limit max_profiles is 0; an admin sets it)"}
	case errors.Is(err, errTenantProfileMax):
		return &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "max_profiles",
			Message: fmt.Sprintf("this tenant keeps %d profiles of its own, its limit max_profiles; delete one or ask an admin", tn.Limits.MaxProfiles)}
	case errors.Is(err, errTenantUnknown):
		return errNotFound("tenant_not_found", err.Error())
	}
	return errServer(http.StatusInternalServerError, "internal_error", "could not store the profile")
}
