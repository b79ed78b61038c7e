package cli

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/qlc-project/qlc/cluster"
)

// Keyring is a process's cluster keys: Primary encrypts gossip and signs
// this process's transport certificate; Secondary keys are accepted too
// (key rotation, docs/keys.md). An empty Primary means no key.
type Keyring struct {
	Primary   []byte
	Secondary [][]byte
}

// MinStrictKeyLen is the shortest cluster key a node or a gateway in a
// cluster accepts (256 bits); shorter keys are allowed only with -local.
const MinStrictKeyLen = 32

// publishedKeys are the SHA-256 digests of cluster keys that were once
// published (in the repository's docker-compose.yml): anyone can read them,
// so they are refused outside -local whatever their length. Digests, so
// the key itself is not kept in the code as a usable literal.
var publishedKeys = [][sha256.Size]byte{
	// the compose default until issue 10 (32 bytes, "qlc-dev-cluster-…")
	{0x33, 0x6e, 0xa1, 0x7e, 0x99, 0x02, 0xee, 0x1a, 0xab, 0x12, 0x57, 0xac, 0x90, 0x04, 0xeb, 0x9e,
		0x1b, 0x4c, 0xe8, 0x09, 0x58, 0x57, 0x41, 0xe4, 0xdb, 0x0e, 0xc2, 0x30, 0x8e, 0x8a, 0x18, 0xb7},
}

// LoadKeyring reads the cluster keyring from the environment (getenv is
// os.Getenv outside tests). Keys are never taken from flags, which other
// users of the machine can read. Either
//
//   - QLC_CLUSTER_KEY_FILE names a file with one key per line, the first the
//     primary (blank lines and lines starting with # are skipped), or
//   - QLC_CLUSTER_KEY is the primary key and QLC_CLUSTER_KEY_SECONDARY lists
//     further keys, comma-separated.
//
// Keys are base64 or hex of 16, 24 or 32 bytes (cluster.ParseKey). With
// strict (every process of a real cluster; not -local) each key must be 32
// bytes and must not be a published key. No key at all gives an empty
// Keyring and no error: the caller decides whether that is allowed.
func LoadKeyring(getenv func(string) string, strict bool) (Keyring, error) {
	var items []string
	env, sec, file := strings.TrimSpace(getenv("QLC_CLUSTER_KEY")), strings.TrimSpace(getenv("QLC_CLUSTER_KEY_SECONDARY")), getenv("QLC_CLUSTER_KEY_FILE")
	switch {
	case file != "" && (env != "" || sec != ""):
		return Keyring{}, errors.New("cluster key: set QLC_CLUSTER_KEY_FILE or QLC_CLUSTER_KEY (with QLC_CLUSTER_KEY_SECONDARY), not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return Keyring{}, fmt.Errorf("cluster key file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				items = append(items, line)
			}
		}
		if len(items) == 0 {
			return Keyring{}, fmt.Errorf("cluster key file %s: no key in it", file)
		}
	case env != "":
		items = append([]string{env}, SplitList(sec)...)
	case sec != "":
		return Keyring{}, errors.New("cluster key: QLC_CLUSTER_KEY_SECONDARY is set without QLC_CLUSTER_KEY (the primary)")
	default:
		return Keyring{}, nil
	}
	var ring Keyring
	for i, s := range items {
		what := "QLC_CLUSTER_KEY"
		switch {
		case file != "":
			what = fmt.Sprintf("cluster key file, key %d", i+1)
		case i > 0:
			what = fmt.Sprintf("QLC_CLUSTER_KEY_SECONDARY, key %d", i)
		}
		k, err := cluster.ParseKey(s)
		if err != nil {
			return Keyring{}, fmt.Errorf("%s: %w (make one with `openssl rand -base64 32`)", what, err)
		}
		if strict {
			if err := checkStrictKey(k); err != nil {
				return Keyring{}, fmt.Errorf("%s: %w", what, err)
			}
		}
		if i == 0 {
			ring.Primary = k
			continue
		}
		dup := bytes.Equal(k, ring.Primary)
		for _, o := range ring.Secondary {
			dup = dup || bytes.Equal(k, o)
		}
		if !dup {
			ring.Secondary = append(ring.Secondary, k)
		}
	}
	return ring, nil
}

func checkStrictKey(k []byte) error {
	if len(k) < MinStrictKeyLen {
		return fmt.Errorf("cluster key is %d bytes, a cluster needs %d (make one with `openssl rand -base64 32`; shorter keys only with -local)", len(k), MinStrictKeyLen)
	}
	sum := sha256.Sum256(k)
	for _, p := range publishedKeys {
		if sum == p {
			return errors.New("this cluster key was published (the old docker-compose.yml default) and protects nothing: make a new one with `openssl rand -base64 32` (or run make compose-up)")
		}
	}
	return nil
}

// CheckInsecure refuses -insecure (no cluster key: gossip and actor
// transport in clear, unauthenticated) unless every address this process
// listens on or advertises is loopback. addrs maps each flag name to its
// value: "host:port" or a bare host; empty values are skipped.
func CheckInsecure(insecure bool, addrs map[string]string) error {
	if !insecure {
		return nil
	}
	for _, flag := range slices.Sorted(maps.Keys(addrs)) {
		a := addrs[flag]
		if a == "" {
			continue
		}
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		if !isLoopback(host) {
			return fmt.Errorf("-insecure runs without a cluster key and is only for loopback, but -%s is %q: set QLC_CLUSTER_KEY instead (`openssl rand -base64 32`)", flag, a)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
