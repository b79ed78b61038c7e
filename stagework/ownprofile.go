package stagework

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A tenant's own profile (gateway: PUT /v1/profiles/{name}) is one entry of
// a profile file's "profiles" section, sent on its own, checked against the
// operator's file: it may name only the file's provider endpoints (a
// tenant never brings an endpoint or a base URL: the cluster calls only
// the URLs its operator configured), and it may not set prompt templates
// (they run in the cluster, and a template can render text without bound).
// Every process that runs it parses and checks it again (ParseProfile):
// its definition travels with the run, never trusted blindly.

// MaxProfileSize bounds a tenant profile's definition, in bytes.
const MaxProfileSize = 64 << 10

// ErrReservedProfile is wrapped by ParseProfile's error for the name
// "auto" (it asks for the profile routing picks).
var ErrReservedProfile = errors.New("stagework: the profile name is taken")

// ParseProfile parses and checks one profile named name, in the shape of
// an entry of the file's profiles section (YAML or JSON), against c's
// provider endpoints. Every error wraps ErrInvalidConfig and names its
// field relative to the profile (e.g. "stages.refiner.model: missing");
// several problems are reported together. The name may not be "auto"
// (ErrReservedProfile); whether it may be one of c's own profiles' names
// is the caller's to say (the gateway refuses it when the profile is put,
// and a run carries its definition, so a profile of the file's added
// later under the same name does not change the runs of the tenant's).
// The returned profile is new (not in c.Profiles).
func (c *Config) ParseProfile(name string, data []byte) (*Profile, error) {
	if len(data) > MaxProfileSize {
		return nil, fmt.Errorf("%w: %d bytes, larger than %d", ErrInvalidConfig, len(data), MaxProfileSize)
	}
	if name == AutoProfile {
		return nil, fmt.Errorf("%w: %q asks for the profile routing picks", ErrReservedProfile, name)
	}
	var rp rawProfile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rp); err != nil {
		if errors.Is(err, io.EOF) || strings.TrimSpace(string(data)) == "" {
			return nil, fmt.Errorf("%w: the profile is empty", ErrInvalidConfig)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, explainYAMLError(err))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document (one profile)", ErrInvalidConfig)
	}
	// The paths of errors start with root, which is cut off below: a
	// tenant's profile is the whole document it sent.
	const root = "profile"
	p, broken, errs := convertProfile(name, root, &rp)
	c.validateProfile(&errs, name, root, p, broken)
	for _, sp := range p.Stages {
		if sp.SystemPrompt != "" || sp.UserTemplate != "" {
			src := sp.src
			if src == "" {
				src = root + ".stages." + sp.StepID()
			}
			errs = append(errs, fmt.Errorf("%w: %s: system_prompt and user_template are for the operator's profile file only", ErrInvalidConfig, src))
		}
	}
	if len(errs) == 0 {
		return p, nil
	}
	out := make([]error, len(errs))
	for i, err := range errs {
		msg := strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": ")
		msg = strings.TrimPrefix(msg, root+".") // "profile: …" (the whole profile) stays
		out[i] = fmt.Errorf("%w: %s", ErrInvalidConfig, msg)
	}
	return nil, errors.Join(out...)
}
