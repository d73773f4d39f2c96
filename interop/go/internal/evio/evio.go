// Package evio reads CloudEvents in the JSON event format and writes received
// events as JSON lines, shared by the interop programs.
package evio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
)

// ReadEvents reads one structured-mode CloudEvent (a JSON object) or a JSON
// array of them from path ("-" or "" for stdin), decoded by the SDK.
func ReadEvents(path string) ([]event.Event, error) {
	var raw []byte
	var err error
	if path == "" || path == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("no event on input")
	}
	var items []json.RawMessage
	if raw[0] == '[' {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("input is not a JSON array of events: %w", err)
		}
	} else {
		items = []json.RawMessage{raw}
	}
	events := make([]event.Event, 0, len(items))
	for i, item := range items {
		e := event.New()
		if err := json.Unmarshal(item, &e); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("event %d is not valid: %w", i, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// Output writes one JSON object per line to stdout or to a file, and flushes
// each line so a reader polling the file sees it at once.
type Output struct {
	mu sync.Mutex
	f  *os.File
}

// OpenOutput opens path for appending ("" or "-" is stdout).
func OpenOutput(path string) (*Output, error) {
	if path == "" || path == "-" {
		return &Output{f: os.Stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Output{f: f}, nil
}

// Line is what a receiver records for one message.
type Line struct {
	Event *event.Event   `json:"event,omitempty"`
	Error string         `json:"error,omitempty"`
	Meta  map[string]any `json:"meta,omitempty"`
}

// ForBase64 marks data of a non-JSON media type to be written as
// data_base64, so bytes that are not UTF-8 text survive the JSON line.
func ForBase64(e *event.Event) {
	if e == nil || len(e.Data()) == 0 {
		return
	}
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(e.DataContentType(), ";", 2)[0]))
	if ct == "" || ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json") {
		return
	}
	e.DataBase64 = true
}

// WriteMessage decodes msg with the SDK and writes the event, or the
// SDK's error, as one line with meta.
func (o *Output) WriteMessage(msg binding.Message, meta map[string]any) {
	e, err := binding.ToEvent(context.Background(), msg)
	if err == nil {
		err = e.Validate()
	}
	if err != nil {
		o.Write(Line{Error: err.Error(), Meta: meta})
		return
	}
	ForBase64(e)
	o.Write(Line{Event: e, Meta: meta})
}

// Write marshals v and writes it as one line.
func (o *Output) Write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "marshal: " + err.Error()})
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.f.Write(append(b, '\n'))
	o.f.Sync()
}
