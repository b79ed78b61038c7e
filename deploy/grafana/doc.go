// Package grafana holds QLC's Grafana dashboard and the files that run it:
//
//   - qlc.json: the dashboard (Grafana schema 39; its data source is the
//     variable "datasource", any Prometheus data source), with the variables
//     job and instance read from the qlc_active_runs series;
//   - prometheus.yml: a scrape configuration of the gateway's and the nodes'
//     ops listeners (/metrics without a key), as docker-compose.yml's
//     profile "observability" runs it;
//   - provisioning/: Grafana's data source (that Prometheus) and dashboard
//     provider (qlc.json in the folder QLC).
//
// dashboard_test.go checks the dashboard's structure (unique panel ids, a
// grid without overlaps, every query with a refId and the panel's data
// source, every variable defined) and then checks it for real: it builds
// cmd/node and cmd/gateway, starts three nodes and a gateway as processes,
// has Debian's prometheus binary scrape all four every second while a
// bounded load runs (completed, failed, cancelled and refused runs, a bad
// key, tokenizer calls, a node killed with SIGKILL for failovers and
// tokenizer fallbacks), then evaluates every query of every panel through
// Prometheus's HTTP API and fails, naming the panel and the query, on a
// metric that no process exports or a query that returns no data. The
// package has no other code: Dashboard is the JSON, for tools that embed it.
package grafana

import _ "embed"

// Dashboard is qlc.json, the dashboard as Grafana imports it.
//
//go:embed qlc.json
var Dashboard []byte
