package actors

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// TestCompactRegistryKeepsProcesses: the engine's system has the compact
// registry, what protoactor registered before the swap is still found, and
// actors spawned after it are reachable and gone once stopped.
func TestCompactRegistryKeepsProcesses(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	reg := e.system.ProcessRegistry
	if n := len(reg.LocalPIDs.LocalPIDs); n != registryBuckets {
		t.Fatalf("registry buckets %d, want %d", n, registryBuckets)
	}
	for _, id := range []string{"eventstream", "deadletter"} {
		if p, ok := reg.GetLocal(id); !ok || p == e.system.DeadLetter && id != "deadletter" {
			t.Fatalf("%q not in the registry after the swap", id)
		}
	}
	got := make(chan string, 1)
	pid := e.system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if s, ok := c.Message().(string); ok {
			got <- s
		}
	}))
	if _, ok := reg.GetLocal(pid.Id); !ok {
		t.Fatalf("spawned %s not registered", pid.Id)
	}
	e.system.Root.Send(pid, "hello")
	if s := <-got; s != "hello" {
		t.Fatalf("got %q", s)
	}
	if err := e.system.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, ok := reg.GetLocal(pid.Id); ok {
		t.Fatalf("stopped %s still registered", pid.Id)
	}
}

// registryResidue registers and removes n process ids one at a time (as runs
// come and go) and returns the heap left behind.
func registryResidue(system *actor.ActorSystem, n int) int64 {
	reg := system.ProcessRegistry
	before := heapAfterGC()
	for i := range n {
		pid, _ := reg.Add(system.DeadLetter, "run-"+strconv.Itoa(i))
		reg.Remove(pid)
	}
	return int64(heapAfterGC()) - int64(before)
}

// TestCompactRegistryLeavesLittle: 20 000 processes that came and went leave
// at most 1 MiB in the compact registry (its 512 maps' groups); protoactor's
// own keeps a group in each of the ~15 000 of its 32 768 maps they hashed to.
func TestCompactRegistryLeavesLittle(t *testing.T) {
	const n = 20000
	plain := actor.NewActorSystem()
	compact := actor.NewActorSystem()
	compactRegistry(compact)
	p := registryResidue(plain, n)
	c := registryResidue(compact, n)
	runtime.KeepAlive(plain) // neither system's maps may be collected inside the other's measure
	runtime.KeepAlive(compact)
	t.Logf("heap left by %d processes: protoactor's registry %d KB, compact %d KB", n, p>>10, c>>10)
	if c > 1<<20 {
		t.Fatalf("compact registry kept %d KB after %d processes came and went, want <= 1024 KB", c>>10, n)
	}
}

// BenchmarkRegistryAddRemove: register, look up and remove a process id,
// from every P at once, in protoactor's registry and the compact one.
func BenchmarkRegistryAddRemove(b *testing.B) {
	for _, compact := range []bool{false, true} {
		name := "protoactor"
		if compact {
			name = "compact"
		}
		b.Run(name, func(b *testing.B) {
			system := actor.NewActorSystem()
			if compact {
				compactRegistry(system)
			}
			reg := system.ProcessRegistry
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					pid, _ := reg.Add(system.DeadLetter, reg.NextId())
					reg.Get(pid)
					reg.Remove(pid)
				}
			})
		})
	}
}
