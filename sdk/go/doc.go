// Package telemetry is the Go SDK of telemetryd: it lets a command-line
// program record usage events with the local telemetryd daemon over its
// Unix socket, speaking the daemon's JSON-lines protocol.
//
// The host program comes first. No function of this package panics into
// the caller (every public entry point recovers), none prints anything
// (except [Client.Prompt], which asks on a terminal), and none blocks past
// the client's time budget ([Options.Timeout], 100 ms by default) when
// talking to the daemon. Consent is read from the files and the
// environment before anything else: when it is off, nothing is connected,
// written or started.
//
//	c := telemetry.New(telemetry.Options{Product: "cfdev", Build: "1.2.0"})
//	c.Prompt("")                                   // once, on a terminal
//	c.Emit(ctx, "app_created", map[string]any{"buildpack": "go"})
//
// The pure parts (consent resolution, default paths, KEY=VALUE parsing,
// the wire encoding) are exported as functions of their inputs, so they
// can be checked against the repository's shared test vectors.
//
// Only the standard library is used.
package telemetry
