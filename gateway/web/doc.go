// Package web holds QLC's browser UI: a single page (index.html, app.css,
// app.js) embedded into the binary, with no build step and nothing fetched from
// elsewhere. The page asks a question through POST /v1/runs, follows the run's
// Server-Sent Events at /v1/runs/{id}/events, shows the four stages streaming
// side by side, and renders the final answer. Package gateway mounts Handler at "/".
package web
