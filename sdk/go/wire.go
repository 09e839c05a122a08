package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ProtocolVersion is the version every JSON line carries under "v".
const ProtocolVersion = 2

// MaxLineLen is the longest JSON line accepted in either direction,
// newline included.
const MaxLineLen = 2 * 64 * 1024

// Event is one event as sent to the daemon (the protocol's WireEvent).
type Event struct {
	// ID is a UUIDv7, lowercase and hyphenated; the deduplication key.
	ID string `json:"id"`
	// Event is the catalogue name, e.g. app_created.
	Event string `json:"event"`
	// Product is the product the event belongs to, e.g. cfdev.
	Product string `json:"product"`
	// Build is the host program's version.
	Build string `json:"build"`
	// TimestampUs is when it happened, in µs since the Unix epoch.
	TimestampUs int64 `json:"timestamp_us"`
	// Data maps names to string, int64 or bool values.
	Data map[string]any `json:"data"`
}

// emitBody is the "emit" request's fields.
type emitBody struct {
	Events []Event `json:"events"`
	Ack    bool    `json:"ack"`
}

// consentChangedBody is the "consent_changed" request's fields.
type consentChangedBody struct {
	Product string `json:"product"`
	Build   string `json:"build"`
}

// showBody is the "show" request's fields.
type showBody struct {
	Product  *string `json:"product"`
	AfterSeq int64   `json:"after_seq"`
}

// purgeBody is the "purge" request's fields.
type purgeBody struct {
	Product *string `json:"product"`
}

// encodeLine writes one request as a JSON line:
// {"v":2,"<name>":<body>} and a newline.
func encodeLine(name string, body any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"v":2,`)
	n, err := json.Marshal(name)
	if err != nil {
		return nil, err
	}
	buf.Write(n)
	buf.WriteByte(':')
	if body == nil {
		body = struct{}{}
	}
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return nil, err
	}
	// Encode ends with a newline: put the closing brace before it.
	buf.Truncate(buf.Len() - 1)
	buf.WriteString("}\n")
	if buf.Len() > MaxLineLen {
		return nil, fmt.Errorf("telemetry: request is %d bytes, more than the maximum line of %d", buf.Len(), MaxLineLen)
	}
	return buf.Bytes(), nil
}

// emitLine is the emit request for events.
func emitLine(events []Event, ack bool) ([]byte, error) {
	for i := range events {
		if events[i].Data == nil {
			events[i].Data = map[string]any{}
		}
	}
	return encodeLine("emit", emitBody{Events: events, Ack: ack})
}

// reply is one decoded reply line: its variant name and fields.
type reply struct {
	name string
	body json.RawMessage
}

// decodeReply reads one reply line: "v" must be 2, and exactly one other
// key names the message.
func decodeReply(line []byte) (reply, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(line), &m); err != nil {
		return reply{}, fmt.Errorf("telemetry: the daemon's reply is not a JSON object: %v", err)
	}
	v, ok := m["v"]
	if !ok {
		return reply{}, errors.New(`telemetry: the daemon's reply has no "v"`)
	}
	var ver int64
	if err := json.Unmarshal(v, &ver); err != nil || ver != ProtocolVersion {
		return reply{}, fmt.Errorf("telemetry: the daemon replied in protocol version %s, not %d", v, ProtocolVersion)
	}
	delete(m, "v")
	if len(m) != 1 {
		return reply{}, fmt.Errorf("telemetry: the daemon's reply has %d messages, expected one", len(m))
	}
	for k, b := range m {
		return reply{name: k, body: b}, nil
	}
	return reply{}, errors.New("unreachable")
}

// into decodes the reply's fields into v (null reads as empty).
func (r reply) into(v any) error {
	if len(r.body) == 0 || string(r.body) == "null" {
		return nil
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		return fmt.Errorf("telemetry: cannot read the daemon's %q reply: %v", r.name, err)
	}
	return nil
}

// ackBody is the "ack" reply's fields.
type ackBody struct {
	Accepted   uint32 `json:"accepted"`
	Duplicates uint32 `json:"duplicates"`
}

// queuedBody is the "queued" reply's fields.
type queuedBody struct {
	Accepted uint32 `json:"accepted"`
}

// errorBody is the "error" reply's fields.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// flushedBody is the "flushed" reply's fields.
type flushedBody struct {
	Keys   []string `json:"keys"`
	Events uint64   `json:"events"`
	Bytes  uint64   `json:"bytes"`
}

// shownEvent is one event of an "events" reply.
type shownEvent struct {
	Seq      int64   `json:"seq"`
	State    string  `json:"state"`
	BatchKey *string `json:"batch_key"`
	Line     string  `json:"line"`
	// Counter marks a sealed batch's telemetry_dropped line (not a stored
	// event; its Seq is the batch's last event's).
	Counter bool `json:"counter"`
}

// eventsBody is the "events" reply's fields.
type eventsBody struct {
	Events       []shownEvent `json:"events"`
	NextAfterSeq *int64       `json:"next_after_seq"`
}

// purgedBody is the "purged" reply's fields.
type purgedBody struct {
	Events uint64 `json:"events"`
}

// ProductConsent is a product's consent as the daemon sees it.
type ProductConsent struct {
	// Product is the product name.
	Product string `json:"product"`
	// Mode is the effective mode.
	Mode Mode `json:"mode"`
	// Layer is the layer that decided it.
	Layer Layer `json:"layer"`
	// Manifest is the product's manifest file (or "built-in NAME.toml").
	Manifest string `json:"manifest"`
	// ManifestError says why the manifest cannot be used, if it cannot.
	ManifestError *string `json:"manifest_error"`
	// Version is the manifest's catalogue version; 0 when unknown.
	Version uint32 `json:"version"`
	// ConsentedVersion is the version the user's decision was given for.
	ConsentedVersion uint32 `json:"consented_version"`
	// NewEvents are events added since the consented version.
	NewEvents []string `json:"new_events"`
	// ManifestWarnings are what the usable manifest has that the daemon
	// ignores or that its events cannot meet: for its vendor.
	ManifestWarnings []string `json:"manifest_warnings"`
}

// ConsentReport is the daemon's reply to a consent change.
type ConsentReport struct {
	// Consent is the product's consent now.
	Consent ProductConsent `json:"consent"`
	// Purged counts events deleted because the product was turned off.
	Purged uint64 `json:"purged"`
	// FinalEvent tells whether a final telemetry_off event was recorded.
	FinalEvent bool `json:"final_event"`
	// File is the consent file the daemon reads.
	File string `json:"file"`
}

// ProductCount is a product name and a count (JSON: a [name, n] pair).
type ProductCount struct {
	// Product is the product name.
	Product string
	// Count is the number.
	Count uint64
}

// UnmarshalJSON reads a [name, n] pair.
func (p *ProductCount) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if len(pair) != 2 {
		return fmt.Errorf("expected a [product, count] pair, got %s", b)
	}
	if err := json.Unmarshal(pair[0], &p.Product); err != nil {
		return err
	}
	return json.Unmarshal(pair[1], &p.Count)
}

// RefusalCount is how many requests the daemon refused for one product
// and reason.
type RefusalCount struct {
	// Product is the product named by the refused events ("" if unknown).
	Product string `json:"product"`
	// Code is the error code of the refusal.
	Code string `json:"code"`
	// Count is the number of refused requests since the daemon started.
	Count uint64 `json:"count"`
	// LastEvent is the event of the latest of them ("" if none).
	LastEvent string `json:"last_event"`
	// LastMessage is the message the latest of them was answered with,
	// on one line ("" from an older daemon).
	LastMessage string `json:"last_message"`
}

// DestinationStatus is one upload destination in a StatusReport.
type DestinationStatus struct {
	// Destination names it (never with credentials).
	Destination string `json:"destination"`
	// Auth is how uploads authenticate.
	Auth string `json:"auth"`
	// Products are the products whose manifests send batches here.
	Products []string `json:"products"`
	// PendingBatches are sealed batches waiting to go here.
	PendingBatches uint64 `json:"pending_batches"`
	// UploadedEvents are events uploaded here since the daemon started.
	UploadedEvents uint64 `json:"uploaded_events"`
	// UploadedBytes are compressed bytes uploaded here since start.
	UploadedBytes uint64 `json:"uploaded_bytes"`
	// AlreadyThere counts batches found already uploaded since start.
	AlreadyThere uint64 `json:"already_there"`
	// LastUploadUs is the last successful upload's time, in µs.
	LastUploadUs *int64 `json:"last_upload_us"`
	// LastError is the last error here, if the last attempt failed.
	LastError *string `json:"last_error"`
	// NextAttemptUs is when the next attempt is due after a failure (µs).
	NextAttemptUs *int64 `json:"next_attempt_us"`
	// ConsecutiveFailures counts failed attempts in a row.
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
	// Retired are products this destination retired, with events dropped.
	Retired []ProductCount `json:"retired"`
	// Uploads counts objects written here since start.
	Uploads uint64 `json:"uploads"`
	// RefusedEvents counts events of batches this destination refused for
	// good since start (retired builds, a day past its window).
	RefusedEvents uint64 `json:"refused_events"`
	// RefusedWhy is why the latest such batch was refused.
	RefusedWhy *string `json:"refused_why"`
}

// StatusReport is the daemon's status. Fields the daemon adds later are
// kept in Raw (which holds every field as sent).
type StatusReport struct {
	// DaemonVersion is the daemon's version.
	DaemonVersion string `json:"daemon_version"`
	// UptimeSecs is the seconds since the daemon started.
	UptimeSecs uint64 `json:"uptime_secs"`
	// Destination is where batches go (never with credentials).
	Destination string `json:"destination"`
	// PendingEvents are events stored and not yet uploaded.
	PendingEvents uint64 `json:"pending_events"`
	// PendingBytes are the NDJSON bytes of those events.
	PendingBytes uint64 `json:"pending_bytes"`
	// SealedBatches are batches sealed and waiting for upload.
	SealedBatches uint64 `json:"sealed_batches"`
	// UploadedEvents are events uploaded since the daemon started.
	UploadedEvents uint64 `json:"uploaded_events"`
	// LastUploadUs is the time of the last successful upload (µs).
	LastUploadUs *int64 `json:"last_upload_us"`
	// LastUploadKey is the key of the last object written.
	LastUploadKey *string `json:"last_upload_key"`
	// LastError is the last upload error, if the last attempt failed.
	LastError *string `json:"last_error"`
	// NextAttemptUs is when the next upload attempt is due (µs).
	NextAttemptUs *int64 `json:"next_attempt_us"`
	// ConsecutiveFailures counts failed upload attempts in a row.
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
	// LocalEvents are events kept on this machine only.
	LocalEvents uint64 `json:"local_events"`
	// Consent is every known product's consent, as the daemon sees it.
	Consent []ProductConsent `json:"consent"`
	// ConsentFile is the user consent file the daemon reads.
	ConsentFile string `json:"consent_file"`
	// Incidents are problems recovered from since start.
	Incidents []string `json:"incidents"`
	// Dropped are events dropped to stay under the size limit, per product.
	Dropped []ProductCount `json:"dropped"`
	// Refusals are requests refused since start, by product and reason.
	Refusals []RefusalCount `json:"refusals"`
	// NextUploadUs is when the next upload is due unasked (µs).
	NextUploadUs *int64 `json:"next_upload_us"`
	// Destinations are every destination batches go to.
	Destinations []DestinationStatus `json:"destinations"`
	// Raw is the whole report as sent, including fields unknown here.
	Raw map[string]any `json:"-"`
}

// ConsentFor returns the daemon's view of product's consent, if listed.
func (s *StatusReport) ConsentFor(product string) (ProductConsent, bool) {
	if s == nil {
		return ProductConsent{}, false
	}
	for _, c := range s.Consent {
		if c.Product == product {
			return c, true
		}
	}
	return ProductConsent{}, false
}

// decodeStatus reads a "status" reply's record.
func decodeStatus(r reply) (*StatusReport, error) {
	var s StatusReport
	if err := r.into(&s); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	_ = dec.Decode(&s.Raw)
	return &s, nil
}
