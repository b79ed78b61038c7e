package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// Addrs are the addresses a process listens on, as bound: where an address
// flag says port 0, the port the kernel chose. A test or a supervisor starts
// a command with -addr-file (QLC_ADDR_FILE) and port 0 everywhere, then
// reads them back. (Picking a "free" port by listening and closing, and
// handing it to the command, races with every other process on the machine:
// CI saw "address already in use".)
type Addrs struct {
	// HTTP is the gateway's API and web UI listener (-addr).
	HTTP string `json:"http,omitempty"`
	// Ops is the node's or gateway's /healthz, /readyz and /metrics
	// listener (-ops-addr); empty when the process has none.
	Ops string `json:"ops,omitempty"`
	// Actor is the actor transport's address as announced to other
	// processes (-bind, -advertise); empty when the process has none.
	Actor string `json:"actor,omitempty"`
	// Gossip is the gossip address as announced to other members
	// (-gossip-bind, -gossip-advertise): what others pass in -seeds. Empty
	// when the process is not a cluster member.
	Gossip string `json:"gossip,omitempty"`
}

// AddrFileFlag defines the -addr-file flag on fs (default QLC_ADDR_FILE).
func AddrFileFlag(fs *flag.FlagSet) *string {
	return fs.String("addr-file", Env("QLC_ADDR_FILE", ""),
		"once listening, write the bound addresses to this file as JSON {http, ops, actor, gossip}: start with port 0 and read the ports back (QLC_ADDR_FILE)")
}

// WriteAddrs writes a to path as JSON, atomically: a temporary file in the
// same folder is renamed over path, so a reader polling for the file sees
// all of it or nothing. An empty path writes nothing.
func WriteAddrs(path string, a Addrs) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".addrs-*")
	if err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("addr file: %w", err)
	}
	return nil
}

// ReadAddrs reads a file written by WriteAddrs. A file not written yet gives
// an error wrapping fs.ErrNotExist.
func ReadAddrs(path string) (Addrs, error) {
	var a Addrs
	b, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("addr file %s: %w", path, err)
	}
	if a == (Addrs{}) {
		return a, errors.New("addr file " + path + ": no address")
	}
	return a, nil
}
