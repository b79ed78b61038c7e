// Package k8s holds QLC's Kubernetes manifests (kustomize; see
// docs/kubernetes.md): the base in base/ (deploy/k8s itself lists it) and
// overlays in overlays/. manifests_test.go decodes every one of them
// strictly into the Kubernetes API types and checks the rules a QLC
// deployment depends on: probes on the ops port, a preStop and a grace
// period longer than the node's drain, the cluster key from a Secret only,
// selectors and ports that match, seeds on a headless Service, the
// gateway's store on a volume per pod, the quota group (each member id on
// exactly one pod as the node derives it from its StatefulSet ordinal, its
// Raft log on a volume per pod, one member down at a time), NetworkPolicies
// that keep gossip and the actor transport among QLC pods, and flags and
// environment variables that the binaries (built by the test) really
// accept. Where kustomize or kubectl is installed, each kustomization is
// also built by it and the result checked the same way. No cluster is
// needed.
package k8s
