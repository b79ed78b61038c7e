package k8s

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
	"github.com/qlc-project/qlc/quota"
)

// What the binaries do on SIGTERM after preStop, besides the node's drain
// (cmd/node/main.go, cmd/gateway/main.go): members.Leave(2 * time.Second),
// then a shutdown bounded by a 10 s context.
const (
	leaveBudget    = 2 * time.Second
	shutdownBudget = 10 * time.Second
)

// The named container ports the rules refer to.
const (
	portOps, portActor, portHTTP = "ops", "actor", "http"
	portGossip, portGossipUDP    = "gossip", "gossip-udp"
)

// TestManifests checks every kustomization under deploy/k8s (the base and
// each overlay, with the resources it pulls in) against every rule.
func TestManifests(t *testing.T) {
	bins := qlcBinaries(t)
	dirs := kustomizationDirs(t, ".")
	if len(dirs) < 2 {
		t.Fatalf("kustomizations found: %v; want the base and at least one overlay", dirs)
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			s, err := loadSet(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.workloads()) == 0 {
				t.Fatal("no workload")
			}
			for _, p := range s.check(bins) {
				t.Error(p)
			}
		})
	}
	files, err := yamlFiles(".", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range keyLiterals(files) {
		t.Error(p)
	}
}

// TestChecksCatch breaks the manifests one way at a time (on the decoded
// objects) and expects the check to say so: each rule can fail.
func TestChecksCatch(t *testing.T) {
	bins := qlcBinaries(t)
	node := func(s *set) *corev1.PodSpec { return &s.statefulSet("qlc-node").Spec.Template.Spec }
	gw := func(s *set) *corev1.PodSpec { return &s.statefulSet("qlc-gateway").Spec.Template.Spec }
	setEnv := func(ps *corev1.PodSpec, name, value string) {
		c := &ps.Containers[0]
		for i := range c.Env {
			if c.Env[i].Name == name {
				c.Env[i] = corev1.EnvVar{Name: name, Value: value}
				return
			}
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
	}
	dropEnv := func(ps *corev1.PodSpec, name string) {
		c := &ps.Containers[0]
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	}
	cases := []struct {
		name   string
		dir    string
		break_ func(*set)
		want   string
	}{
		{"no readiness probe", ".", func(s *set) { node(s).Containers[0].ReadinessProbe = nil }, "no readiness probe"},
		{"one gateway", ".", func(s *set) { one := int32(1); s.statefulSet("qlc-gateway").Spec.Replicas = &one }, "fewer than 2 gateway replicas"},
		{"no liveness probe", ".", func(s *set) { gw(s).Containers[0].LivenessProbe = nil }, "no liveness probe"},
		{"probe on the API port", ".", func(s *set) {
			gw(s).Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromString(portHTTP)
		}, "not the ops port"},
		{"probe on a port the container lacks", ".", func(s *set) {
			node(s).Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromInt32(9999)
		}, "no container port 9999"},
		{"ops listener elsewhere", ".", func(s *set) { setEnv(node(s), "QLC_OPS_ADDR", "0.0.0.0:9091") }, "QLC_OPS_ADDR listens on 9091"},
		{"ops listener on loopback", ".", func(s *set) { setEnv(node(s), "QLC_OPS_ADDR", "127.0.0.1:9090") }, "loopback"},
		{"no ops listener", ".", func(s *set) { dropEnv(gw(s), "QLC_OPS_ADDR") }, "no ops listener"},
		{"no preStop", ".", func(s *set) { node(s).Containers[0].Lifecycle = nil }, "no preStop"},
		{"grace below the drain", ".", func(s *set) { node(s).TerminationGracePeriodSeconds = ptr[int64](60) }, "terminationGracePeriodSeconds 60"},
		{"drain longer than the grace", ".", func(s *set) { setEnv(node(s), "QLC_DRAIN_TIMEOUT", "2m") }, "terminationGracePeriodSeconds 90"},
		{"drain by flag longer than the grace", ".", func(s *set) {
			node(s).Containers[0].Args = []string{"-drain-timeout=5m"}
		}, "terminationGracePeriodSeconds 90"},
		{"default drain (1m) with the grace of the gateway", ".", func(s *set) {
			dropEnv(node(s), "QLC_DRAIN_TIMEOUT")
			node(s).TerminationGracePeriodSeconds = ptr[int64](30)
		}, "drain 1m0s"},
		{"cluster key as a literal", ".", func(s *set) {
			setEnv(node(s), "QLC_CLUSTER_KEY", "not-a-real-key-but-literal")
		}, "QLC_CLUSTER_KEY is a literal value"},
		{"no cluster key", ".", func(s *set) { dropEnv(gw(s), "QLC_CLUSTER_KEY") }, "no QLC_CLUSTER_KEY from a Secret"},
		{"admin key from a ConfigMap", ".", func(s *set) {
			c := &gw(s).Containers[0]
			for i := range c.Env {
				if c.Env[i].Name == "QLC_ADMIN_KEY" {
					c.Env[i].ValueFrom = &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "x"}, Key: "k"}}
				}
			}
		}, "QLC_ADMIN_KEY is not from a secretKeyRef"},
		{"a key-shaped literal", ".", func(s *set) {
			setEnv(node(s), "QLC_LOG_LEVEL", "q83vEjRWeJCrze8SNFZ4kKvN7xI0Vm6Bq83vEjRWeJA=")
		}, "reads as a cluster key"},
		{"a Secret with data", ".", func(s *set) {
			s.secrets = append(s.secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "qlc-cluster-key"},
				StringData: map[string]string{"primary": "x"}})
		}, "Secret qlc-cluster-key has data"},
		{"unknown flag", ".", func(s *set) { node(s).Containers[0].Args = []string{"-gossip-port=7946"} }, "-gossip-port: no such flag"},
		{"unknown env var", ".", func(s *set) { setEnv(gw(s), "QLC_GOSSIP_PORT", "7946") }, "QLC_GOSSIP_PORT: the gateway binary does not read it"},
		{"node env on the gateway", ".", func(s *set) { setEnv(gw(s), "QLC_DRAIN_TIMEOUT", "30s") }, "QLC_DRAIN_TIMEOUT: the gateway binary does not read it"},
		{"a command replaces the entrypoint", ".", func(s *set) { node(s).Containers[0].Command = []string{"/bin/sh"} }, "command"},
		{"an image no binary matches", ".", func(s *set) { node(s).Containers[0].Image = "busybox:1" }, "no QLC binary"},
		{"root filesystem writable", ".", func(s *set) {
			node(s).Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr(false)
		}, "readOnlyRootFilesystem"},
		{"may run as root", ".", func(s *set) { gw(s).SecurityContext.RunAsNonRoot = nil }, "runAsNonRoot"},
		{"privilege escalation", ".", func(s *set) {
			gw(s).Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation"},
		{"store on the read-only root", ".", func(s *set) { dropEnv(gw(s), "QLC_DATA_DIR") }, "QLC_DATA_DIR"},
		{"store on an emptyDir", ".", func(s *set) {
			st := s.statefulSet("qlc-gateway")
			st.Spec.VolumeClaimTemplates = nil
			st.Spec.Template.Spec.Volumes = append(st.Spec.Template.Spec.Volumes,
				corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "not on a volumeClaimTemplate"},
		{"trace dir on the read-only root", ".", func(s *set) { setEnv(node(s), "QLC_TRACE_DIR", "/var/qlc") }, "QLC_TRACE_DIR /var/qlc is on the read-only root"},
		{"gossip bind port not a container port", ".", func(s *set) { setEnv(node(s), "QLC_GOSSIP_BIND", "0.0.0.0:7947") }, "QLC_GOSSIP_BIND listens on 7947"},
		{"actor bind on loopback", ".", func(s *set) { setEnv(gw(s), "QLC_BIND", "127.0.0.1:8091") }, "loopback"},
		{"no advertise address", ".", func(s *set) { dropEnv(node(s), "QLC_ADVERTISE") }, "QLC_ADVERTISE"},
		{"gossip advertised on another port", ".", func(s *set) {
			setEnv(node(s), "QLC_GOSSIP_ADVERTISE", "$(POD_IP):7000")
		}, "QLC_GOSSIP_ADVERTISE port 7000"},
		{"seeds not a headless Service", ".", func(s *set) { setEnv(node(s), "QLC_SEEDS", "qlc-gateway:80") }, "not a headless Service"},
		{"seeds: no such Service", ".", func(s *set) { setEnv(node(s), "QLC_SEEDS", "qlc-seeds:7946") }, "no Service qlc-seeds"},
		{"seeds on a wrong port", ".", func(s *set) { setEnv(gw(s), "QLC_SEEDS", "qlc-gossip:7000") }, "has no port 7000"},
		{"no seeds", ".", func(s *set) { dropEnv(node(s), "QLC_SEEDS") }, "no QLC_SEEDS"},
		{"seed Service hides unready pods", ".", func(s *set) { s.service("qlc-gossip").Spec.PublishNotReadyAddresses = false }, "publishNotReadyAddresses"},
		{"seed Service misses the gateways", ".", func(s *set) {
			s.service("qlc-gossip").Spec.Selector = map[string]string{"app.kubernetes.io/component": "node"}
		}, "does not select this workload's pods"},
		{"helper env var nothing uses", ".", func(s *set) { setEnv(node(s), "POD_NAME", "x") }, "POD_NAME: not a QLC variable"},
		{"Service selects nothing", ".", func(s *set) {
			s.service("qlc-gateway").Spec.Selector = map[string]string{"app.kubernetes.io/component": "gw"}
		}, "selects no workload"},
		{"Service targets a missing port", ".", func(s *set) {
			s.service("qlc-gateway").Spec.Ports[0].TargetPort = intstr.FromString("web")
		}, "targetPort web"},
		{"Service port protocol differs", ".", func(s *set) {
			s.service("qlc-gossip").Spec.Ports[1].Protocol = corev1.ProtocolTCP
		}, "targetPort gossip-udp"},
		{"PDB selects nothing", ".", func(s *set) {
			s.pdbs[0].Spec.Selector.MatchLabels["app.kubernetes.io/component"] = "nodes"
		}, "PodDisruptionBudget qlc-node selects no workload"},
		{"workload without PDB", ".", func(s *set) { s.pdbs = s.pdbs[:1] }, "no PodDisruptionBudget"},
		{"workload selector off its pods", ".", func(s *set) {
			s.statefulSet("qlc-node").Spec.Selector.MatchLabels["app.kubernetes.io/component"] = "nodes"
		}, "selector does not match its pod template"},
		{"gossip open to every pod", ".", func(s *set) {
			s.netpol("qlc-cluster").Spec.Ingress[0].From = nil
		}, "open to more than QLC pods"},
		{"actor port from other namespaces", ".", func(s *set) {
			np := s.netpol("qlc-cluster")
			np.Spec.Ingress[0].From[0].NamespaceSelector = &metav1.LabelSelector{}
		}, "open to more than QLC pods"},
		{"actor port not allowed at all", ".", func(s *set) {
			np := s.netpol("qlc-cluster")
			np.Spec.Ingress[0].Ports = np.Spec.Ingress[0].Ports[:2]
		}, "port actor: no NetworkPolicy lets QLC pods in"},
		{"ops open to everyone", ".", func(s *set) { s.netpol("qlc-ops").Spec.Ingress[0].From = nil }, "port ops is open to every source"},
		{"HTTP not reachable", ".", func(s *set) {
			s.netpols = slices.DeleteFunc(s.netpols, func(n *networkingv1.NetworkPolicy) bool { return n.Name == "qlc-gateway-http" })
		}, "port http: no NetworkPolicy lets clients in"},
		{"NetworkPolicy port the pods lack", ".", func(s *set) {
			s.netpol("qlc-gateway-http").Spec.Ingress[0].Ports[0].Port = ptr(intstr.FromString("https"))
		}, "port https"},
		{"HPA on a missing workload", "overlays/example", func(s *set) {
			s.hpas[0].Spec.ScaleTargetRef.Name = "qlc-nodes"
		}, "scales StatefulSet qlc-nodes, not in the set"},
		{"HPA on a metric QLC does not export", "overlays/example", func(s *set) {
			s.hpas[0].Spec.Metrics[0].Pods.Metric.Name = "qlc_runs_in_flight"
		}, "qlc_runs_in_flight: QLC exports no such metric"},
		{"image override for no image", "overlays/example", func(s *set) {
			s.kusts[len(s.kusts)-1].Images[0].Name = "qlc-nod"
		}, "image qlc-nod: no container uses it"},
		// The quota group (issue 17): one pod per member id, its log on a
		// volume of its own, never two members down by design.
		{"quota group on 2 replicas", ".", func(s *set) { s.statefulSet("qlc-node").Spec.Replicas = ptr[int32](2) }, "quota group member 3: on 0 pods"},
		{"quota group on 2 replicas by the overlay", "overlays/example", func(s *set) {
			k := s.kusts[len(s.kusts)-1]
			k.Replicas = append(k.Replicas, struct {
				Name  string `json:"name"`
				Count int64  `json:"count"`
			}{"qlc-node", 2})
		}, "replicas 2: the quota group needs 3"},
		{"one literal id on every pod", ".", func(s *set) { setEnv(node(s), "QLC_LIMITER_ID", "1") }, "quota group member 1: on 3 pods"},
		{"an id outside the group", ".", func(s *set) { setEnv(node(s), "QLC_LIMITER_ID", "first") }, `member id "first": want 0`},
		{"ordinals from 1", ".", func(s *set) {
			s.statefulSet("qlc-node").Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 1}
		}, "quota group member 1: on 0 pods"},
		{"one host name for every pod", ".", func(s *set) { node(s).Hostname = "qlc-node" }, `host name "qlc-node" does not end in -N`},
		{"ordinal on a Deployment", ".", func(s *set) {
			st := s.statefulSet("qlc-node")
			s.deployments = append(s.deployments, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "qlc-node-more"},
				Spec: appsv1.DeploymentSpec{Selector: st.Spec.Selector, Template: st.Spec.Template}})
		}, "Deployment qlc-node-more: QLC_LIMITER_ID=ordinal: a Deployment's pods have no ordinal"},
		{"a literal id on a Deployment", ".", func(s *set) {
			st := s.statefulSet("qlc-node")
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "qlc-node-one"},
				Spec: appsv1.DeploymentSpec{Replicas: ptr[int32](1), Selector: st.Spec.Selector, Template: *st.Spec.Template.DeepCopy()}}
			setEnv(&d.Spec.Template.Spec, "QLC_LIMITER_ID", "3")
			s.deployments = append(s.deployments, d)
		}, "QLC_LIMITER_ID=3 on a Deployment: its pods may run side by side"},
		{"no limiter dir", ".", func(s *set) { dropEnv(node(s), "QLC_LIMITER_DIR") }, "QLC_LIMITER_ID without QLC_LIMITER_DIR"},
		{"limiter dir on the read-only root", ".", func(s *set) { setEnv(node(s), "QLC_LIMITER_DIR", "/var/qlc/quota") }, "QLC_LIMITER_DIR /var/qlc/quota is on the read-only root"},
		{"limiter dir on an emptyDir", ".", func(s *set) { setEnv(node(s), "QLC_LIMITER_DIR", "/tmp/quota") }, "QLC_LIMITER_DIR /tmp/quota is on volume tmp, not on a volumeClaimTemplate"},
		{"limiter dir by flag on an emptyDir", ".", func(s *set) {
			node(s).Containers[0].Args = []string{"-limiter-dir", "/tmp/q"}
		}, "QLC_LIMITER_DIR /tmp/q is on volume tmp"},
		{"log deleted on scale-down", ".", func(s *set) {
			s.statefulSet("qlc-node").Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
		}, "whenScaled Delete"},
		{"volume not writable by the node", ".", func(s *set) { node(s).SecurityContext.FSGroup = nil }, "without a pod securityContext.fsGroup"},
		{"no time to rejoin in a rolling update", ".", func(s *set) { s.statefulSet("qlc-node").Spec.MinReadySeconds = 0 }, "minReadySeconds 0"},
		{"two members down by a drain", ".", func(s *set) {
			s.pdbs[0].Spec.MaxUnavailable = ptr(intstr.FromInt32(2))
		}, "want maxUnavailable: 1 (two of its three members up through every drain), not maxUnavailable 2"},
		{"a percentage budget", ".", func(s *set) {
			s.pdbs[0].Spec.MaxUnavailable = ptr(intstr.FromString("50%"))
		}, "not maxUnavailable 50%"},
		{"HPA below the group", "overlays/example", func(s *set) { s.hpas[0].Spec.MinReplicas = ptr[int32](2) }, "minReplicas 2: StatefulSet qlc-node runs the quota group"},
		{"StatefulSet governed by no Service", ".", func(s *set) { s.statefulSet("qlc-node").Spec.ServiceName = "qlc-nodes" }, `serviceName "qlc-nodes" is no Service`},
		{"StatefulSet governed by a Service with a virtual IP", ".", func(s *set) {
			s.statefulSet("qlc-gateway").Spec.ServiceName = "qlc-gateway"
		}, "serviceName qlc-gateway is not headless"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := loadSet(c.dir)
			if err != nil {
				t.Fatal(err)
			}
			if ps := s.check(bins); len(ps) != 0 {
				t.Fatalf("the manifests fail before breaking them: %v", ps)
			}
			c.break_(s)
			ps := s.check(bins)
			for _, p := range ps {
				if strings.Contains(p, c.want) {
					t.Logf("caught: %s", p)
					return
				}
			}
			t.Errorf("no problem mentions %q; problems: %q", c.want, ps)
		})
	}
}

// TestQuotaGroupMembers: in every kustomization the node StatefulSet's
// pods qlc-node-0, -1 and -2 are the quota group's members 1, 2 and 3, as
// the node decides it (quota.MemberID on each pod's host name), and three
// more replicas are plain nodes that leave the group as it is.
func TestQuotaGroupMembers(t *testing.T) {
	bins := qlcBinaries(t)
	for _, dir := range kustomizationDirs(t, ".") {
		s, err := loadSet(dir)
		if err != nil {
			t.Fatal(err)
		}
		st := s.statefulSet("qlc-node")
		w := workload{kind: "StatefulSet", name: st.Name}
		ids := func() []uint64 {
			setting, _ := limiterSettings(&st.Spec.Template.Spec.Containers[0])
			var out []uint64
			for i := range s.replicas(w) {
				id, err := quota.MemberID(setting, podHostname(st, i), nil)
				if err != nil {
					t.Fatalf("%s: pod %d: %v", dir, i, err)
				}
				out = append(out, id)
			}
			return out
		}
		if got := ids(); !slices.Equal(got[:3], []uint64{1, 2, 3}) || slices.ContainsFunc(got[3:], func(id uint64) bool { return id != 0 }) {
			t.Errorf("%s: member ids of qlc-node's pods %v, want 1, 2, 3 then plain nodes (0)", dir, got)
		}
		st.Spec.Replicas = ptr(*st.Spec.Replicas + 3)
		for _, k := range s.kusts {
			for i := range k.Replicas {
				if k.Replicas[i].Name == st.Name {
					k.Replicas[i].Count += 3
				}
			}
		}
		got := ids()
		if !slices.Equal(got, append([]uint64{1, 2, 3}, make([]uint64, len(got)-3)...)) {
			t.Errorf("%s: scaled up by 3: member ids %v, want 1, 2, 3 then plain nodes (0)", dir, got)
		}
		if ps := s.check(bins); len(ps) != 0 {
			t.Errorf("%s: scaled up by 3: %q", dir, ps)
		}
		t.Logf("%s: %d replicas: member ids by ordinal %v", dir, len(got), got)
	}
}

// TestQuotaGroupOff: deleting QLC_LIMITER_ID (docs/kubernetes.md, "Without
// the group") leaves manifests that pass every rule, even at one replica.
func TestQuotaGroupOff(t *testing.T) {
	bins := qlcBinaries(t)
	s, err := loadSet(".")
	if err != nil {
		t.Fatal(err)
	}
	st := s.statefulSet("qlc-node")
	c := &st.Spec.Template.Spec.Containers[0]
	n := len(c.Env)
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "QLC_LIMITER_ID" })
	if len(c.Env) != n-1 {
		t.Fatalf("qlc-node sets QLC_LIMITER_ID %d times, want once", n-len(c.Env))
	}
	st.Spec.Replicas = ptr[int32](1)
	if ps := s.check(bins); len(ps) != 0 {
		t.Errorf("without QLC_LIMITER_ID: %q", ps)
	}
	if ps := s.checkQuotaGroup(); len(ps) != 0 {
		t.Errorf("the quota rules apply without the group: %q", ps)
	}
}

// TestKustomizeBuild: each kustomization builds with kustomize itself
// (kubectl kustomize, or kustomize build; local files only, no network) and
// what it renders passes every rule, with the overlays' replicas, images and
// namespace applied. Where neither tool is installed the test is skipped:
// TestManifests reads the same kustomizations by itself.
func TestKustomizeBuild(t *testing.T) {
	var tool []string
	if p, err := exec.LookPath("kustomize"); err == nil {
		tool = []string{p, "build"}
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		tool = []string{p, "kustomize"}
	} else {
		t.Skip("neither kustomize nor kubectl is installed; TestManifests parses the kustomizations itself")
	}
	bins := qlcBinaries(t)
	for _, dir := range kustomizationDirs(t, ".") {
		t.Run(dir, func(t *testing.T) {
			cmd := exec.Command(tool[0], append(tool[1:], dir)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", strings.Join(tool, " "), dir, err, stderr.String())
			}
			objs, err := decodeFile(dir+" as built", out)
			if err != nil {
				t.Fatal(err)
			}
			built := &set{}
			built.add(objs)
			for _, p := range built.check(bins) {
				t.Error(p)
			}
			parsed, err := loadSet(dir)
			if err != nil {
				t.Fatal(err)
			}
			// The test's reading of the kustomization agrees with kustomize's:
			// the same workloads, with the same replicas.
			for _, w := range parsed.workloads() {
				i := slices.IndexFunc(built.workloads(), func(b workload) bool { return b.kind == w.kind && b.name == w.name })
				if i < 0 {
					t.Errorf("%s is not in what kustomize built", w)
					continue
				}
				if p, b := parsed.replicas(w), built.replicas(built.workloads()[i]); p != b {
					t.Errorf("%s: %d replicas as the test reads the kustomization, %d as kustomize builds it", w, p, b)
				}
			}
			if a, b := len(parsed.workloads()), len(built.workloads()); a != b {
				t.Errorf("%d workloads read, %d built", a, b)
			}
		})
	}
}

// TestStrictDecoding: a field the API types lack, anywhere, is an error;
// so are a kind the test does not know and a duplicated field.
func TestStrictDecoding(t *testing.T) {
	good := `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: qlc-node:dev
          readinessProbe: {httpGet: {path: /readyz, port: ops}}
`
	if _, err := decodeFile("x.yaml", []byte(good)); err != nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for name, doc := range map[string]string{
		"top-level typo":  strings.Replace(good, "spec:\n  selector", "spec:\n  replicaz: 3\n  selector", 1),
		"nested typo":     strings.Replace(good, "port: ops", "prot: ops", 1),
		"wrong type":      strings.Replace(good, "name: c", "name: [c]", 1),
		"duplicate field": strings.Replace(good, "image: qlc-node:dev", "image: qlc-node:dev\n          image: qlc-gateway:dev", 1),
		"unknown kind":    strings.Replace(good, "kind: Deployment", "kind: DaemonSet", 1),
		"no kind":         strings.Replace(good, "kind: Deployment\n", "", 1),
	} {
		if _, err := decodeFile("x.yaml", []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\nresorces: [b.yaml]\n"
	if err := yaml.UnmarshalStrict([]byte(k), &kustomization{}); err == nil {
		t.Error("a kustomization with an unknown field decoded without error")
	}
}

// TestKustomizationListsEveryFile: a manifest that kustomize would not
// apply, and a listed file that is not there, are both errors.
func TestKustomizationListsEveryFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {a: b}, ports: [{port: 80}]}\n"
	write("kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [svc.yaml, gone.yaml]\n")
	write("svc.yaml", svc)
	write("stray.yaml", svc)
	_, err := loadSet(dir)
	if err == nil || !strings.Contains(err.Error(), "gone.yaml") || !strings.Contains(err.Error(), "stray.yaml is not listed") {
		t.Fatalf("loadSet = %v; want errors for gone.yaml and stray.yaml", err)
	}
	write("kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [svc.yaml, stray.yaml]\n")
	if _, err := loadSet(dir); err != nil {
		t.Fatalf("every file listed: %v", err)
	}
}

// TestKeyLiterals: the scan finds a key however it is spelled in a file.
func TestKeyLiterals(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"env.yaml":    "env:\n  - name: QLC_CLUSTER_KEY\n    value: \"q83vEjRWeJCrze8SNFZ4kKvN7xI0Vm6Bq83vEjRWeJA=\"\n",
		"secret.yaml": "data:\n  primary: cTgzdkVqUldlSkNyemU4U05GWjRrS3ZON3hJMFZtNkJxODN2RWpSV2VKQT0=\n",
		"hex.yaml":    "args: [\"--key=abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"]\n",
		"clean.yaml":  "value: $(POD_IP):7946\nimage: qlc-node:dev\nreadOnlyRootFilesystem: true\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := yamlFiles(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(keyLiterals(files), "\n")
	for _, f := range []string{"env.yaml", "secret.yaml", "hex.yaml"} {
		if !strings.Contains(got, f) {
			t.Errorf("no key found in %s; problems:\n%s", f, got)
		}
	}
	if strings.Contains(got, "clean.yaml") {
		t.Errorf("a key found in clean.yaml:\n%s", got)
	}
}

// ---- decoding ----

// kustomization is the part of kustomize's Kustomization these manifests
// use; strict decoding refuses any other field (extend this type with it).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Patches    []struct {
		Path   string            `json:"path,omitempty"`
		Patch  string            `json:"patch,omitempty"`
		Target map[string]string `json:"target,omitempty"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Replicas []struct {
		Name  string `json:"name"`
		Count int64  `json:"count"`
	} `json:"replicas,omitempty"`

	dir string
}

// set is what one kustomization applies: its resources and those of the
// kustomizations it includes.
type set struct {
	kusts        []*kustomization // included ones first, this one last
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	netpols      []*networkingv1.NetworkPolicy
	secrets      []*corev1.Secret
	configMaps   []*corev1.ConfigMap
}

func (s *set) deployment(name string) *appsv1.Deployment {
	for _, d := range s.deployments {
		if d.Name == name {
			return d
		}
	}
	panic("no Deployment " + name)
}

func (s *set) statefulSet(name string) *appsv1.StatefulSet {
	for _, d := range s.statefulSets {
		if d.Name == name {
			return d
		}
	}
	panic("no StatefulSet " + name)
}

func (s *set) service(name string) *corev1.Service {
	for _, d := range s.services {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (s *set) netpol(name string) *networkingv1.NetworkPolicy {
	for _, d := range s.netpols {
		if d.Name == name {
			return d
		}
	}
	panic("no NetworkPolicy " + name)
}

// loadSet reads the kustomization in dir and everything it lists, strictly;
// a directory resource is another kustomization, read the same way.
func loadSet(dir string) (*set, error) {
	s := &set{}
	return s, s.load(dir)
}

func (s *set) load(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return err
	}
	k := &kustomization{dir: dir}
	if err := yaml.UnmarshalStrict(b, k); err != nil {
		return fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return fmt.Errorf("%s/kustomization.yaml: apiVersion %q kind %q", dir, k.APIVersion, k.Kind)
	}
	var errs []string
	listed := map[string]bool{}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("%s/kustomization.yaml lists %s: %v", dir, r, err))
		case fi.IsDir():
			if err := s.load(p); err != nil {
				errs = append(errs, err.Error())
			}
		default:
			listed[filepath.Clean(p)] = true
			if err := s.addFile(p); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	for _, pt := range k.Patches {
		if pt.Path == "" {
			continue
		}
		p := filepath.Join(dir, pt.Path)
		listed[filepath.Clean(p)] = true
		b, err := os.ReadFile(p)
		if err == nil {
			_, err = decodeFile(p, b) // a patch is a partial object: decoded, not checked
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s/kustomization.yaml patch: %v", dir, err))
		}
	}
	files, err := yamlFiles(dir, false)
	if err != nil {
		return err
	}
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" && !listed[filepath.Clean(f)] {
			errs = append(errs, fmt.Sprintf("%s is not listed in %s/kustomization.yaml (kustomize would not apply it)", f, dir))
		}
	}
	s.kusts = append(s.kusts, k)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func (s *set) addFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	objs, err := decodeFile(path, b)
	if err != nil {
		return err
	}
	s.add(objs)
	return nil
}

// add sorts decoded objects into the set.
func (s *set) add(objs []any) {
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			s.deployments = append(s.deployments, o)
		case *appsv1.StatefulSet:
			s.statefulSets = append(s.statefulSets, o)
		case *corev1.Service:
			s.services = append(s.services, o)
		case *policyv1.PodDisruptionBudget:
			s.pdbs = append(s.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			s.hpas = append(s.hpas, o)
		case *networkingv1.NetworkPolicy:
			s.netpols = append(s.netpols, o)
		case *corev1.Secret:
			s.secrets = append(s.secrets, o)
		case *corev1.ConfigMap:
			s.configMaps = append(s.configMaps, o)
		}
	}
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeFile decodes each YAML document of a file strictly into its API
// type: unknown or duplicated fields, and kinds the test does not know, are
// errors.
func decodeFile(path string, b []byte) ([]any, error) {
	var out []any
	for i, doc := range docSep.Split(string(b), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("%s, document %d: %w", path, i+1, err)
		}
		if tm == (metav1.TypeMeta{}) && strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var o any
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			o = &appsv1.Deployment{}
		case "apps/v1/StatefulSet":
			o = &appsv1.StatefulSet{}
		case "v1/Service":
			o = &corev1.Service{}
		case "v1/Secret":
			o = &corev1.Secret{}
		case "v1/ConfigMap":
			o = &corev1.ConfigMap{}
		case "policy/v1/PodDisruptionBudget":
			o = &policyv1.PodDisruptionBudget{}
		case "autoscaling/v2/HorizontalPodAutoscaler":
			o = &autoscalingv2.HorizontalPodAutoscaler{}
		case "networking.k8s.io/v1/NetworkPolicy":
			o = &networkingv1.NetworkPolicy{}
		default:
			return nil, fmt.Errorf("%s, document %d: apiVersion %q kind %q: not a type this test decodes (add it to decodeFile)", path, i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
			return nil, fmt.Errorf("%s, document %d (%s): %w", path, i+1, tm.Kind, err)
		}
		out = append(out, o)
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// yamlFiles lists the .yaml and .yml files in dir (and below, if deep).
func yamlFiles(dir string, deep bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && !deep {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// kustomizationDirs lists the directories under root that hold a
// kustomization.yaml; a directory with manifests but none is an error.
func kustomizationDirs(t *testing.T, root string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		files, err := yamlFiles(p, false)
		if err != nil || len(files) == 0 {
			return err
		}
		if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
			t.Errorf("%s has manifests but no kustomization.yaml", p)
			return nil
		}
		dirs = append(dirs, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// ---- the binaries ----

// binary is what a QLC command accepts, read from the built binary's -help
// and from its sources (the variables read without a flag, e.g. the keys).
type binary struct {
	name  string
	flags map[string]flagInfo
	env   map[string]bool
}

type flagInfo struct {
	def       string // the default -help shows; "" if none
	takesArgs bool   // not a boolean flag
}

var (
	binsOnce sync.Once
	bins     map[string]*binary
	binsErr  error
)

// qlcBinaries builds cmd/node and cmd/gateway (as the Dockerfile does:
// CGO_ENABLED=0) and reads what they accept. Built once per test process.
func qlcBinaries(t *testing.T) map[string]*binary {
	t.Helper()
	binsOnce.Do(func() { bins, binsErr = buildBinaries() })
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}

func buildBinaries() (map[string]*binary, error) {
	dir, err := os.MkdirTemp("", "qlc-k8s-bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/node", "./cmd/gateway")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	out := map[string]*binary{}
	for _, name := range []string{"node", "gateway"} {
		help := exec.Command(filepath.Join(dir, name), "-h")
		help.Env = []string{"HOME=" + dir} // no QLC_* from the caller: the defaults as shipped
		text, _ := help.CombinedOutput()   // -h exits non-zero
		b, err := parseHelp(name, string(text))
		if err != nil {
			return nil, err
		}
		srcEnv, err := sourceEnv(filepath.Join(root, "cmd", name), filepath.Join(root, "cmd", "internal", "cli"))
		if err != nil {
			return nil, err
		}
		for v := range srcEnv {
			b.env[v] = true
		}
		out[name] = b
	}
	return out, nil
}

var (
	flagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)( \S+)?$`)
	envInUse = regexp.MustCompile(`\((QLC_[A-Z0-9_]+)\)`)
	defaultV = regexp.MustCompile(`\(default ([^()]*)\)\s*$`)
	envInSrc = regexp.MustCompile(`"(QLC_[A-Z0-9_]+)"`)
)

// parseHelp reads Go's flag.PrintDefaults output: "  -name type" then the
// usage on lines starting with a tab, ending in "(default X)" if any.
func parseHelp(name, text string) (*binary, error) {
	b := &binary{name: name, flags: map[string]flagInfo{}, env: map[string]bool{}}
	var cur string
	var usage strings.Builder
	flush := func() {
		if cur == "" {
			return
		}
		fi := b.flags[cur]
		if m := defaultV.FindStringSubmatch(strings.TrimSpace(usage.String())); m != nil {
			fi.def = strings.Trim(m[1], `"`)
		}
		b.flags[cur] = fi
		usage.Reset()
	}
	for _, l := range strings.Split(text, "\n") {
		if m := flagLine.FindStringSubmatch(l); m != nil {
			flush()
			cur = m[1]
			b.flags[cur] = flagInfo{takesArgs: m[2] != ""}
			continue
		}
		if cur != "" && strings.HasPrefix(l, "    \t") {
			usage.WriteString(" " + strings.TrimSpace(l))
		}
		for _, m := range envInUse.FindAllStringSubmatch(l, -1) {
			b.env[m[1]] = true
		}
	}
	flush()
	if len(b.flags) < 10 || b.flags["seeds"] == (flagInfo{}) {
		return nil, fmt.Errorf("%s -h: could not read its flags from:\n%s", name, text)
	}
	return b, nil
}

// sourceEnv lists the QLC_* names quoted in the non-test Go files of dirs.
func sourceEnv(dirs ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(d, "*.go"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			for _, m := range envInSrc.FindAllSubmatch(b, -1) {
				out[string(m[1])] = true
			}
		}
	}
	return out, nil
}

// exportedMetrics lists the metric names the actor engine registers (every
// QLC process has them; vectors included, whether or not they have series).
func exportedMetrics() map[string]bool {
	rec := &recorder{}
	actors.NewMetrics(rec)
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range rec.cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fq.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
	}
	return names
}

// recorder is a prometheus.Registerer that keeps what is registered.
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return true }

// ---- the rules ----

type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
	claims     []corev1.PersistentVolumeClaim
}

func (w workload) String() string { return w.kind + " " + w.name }

func (s *set) workloads() []workload {
	var out []workload
	for _, d := range s.deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Selector, &d.Spec.Template, nil})
	}
	for _, d := range s.statefulSets {
		out = append(out, workload{"StatefulSet", d.Name, d.Spec.Selector, &d.Spec.Template, d.Spec.VolumeClaimTemplates})
	}
	return out
}

// selected returns the workloads whose pods sel matches (a nil or empty
// selector matches none here: every selector of these manifests names labels).
func (s *set) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range s.workloads() {
		if sel != nil && !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func asSelector(ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil
	}
	return sel
}

// check returns every rule the set breaks, one line each.
func (s *set) check(bins map[string]*binary) []string {
	var ps []string
	add := func(format string, a ...any) { ps = append(ps, fmt.Sprintf(format, a...)) }
	for _, sec := range s.secrets {
		if len(sec.Data) > 0 || len(sec.StringData) > 0 {
			add("Secret %s has data: secrets are created by hand (docs/kubernetes.md), never kept in the repository", sec.Name)
		}
	}
	for _, w := range s.workloads() {
		for _, p := range s.checkWorkload(w, bins) {
			add("%s: %s", w, p)
		}
	}
	for _, st := range s.statefulSets {
		// Several gateways behind the Service (issue 18): any serves any
		// run, so one pod's restart is not an outage of the API.
		if st.Spec.Template.Labels["app.kubernetes.io/component"] == "gateway" && (st.Spec.Replicas == nil || *st.Spec.Replicas < 2) {
			add("StatefulSet %s: fewer than 2 gateway replicas behind the Service", st.Name)
		}
	}
	ps = append(ps, s.checkServices()...)
	ps = append(ps, s.checkPDBs()...)
	ps = append(ps, s.checkNetworkPolicies()...)
	ps = append(ps, s.checkHPAs()...)
	ps = append(ps, s.checkKustomizations()...)
	ps = append(ps, s.checkStatefulSets()...)
	ps = append(ps, s.checkQuotaGroup()...)
	return ps
}

func (s *set) checkWorkload(w workload, bins map[string]*binary) []string {
	var ps []string
	add := func(format string, a ...any) { ps = append(ps, fmt.Sprintf(format, a...)) }
	if sel := asSelector(w.selector); sel == nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
		add("selector does not match its pod template's labels")
	}
	spec := &w.pod.Spec
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		add("pod securityContext.runAsNonRoot is not true")
	} else if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		add("pod securityContext.runAsUser is 0")
	}
	if len(spec.Containers) == 0 {
		add("no container")
	}
	// A fresh volume is root's: a non-root process writes to it only if
	// the kubelet gives it the pod's fsGroup.
	if len(w.claims) > 0 && (spec.SecurityContext == nil || spec.SecurityContext.FSGroup == nil) {
		add("volumeClaimTemplates without a pod securityContext.fsGroup: a non-root process could not write to its volume")
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, p := range s.checkContainer(w, c, bins) {
			add("container %s: %s", c.Name, p)
		}
	}
	return ps
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (s *set) checkContainer(w workload, c *corev1.Container, bins map[string]*binary) []string {
	var ps []string
	add := func(format string, a ...any) { ps = append(ps, fmt.Sprintf(format, a...)) }
	spec := &w.pod.Spec

	// Security.
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		add("securityContext.readOnlyRootFilesystem is not true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("securityContext.allowPrivilegeEscalation is not false")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		add("securityContext.capabilities.drop lacks ALL")
	}
	if sc != nil && sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		add("securityContext.runAsNonRoot is false")
	}

	// Which binary: the image as the Dockerfile and `make images` name it.
	bin := bins[binaryOf(c.Image)]
	if bin == nil {
		add("image %q: no QLC binary (want qlc-node or qlc-gateway)", c.Image)
		return ps
	}
	if len(c.Command) > 0 {
		add("command %q replaces the image's entrypoint /qlc (SIGTERM must reach the binary as PID 1)", c.Command)
	}

	// Flags and environment: each one must exist in the binary.
	args := map[string]string{}
	for i := 0; i < len(c.Args); i++ {
		a := c.Args[i]
		if !strings.HasPrefix(a, "-") {
			add("argument %q: not a flag", a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fi, ok := bin.flags[name]
		if !ok {
			add("-%s: no such flag in the %s binary", name, bin.name)
			continue
		}
		if !hasVal && fi.takesArgs {
			if i+1 < len(c.Args) {
				i++
				val = c.Args[i]
			} else {
				add("-%s: no value", name)
			}
		}
		args[name] = val
	}
	env := map[string]corev1.EnvVar{}
	refs := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = e
		for _, m := range envRef.FindAllStringSubmatch(e.Value, -1) {
			refs[m[1]] = true
		}
	}
	for _, e := range c.Env {
		switch {
		case strings.HasPrefix(e.Name, "QLC_"):
			if !bin.env[e.Name] {
				add("%s: the %s binary does not read it", e.Name, bin.name)
			}
		case goRuntimeEnv[e.Name]:
		case refs[e.Name]:
			// POD_IP and the like: used in another variable's $(…).
		default:
			add("%s: not a QLC variable, nor used by one", e.Name)
		}
		if secretish.MatchString(e.Name) {
			switch {
			case e.Value != "":
				add("%s is a literal value: take it from a Secret (secretKeyRef)", e.Name)
			case e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
				add("%s is not from a secretKeyRef", e.Name)
			}
		}
		if _, err := cluster.ParseKey(e.Value); e.Value != "" && err == nil {
			add("%s: its value reads as a cluster key", e.Name)
		}
	}
	if e, ok := env["QLC_CLUSTER_KEY"]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		if _, file := env["QLC_CLUSTER_KEY_FILE"]; !file {
			add("no QLC_CLUSTER_KEY from a Secret")
		}
	}
	// setting returns what the binary sees for a flag: the argument, else
	// the environment variable, else the default in -help; set says whether
	// the manifest gives it.
	setting := func(flag, envName string) (v string, set bool) {
		if v, ok := args[flag]; ok {
			return v, true
		}
		if e, ok := env[envName]; ok && e.ValueFrom == nil {
			return e.Value, true
		}
		return bin.flags[flag].def, false
	}

	// Listeners: each on the container port of its name, reachable from
	// other pods (not loopback).
	listen := func(flag, envName, portName string, protos ...corev1.Protocol) (int32, bool) {
		v, _ := setting(flag, envName)
		if v == "" || v == "none" {
			return 0, false
		}
		host, p, err := net.SplitHostPort(v)
		if err != nil {
			add("%s=%q: %v", envName, v, err)
			return 0, true
		}
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			add("%s=%q is loopback: other pods and the kubelet cannot reach it", envName, v)
		}
		n, _ := strconv.Atoi(p)
		if len(protos) == 0 {
			protos = []corev1.Protocol{corev1.ProtocolTCP}
		}
		for i, proto := range protos {
			name := portName
			if i > 0 {
				name = portName + "-" + strings.ToLower(string(proto))
			}
			cp := containerPort(c, intstr.FromString(name), proto)
			if cp == nil || cp.ContainerPort != int32(n) {
				add("%s listens on %d, but container port %s (%s) is %v", envName, n, name, proto, portNumber(cp))
			}
		}
		return int32(n), true
	}
	opsPort, hasOps := listen("ops-addr", "QLC_OPS_ADDR", portOps)
	if !hasOps {
		add("no ops listener (QLC_OPS_ADDR): the probes and Prometheus need /healthz, /readyz and /metrics")
	}
	listen("bind", "QLC_BIND", portActor)
	gossipPort, _ := listen("gossip-bind", "QLC_GOSSIP_BIND", portGossip, corev1.ProtocolTCP, corev1.ProtocolUDP)
	if bin.name == "gateway" {
		if _, ok := listen("addr", "QLC_ADDR", portHTTP); !ok {
			add("no API listener (QLC_ADDR)")
		}
	}
	// Advertised addresses: set, since 0.0.0.0 is no address to reach.
	if v, _ := setting("advertise", "QLC_ADVERTISE"); v == "" {
		add("QLC_ADVERTISE is not set: the actor address would be the bind host 0.0.0.0 (use $(POD_IP))")
	}
	if v, _ := setting("gossip-advertise", "QLC_GOSSIP_ADVERTISE"); v == "" {
		add("QLC_GOSSIP_ADVERTISE is not set (use $(POD_IP):<gossip port>)")
	} else if _, p, err := net.SplitHostPort(v); err != nil || p != strconv.Itoa(int(gossipPort)) {
		add("QLC_GOSSIP_ADVERTISE port %s is not the gossip bind port %d", p, gossipPort)
	}

	// Seeds: a headless Service that publishes unready pods and selects
	// this workload's pods, on its gossip port.
	if v, _ := setting("seeds", "QLC_SEEDS"); v == "" {
		add("no QLC_SEEDS: it would start a cluster of its own")
	} else {
		for _, seed := range strings.Split(v, ",") {
			for _, p := range s.checkSeed(w, strings.TrimSpace(seed)) {
				add("seed %s: %s", seed, p)
			}
		}
	}

	// Probes on the ops port.
	probes := []struct {
		what, path string
		p          *corev1.Probe
	}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}}
	for _, pr := range probes {
		switch {
		case pr.p == nil:
			add("no %s probe", pr.what)
		case pr.p.HTTPGet == nil:
			add("%s probe is not an httpGet on the ops port", pr.what)
		default:
			cp := containerPort(c, pr.p.HTTPGet.Port, corev1.ProtocolTCP)
			switch {
			case cp == nil:
				add("%s probe: no container port %s", pr.what, pr.p.HTTPGet.Port.String())
			case !hasOps || cp.ContainerPort != opsPort:
				add("%s probe on port %s (%d), not the ops port (QLC_OPS_ADDR, %d)", pr.what, pr.p.HTTPGet.Port.String(), cp.ContainerPort, opsPort)
			}
			if pr.p.HTTPGet.Path != pr.path {
				add("%s probe path %q, want %s", pr.what, pr.p.HTTPGet.Path, pr.path)
			}
		}
	}

	// Shutdown: preStop, then SIGTERM; the grace period covers preStop,
	// the leave, the node's drain and the stop.
	var preStop time.Duration
	switch {
	case c.Lifecycle == nil || c.Lifecycle.PreStop == nil:
		add("no preStop hook")
	case c.Lifecycle.PreStop.Sleep != nil:
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	case c.Lifecycle.PreStop.Exec != nil:
		add("preStop exec: the image is FROM scratch, it has no shell nor sleep (use preStop.sleep)")
	}
	need := preStop + leaveBudget + shutdownBudget
	what := fmt.Sprintf("preStop %v + leave %v + stop %v", preStop, leaveBudget, shutdownBudget)
	if _, ok := bin.flags["drain-timeout"]; ok {
		v, _ := setting("drain-timeout", "QLC_DRAIN_TIMEOUT")
		d, err := time.ParseDuration(v)
		if err != nil {
			add("drain timeout %q: %v", v, err)
		}
		need += d
		what = fmt.Sprintf("preStop %v + leave %v + drain %v + stop %v", preStop, leaveBudget, d, shutdownBudget)
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil {
		add("terminationGracePeriodSeconds unset (30 s) is not above %s", what)
	} else if time.Duration(*g)*time.Second <= need {
		add("terminationGracePeriodSeconds %d is not above %s = %v", *g, what, need)
	}

	// Writable paths: the root is read-only, so each must be on a volume;
	// the gateway's store on a volume of its own (a volumeClaimTemplate).
	for _, pv := range []struct{ flag, env string }{{"data-dir", "QLC_DATA_DIR"}, {"trace-dir", "QLC_TRACE_DIR"}} {
		if _, ok := bin.flags[pv.flag]; !ok {
			continue
		}
		v, set := setting(pv.flag, pv.env)
		m := mountOf(c, v)
		switch {
		case pv.env == "QLC_DATA_DIR" && !set:
			add("QLC_DATA_DIR unset: the store would go to %q on the read-only root", v)
		case m == nil && pv.env == "QLC_DATA_DIR":
			add("QLC_DATA_DIR %s is on the read-only root: mount the store's volume there", v)
		case m == nil && set:
			add("%s %s is on the read-only root: mount a volume there", pv.env, v)
		case m != nil && pv.env == "QLC_DATA_DIR" && !slices.ContainsFunc(w.claims, func(pvc corev1.PersistentVolumeClaim) bool { return pvc.Name == m.Name }):
			add("QLC_DATA_DIR %s is on volume %s, not on a volumeClaimTemplate: each gateway needs its store to survive restarts", v, m.Name)
		}
	}
	return ps
}

// checkSeed checks one "host:port" seed against the Services of the set.
func (s *set) checkSeed(w workload, seed string) []string {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		return []string{err.Error()}
	}
	name, _, _ := strings.Cut(host, ".")
	svc := s.service(name)
	if svc == nil {
		return []string{fmt.Sprintf("no Service %s in the set", name)}
	}
	var ps []string
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		ps = append(ps, fmt.Sprintf("Service %s is not a headless Service (clusterIP: None): a virtual IP hides the members", name))
	}
	if !svc.Spec.PublishNotReadyAddresses {
		ps = append(ps, fmt.Sprintf("Service %s: publishNotReadyAddresses is false: starting pods could not find each other", name))
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	if sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
		ps = append(ps, fmt.Sprintf("Service %s does not select this workload's pods: they are not seeds to the others", name))
	}
	n, _ := strconv.Atoi(port)
	var tcp, udp bool
	for _, sp := range svc.Spec.Ports {
		if sp.Port != int32(n) {
			continue
		}
		cp := containerPort(&w.pod.Spec.Containers[0], sp.TargetPort, sp.Protocol)
		switch {
		case cp == nil:
		case sp.Protocol == corev1.ProtocolUDP:
			udp = cp.Name == portGossipUDP
		default:
			tcp = cp.Name == portGossip
		}
	}
	if !tcp || !udp {
		ps = append(ps, fmt.Sprintf("Service %s has no port %d to the gossip ports (TCP %s and UDP %s)", name, n, portGossip, portGossipUDP))
	}
	return ps
}

func (s *set) checkServices() []string {
	var ps []string
	for _, svc := range s.services {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		ws := s.selected(sel)
		if len(ws) == 0 {
			ps = append(ps, fmt.Sprintf("Service %s selects no workload's pods", svc.Name))
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone && !svc.Spec.PublishNotReadyAddresses {
			ps = append(ps, fmt.Sprintf("Service %s is headless (seeds) without publishNotReadyAddresses", svc.Name))
		}
		for _, sp := range svc.Spec.Ports {
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			for _, w := range ws {
				if !slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool { return containerPort(&c, tp, proto) != nil }) {
					ps = append(ps, fmt.Sprintf("Service %s port %s: targetPort %s (%s) is no container port of %s", svc.Name, sp.Name, tp.String(), proto, w))
				}
			}
		}
	}
	return ps
}

func (s *set) checkPDBs() []string {
	var ps []string
	covered := map[string]bool{}
	for _, pdb := range s.pdbs {
		ws := s.selected(asSelector(pdb.Spec.Selector))
		if len(ws) == 0 {
			ps = append(ps, fmt.Sprintf("PodDisruptionBudget %s selects no workload's pods", pdb.Name))
		}
		if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
			ps = append(ps, fmt.Sprintf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", pdb.Name))
		}
		for _, w := range ws {
			covered[w.String()] = true
		}
	}
	for _, w := range s.workloads() {
		if !covered[w.String()] {
			ps = append(ps, fmt.Sprintf("%s: no PodDisruptionBudget selects its pods", w))
		}
	}
	return ps
}

// checkNetworkPolicies: every QLC pod is under an ingress policy; gossip
// and the actor transport are allowed, and only from QLC pods of this
// namespace; the ops port (no key) never from everywhere; the gateway's
// HTTP port from clients; each port a policy names exists on its pods.
func (s *set) checkNetworkPolicies() []string {
	var ps []string
	add := func(format string, a ...any) { ps = append(ps, fmt.Sprintf(format, a...)) }
	type allow struct{ open, qlcOnly bool }
	// per workload, per container port name: the rules that let traffic in.
	allowed := map[string]map[string][]allow{}
	isolated := map[string]bool{}
	for _, np := range s.netpols {
		ws := s.selected(asSelector(&np.Spec.PodSelector))
		if len(ws) == 0 {
			add("NetworkPolicy %s selects no workload's pods", np.Name)
		}
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		for _, w := range ws {
			if ingress {
				isolated[w.String()] = true
			}
		}
		for _, rule := range np.Spec.Ingress {
			a := allow{open: len(rule.From) == 0, qlcOnly: len(rule.From) > 0}
			for _, peer := range rule.From {
				if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil ||
					asSelector(peer.PodSelector) == nil || len(s.selected(asSelector(peer.PodSelector))) == 0 {
					a.qlcOnly = false
				}
			}
			for _, w := range ws {
				c := &w.pod.Spec.Containers[0]
				if allowed[w.String()] == nil {
					allowed[w.String()] = map[string][]allow{}
				}
				var ports []*corev1.ContainerPort
				if len(rule.Ports) == 0 {
					for i := range c.Ports {
						ports = append(ports, &c.Ports[i])
					}
				}
				for _, rp := range rule.Ports {
					proto := corev1.ProtocolTCP
					if rp.Protocol != nil {
						proto = *rp.Protocol
					}
					if rp.Port == nil {
						add("NetworkPolicy %s: a rule without a port opens every port", np.Name)
						continue
					}
					cp := containerPort(c, *rp.Port, proto)
					if cp == nil {
						add("NetworkPolicy %s: port %s (%s) is no container port of %s", np.Name, rp.Port.String(), proto, w)
						continue
					}
					ports = append(ports, cp)
				}
				for _, cp := range ports {
					allowed[w.String()][cp.Name] = append(allowed[w.String()][cp.Name], a)
				}
			}
		}
	}
	for _, w := range s.workloads() {
		if !isolated[w.String()] {
			add("%s: no NetworkPolicy isolates its pods' ingress", w)
			continue
		}
		for _, cp := range w.pod.Spec.Containers[0].Ports {
			as := allowed[w.String()][cp.Name]
			switch cp.Name {
			case portGossip, portGossipUDP, portActor:
				if len(as) == 0 {
					add("%s port %s: no NetworkPolicy lets QLC pods in", w, cp.Name)
				}
				for _, a := range as {
					if !a.qlcOnly {
						add("%s port %s is open to more than QLC pods of its namespace", w, cp.Name)
					}
				}
			case portOps:
				for _, a := range as {
					if a.open {
						add("%s port ops is open to every source: /metrics and /debug/pprof/ need no key", w)
					}
				}
			case portHTTP:
				if len(as) == 0 {
					add("%s port http: no NetworkPolicy lets clients in", w)
				}
			}
		}
	}
	return ps
}

func (s *set) checkHPAs() []string {
	var ps []string
	metrics := exportedMetrics()
	for _, h := range s.hpas {
		ref := h.Spec.ScaleTargetRef
		if !slices.ContainsFunc(s.workloads(), func(w workload) bool { return w.kind == ref.Kind && w.name == ref.Name }) {
			ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler %s scales %s %s, not in the set", h.Name, ref.Kind, ref.Name))
		}
		if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler %s: minReplicas above maxReplicas", h.Name))
		}
		for _, m := range h.Spec.Metrics {
			var name string
			switch {
			case m.Pods != nil:
				name = m.Pods.Metric.Name
			case m.Object != nil:
				name = m.Object.Metric.Name
			case m.External != nil:
				name = m.External.Metric.Name
			default:
				continue
			}
			if !metrics[name] {
				ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler %s: metric %s: QLC exports no such metric (actors/metrics.go)", h.Name, name))
			}
		}
	}
	return ps
}

func (s *set) checkKustomizations() []string {
	var ps []string
	for _, k := range s.kusts {
		for _, im := range k.Images {
			if !slices.ContainsFunc(s.workloads(), func(w workload) bool {
				return slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool { return imageName(c.Image) == im.Name })
			}) {
				ps = append(ps, fmt.Sprintf("%s/kustomization.yaml: image %s: no container uses it", k.dir, im.Name))
			}
		}
		for _, r := range k.Replicas {
			if !slices.ContainsFunc(s.workloads(), func(w workload) bool { return w.name == r.Name }) {
				ps = append(ps, fmt.Sprintf("%s/kustomization.yaml: replicas of %s: no such workload", k.dir, r.Name))
			}
		}
	}
	return ps
}

// ---- helpers ----

// secretish names environment variables that carry a secret.
var secretish = regexp.MustCompile(`(^|_)(KEY|SECRET|TOKEN|PASSWORD)(_|$)`)

// goRuntimeEnv are variables the Go runtime reads, allowed on any container.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true, "GOTRACEBACK": true, "TMPDIR": true}

// containerPort finds a container's port by name or number and protocol.
func containerPort(c *corev1.Container, p intstr.IntOrString, proto corev1.Protocol) *corev1.ContainerPort {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for i := range c.Ports {
		cp := &c.Ports[i]
		pp := cp.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if pp != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp
		}
	}
	return nil
}

func portNumber(cp *corev1.ContainerPort) any {
	if cp == nil {
		return "missing"
	}
	return cp.ContainerPort
}

// mountOf returns the writable volume mount that holds path, if any.
func mountOf(c *corev1.Container, path string) *corev1.VolumeMount {
	if !filepath.IsAbs(path) {
		return nil
	}
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) && !m.ReadOnly &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	return best
}

// imageName is an image reference without its tag or digest.
func imageName(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// binaryOf maps an image to the QLC binary it runs: …/qlc-node → node.
func binaryOf(image string) string {
	n := imageName(image)
	n = n[strings.LastIndex(n, "/")+1:]
	b, ok := strings.CutPrefix(n, "qlc-")
	if !ok {
		return ""
	}
	return b
}

// keyToken is a run of base64 or hex characters long enough for a key. A
// token must also hold a digit (a random 32-byte key lacks one with odds of
// about 1 in 1500), which keeps words like readOnlyRootFilesystem (22
// letters: 16 bytes of unpadded base64 to ParseKey) out.
var keyToken = regexp.MustCompile(`[A-Za-z0-9+/_-]{20,}={0,2}`)

// keyLiterals reports every token of the files that cluster.ParseKey takes
// for a key (base64 or hex of 16, 24 or 32 bytes), also inside base64 (a
// Secret's data).
func keyLiterals(files []string) []string {
	var ps []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			ps = append(ps, err.Error())
			continue
		}
		seen := map[string]bool{}
		for _, tok := range keyToken.FindAll(b, -1) {
			if !bytes.ContainsAny(tok, "0123456789") {
				continue
			}
			cands := []string{string(tok)}
			if dec, err := decodeBase64(string(tok)); err == nil {
				cands = append(cands, strings.TrimSpace(string(dec)))
			}
			for _, cnd := range cands {
				if _, err := cluster.ParseKey(cnd); err == nil && !seen[cnd] {
					seen[cnd] = true
					ps = append(ps, fmt.Sprintf("%s: %q reads as a cluster key: keys live in a Secret made by hand (docs/kubernetes.md)", f, tok))
				}
			}
		}
	}
	sort.Strings(ps)
	return ps
}

func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.URLEncoding.DecodeString(s)
}

func ptr[T any](v T) *T { return &v }

// checkStatefulSets: each names as its serviceName a headless Service of
// the set that selects its pods (the pods' DNS names, kubernetes.io docs
// "StatefulSet: Stable Network ID").
func (s *set) checkStatefulSets() []string {
	var ps []string
	for _, st := range s.statefulSets {
		svc := s.service(st.Spec.ServiceName)
		switch {
		case svc == nil:
			ps = append(ps, fmt.Sprintf("StatefulSet %s: serviceName %q is no Service of the set", st.Name, st.Spec.ServiceName))
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			ps = append(ps, fmt.Sprintf("StatefulSet %s: serviceName %s is not headless", st.Name, svc.Name))
		case !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(st.Spec.Template.Labels)):
			ps = append(ps, fmt.Sprintf("StatefulSet %s: serviceName %s does not select its pods", st.Name, svc.Name))
		}
	}
	return ps
}

// quotaPeers are the quota group's member ids (quota.DefaultConfig: the
// group is always these).
var quotaPeers = quota.DefaultConfig().Peers

// checkQuotaGroup: where nodes run the quota group (QLC_LIMITER_ID set and
// not 0), each member id goes to exactly one pod, as quota.MemberID decides
// it from each pod's host name; each member's Raft log is on a volume of
// its own that outlives the pod; and nothing (a disruption budget, an
// autoscaler, a scale-down's volume deletion, a rolling update) takes two
// of the three members at once or a member's log.
func (s *set) checkQuotaGroup() []string {
	var ps []string
	add := func(format string, a ...any) { ps = append(ps, fmt.Sprintf(format, a...)) }
	members := map[uint64][]string{} // member id → the pods that would be it
	inGroup := false
	for _, w := range s.workloads() {
		c := nodeContainer(w)
		if c == nil {
			continue
		}
		setting, dir := limiterSettings(c)
		if setting == "" || setting == "0" {
			continue
		}
		inGroup = true
		st := s.statefulSetOf(w)
		replicas := s.replicas(w)
		switch {
		case st == nil && setting == quota.Ordinal:
			add("%s: QLC_LIMITER_ID=ordinal: a %s's pods have no ordinal in their host names (use a StatefulSet)", w, w.kind)
		case st == nil:
			add("%s: QLC_LIMITER_ID=%s on a %s: its pods may run side by side (a rolling update's surge), two processes as one member of the group", w, setting, w.kind)
		default:
			if setting == quota.Ordinal && replicas < int32(len(quotaPeers)) {
				add("%s: replicas %d: the quota group needs %d (ordinals 0-%d are its members)", w, replicas, len(quotaPeers), len(quotaPeers)-1)
			}
			for i := range replicas {
				host := podHostname(st, i)
				id, err := quota.MemberID(setting, host, nil)
				if err != nil {
					add("%s: pod %s: QLC_LIMITER_ID: %v", w, host, err)
					break
				}
				if id != 0 {
					members[id] = append(members[id], w.name+"/"+host)
				}
			}
			if p := st.Spec.PersistentVolumeClaimRetentionPolicy; p != nil && p.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
				add("%s: persistentVolumeClaimRetentionPolicy whenScaled Delete: a scale-down below the group would delete a member's Raft log", w)
			}
			if st.Spec.MinReadySeconds < 5 {
				add("%s: minReadySeconds %d: a rolling update could stop the next member before the replaced one is back in the group (want 5 or more)", w, st.Spec.MinReadySeconds)
			}
		}
		// The Raft log: on a volume claim of the pod's own.
		switch m := mountOf(c, dir); {
		case dir == "":
			add("%s: QLC_LIMITER_ID without QLC_LIMITER_DIR: the node refuses to start", w)
		case m == nil:
			add("%s: QLC_LIMITER_DIR %s is on the read-only root: mount the log's volume there", w, dir)
		case !slices.ContainsFunc(w.claims, func(pvc corev1.PersistentVolumeClaim) bool { return pvc.Name == m.Name }):
			add("%s: QLC_LIMITER_DIR %s is on volume %s, not on a volumeClaimTemplate: a member's Raft log must outlive its pod", w, dir, m.Name)
		}
		// Disruptions: one member at a time.
		for _, pdb := range s.pdbs {
			if sel := asSelector(pdb.Spec.Selector); sel == nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
				continue
			}
			if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal != 1 || pdb.Spec.MinAvailable != nil {
				add("PodDisruptionBudget %s: %s runs the quota group: want maxUnavailable: 1 (two of its three members up through every drain), not %s", pdb.Name, w, pdbBudget(pdb))
			}
		}
		for _, h := range s.hpas {
			if h.Spec.ScaleTargetRef.Kind == w.kind && h.Spec.ScaleTargetRef.Name == w.name {
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < int32(len(quotaPeers)) {
					lo := int32(1)
					if h.Spec.MinReplicas != nil {
						lo = *h.Spec.MinReplicas
					}
					add("HorizontalPodAutoscaler %s: minReplicas %d: %s runs the quota group, which needs %d pods", h.Name, lo, w, len(quotaPeers))
				}
			}
		}
	}
	if !inGroup {
		return ps
	}
	for _, id := range quotaPeers {
		if pods := members[id]; len(pods) != 1 {
			add("quota group member %d: on %d pods %v, want exactly one", id, len(pods), pods)
		}
	}
	return ps
}

// nodeContainer is a workload's container running the node binary.
func nodeContainer(w workload) *corev1.Container {
	for i := range w.pod.Spec.Containers {
		if c := &w.pod.Spec.Containers[i]; binaryOf(c.Image) == "node" {
			return c
		}
	}
	return nil
}

// limiterSettings returns what the node sees for -limiter-id and
// -limiter-dir: the argument, else the environment variable's value.
func limiterSettings(c *corev1.Container) (id, dir string) {
	for _, e := range c.Env {
		switch e.Name {
		case "QLC_LIMITER_ID":
			id = e.Value
		case "QLC_LIMITER_DIR":
			dir = e.Value
		}
	}
	for i := 0; i < len(c.Args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(c.Args[i], "-"), "=")
		if !hasVal && i+1 < len(c.Args) {
			i++
			val = c.Args[i]
		}
		switch name {
		case "limiter-id":
			id = val
		case "limiter-dir":
			dir = val
		}
	}
	return strings.TrimSpace(id), dir
}

func (s *set) statefulSetOf(w workload) *appsv1.StatefulSet {
	if w.kind != "StatefulSet" {
		return nil
	}
	return s.statefulSet(w.name)
}

// replicas is a workload's replica count as applied: the manifest's (unset:
// 1), unless a kustomization's replicas override it (the last one wins:
// kusts are in include order).
func (s *set) replicas(w workload) int32 {
	n := int32(1)
	switch w.kind {
	case "StatefulSet":
		if r := s.statefulSet(w.name).Spec.Replicas; r != nil {
			n = *r
		}
	case "Deployment":
		if r := s.deployment(w.name).Spec.Replicas; r != nil {
			n = *r
		}
	}
	for _, k := range s.kusts {
		for _, r := range k.Replicas {
			if r.Name == w.name {
				n = int32(r.Count)
			}
		}
	}
	return n
}

// podHostname is the host name the pod of index i (0-based) of a
// StatefulSet has: its name, <statefulset>-<ordinal>, unless the template
// fixes one; the FQDN under its Service with setHostnameAsFQDN.
func podHostname(st *appsv1.StatefulSet, i int32) string {
	start := int32(0)
	if st.Spec.Ordinals != nil {
		start = st.Spec.Ordinals.Start
	}
	ps := &st.Spec.Template.Spec
	h := fmt.Sprintf("%s-%d", st.Name, start+i)
	if ps.Hostname != "" {
		h = ps.Hostname
	}
	if ps.SetHostnameAsFQDN != nil && *ps.SetHostnameAsFQDN {
		h += "." + st.Spec.ServiceName + ".qlc.svc.cluster.local"
	}
	return h
}

func pdbBudget(pdb *policyv1.PodDisruptionBudget) string {
	var parts []string
	if pdb.Spec.MaxUnavailable != nil {
		parts = append(parts, "maxUnavailable "+pdb.Spec.MaxUnavailable.String())
	}
	if pdb.Spec.MinAvailable != nil {
		parts = append(parts, "minAvailable "+pdb.Spec.MinAvailable.String())
	}
	if len(parts) == 0 {
		return "neither"
	}
	return strings.Join(parts, " and ")
}
