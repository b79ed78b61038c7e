// Package k8s holds QLC's Kubernetes manifests (kustomize; see
// docs/kubernetes.md) and, in manifests_test.go, the test that decodes every
// one of them strictly into the Kubernetes API types and checks the rules a
// QLC deployment depends on: probes on the ops port, a preStop and a grace
// period longer than the node's drain, the cluster key from a Secret only,
// selectors and ports that match, seeds on a headless Service, the gateway's
// store on a volume per pod, NetworkPolicies that keep gossip and the actor
// transport among QLC pods, and flags and environment variables that the
// binaries (built by the test) really accept. No cluster is needed.
package k8s
