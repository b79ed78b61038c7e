package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fileConfig is the config file (os.UserConfigDir()/qlc/config.json, or
// $QLC_CONFIG), written 0600 since it holds keys.
type fileConfig struct {
	URL      string `json:"url,omitempty"`
	APIKey   string `json:"api_key,omitempty"`
	AdminKey string `json:"admin_key,omitempty"`
}

// configPath is where the config file is: $QLC_CONFIG, else
// os.UserConfigDir()/qlc/config.json ("" when there is no config dir).
func configPath() string {
	if p := os.Getenv("QLC_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "qlc", "config.json")
}

// loadConfig reads the config file; a missing one is an empty config.
func loadConfig() (fileConfig, error) {
	var c fileConfig
	p := configPath()
	if p == "" {
		return c, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config file: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config file %s: %v", p, err)
	}
	return c, nil
}

// saveConfig writes the config file with mode 0600 (its directory 0700).
func saveConfig(c fileConfig) (string, error) {
	p := configPath()
	if p == "" {
		return "", errors.New("no user config directory (set QLC_CONFIG)")
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// mask shows the start of a key only.
func mask(k string) string {
	if k == "" {
		return "(none)"
	}
	if len(k) <= 10 {
		return strings.Repeat("*", len(k))
	}
	return k[:8] + "…"
}
