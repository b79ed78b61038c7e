// Package quota keeps tenants' token budgets under consensus: a Raft group
// of three nodes (go.etcd.io/raft/v3) allocates each tenant's budget for a
// period in slices to the nodes that host the tenant's limiter, and never
// allocates more than the budget. A limiter grants a run locally (no log
// write) from the slices its node holds; it asks the group for a new slice
// only when they are used up, and gives back what it did not use when it
// goes idle. Two nodes that both believe they own a tenant (membership
// views that disagree, a partition) each grant only from their own slices,
// so together they never grant more than the budget, whatever the network
// and the clocks do; a node cut off from the majority cannot get new
// slices.
//
// Life cycle of a Node:
//
//  1. Start replays the node's write-ahead log (Config.Dir) or starts the
//     group's fixed configuration (voters 1, 2, 3).
//  2. The transport delivers peers' messages to Step and carries the
//     node's own through Config.Send (package actors: protoactor's
//     authenticated remote).
//  3. Take and Release account grants against the slices this process
//     holds; Acquire proposes a grant entry and waits for it to be applied
//     here; GiveBack proposes the return of what is unused.
//  4. Stop ends the node's goroutine and closes the log.
//
// A slice belongs to a process (holder id and incarnation): a restarted
// process does not know how much of its earlier slices it used, so those
// stay allocated until the period ends (bounded waste, never an overrun).
package quota
