package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	cmap "github.com/orcaman/concurrent-map"
)

// registryBuckets is how many buckets the process registry of an engine's
// actor system has. protoactor's own is 1 024 buckets of concurrent-map's
// 32 shards: 32 768 Go maps. A Go map keeps its groups once grown, so after
// the first few thousand runs (a hub, a coordinator, workers and futures
// each) nearly every one of them holds a 288-byte group that never comes
// back: up to ~9.4 MB of heap above a cold idle (issue 17's "heap returns to
// within 10 % of idle once runs are evicted"). 16 buckets (512 maps) bound
// that residue by the peak number of live processes instead; a shard's lock
// is held for one map operation, so 512 of them keep contention negligible
// (BenchmarkRegistryAddRemove on two cores: 414 ns/op, protoactor's 721).
const registryBuckets = 16

// compactRegistry replaces system's process registry buckets with
// registryBuckets of them, moving what is registered already (the dead
// letter and event stream processes). It must run right after the system is
// made, before anything else uses it: the registry's buckets are not
// swapped under a lock.
func compactRegistry(system *actor.ActorSystem) {
	old := system.ProcessRegistry.LocalPIDs
	sm := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, registryBuckets)}
	for i := range sm.LocalPIDs {
		sm.LocalPIDs[i] = cmap.New()
	}
	for _, b := range old.LocalPIDs {
		// IterCb: no goroutines (Items and IterBuffered start one per shard).
		b.IterCb(func(id string, p any) { sm.GetBucket(id).Set(id, p) })
	}
	system.ProcessRegistry.LocalPIDs = sm
}
