package quota

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Ordinal is the member id setting (a node's -limiter-id) that takes the
// id from the host name, as a Kubernetes StatefulSet names its pods
// (<name>-0, <name>-1, …): the pod of ordinal i is member Peers[i], so
// ordinals 0, 1 and 2 are members 1, 2 and 3, and any later ordinal is no
// member (0: a plain node). Scaling the StatefulSet up adds plain nodes and
// never a fourth voter; scaling it down removes the highest ordinals first,
// so the members are the last to go.
//
// A StatefulSet runs at most one pod of an ordinal at a time (unless a pod
// is force-deleted while its kubelet may still run it), and the ordinal's
// volume claim carries the member's log from one pod to the next: the two
// things Raft asks of an id.
const Ordinal = "ordinal"

// MemberID decides a process's member id from its setting (a node's
// -limiter-id, QLC_LIMITER_ID) and its host name, for the group of peers
// (nil: the default group 1, 2, 3):
//
//   - "" or "0": not a member (0).
//   - a decimal id: that id, which must be one of peers.
//   - Ordinal: from the host name's last "-N" (its first DNS label, so a
//     pod with setHostnameAsFQDN reads the same), N a decimal StatefulSet
//     ordinal; peers[N] for N < len(peers), else 0 (a plain node).
//
// Anything else is an error that names what was wrong.
func MemberID(setting, hostname string, peers []uint64) (uint64, error) {
	if len(peers) == 0 {
		peers = DefaultConfig().Peers
	}
	setting = strings.TrimSpace(setting)
	switch setting {
	case "", "0":
		return 0, nil
	case Ordinal:
		n, err := hostOrdinal(hostname)
		if err != nil {
			return 0, fmt.Errorf("quota: member id %q: %w", setting, err)
		}
		if n >= uint64(len(peers)) {
			return 0, nil
		}
		return peers[n], nil
	}
	id, err := strconv.ParseUint(setting, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("quota: member id %q: want 0 (no member), one of %s, or %q (from a StatefulSet pod's host name)", setting, idList(peers), Ordinal)
	}
	if !slices.Contains(peers, id) {
		return 0, fmt.Errorf("quota: member id %d is not one of the group's ids %s (0: no member)", id, idList(peers))
	}
	return id, nil
}

// hostOrdinal reads the StatefulSet ordinal at the end of a host name.
func hostOrdinal(hostname string) (uint64, error) {
	label, _, _ := strings.Cut(strings.TrimSpace(hostname), ".")
	i := strings.LastIndexByte(label, '-')
	if label == "" || i < 0 || i == len(label)-1 {
		return 0, fmt.Errorf("host name %q does not end in -N, a StatefulSet pod's ordinal", hostname)
	}
	digits := label[i+1:]
	n, err := strconv.ParseUint(digits, 10, 64)
	// StatefulSet ordinals are written without a sign or leading zeros: a
	// name such as web-01 or web-+1 is not one.
	if err != nil || strconv.FormatUint(n, 10) != digits {
		return 0, fmt.Errorf("host name %q does not end in -N, a StatefulSet pod's ordinal (%q is not one)", hostname, digits)
	}
	return n, nil
}

func idList(peers []uint64) string {
	s := make([]string, len(peers))
	for i, p := range peers {
		s[i] = strconv.FormatUint(p, 10)
	}
	return strings.Join(s, ", ")
}
