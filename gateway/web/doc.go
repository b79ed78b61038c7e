// Package web holds QLC's browser UI: a single page (index.html, app.css,
// app.js) embedded into the binary, with no build step and nothing fetched from
// elsewhere. The page asks a question through POST /v1/runs, follows the run's
// Server-Sent Events at /v1/runs/{id}/events, shows the four stages streaming
// side by side, and renders the final answer. A second page, the admin
// console at /admin (admin.html, admin.css, admin.js), manages tenants,
// limits and keys, charts usage and reads the audit log with an admin key;
// it shares no code with the first. Package gateway mounts Handler at "/".
package web
