package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Default bounds on what a caller may send (Config.MaxBodyBytes,
// Config.MaxUploadBytes).
const (
	// DefaultMaxBodyBytes bounds a JSON request body: 1 MiB, far above any
	// request the CLI sends (a policy simulation carries the policy files).
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxUploadBytes bounds a package artifact streamed to
	// POST /api/v1/packages: 1 GiB.
	DefaultMaxUploadBytes = 1 << 30
)

// bodyError is why a request body was refused, with the status it gets.
type bodyError struct {
	status int
	msg    string
}

func (e *bodyError) Error() string { return e.msg }

// decodeBody reads the request body as exactly one JSON object into v (a
// pointer to a struct) and answers the request itself when it cannot: 413
// for a body over Config.MaxBodyBytes, 400 for an empty body, anything
// other than an object (null, an array, a string), a field v does not have,
// a value of the wrong type, or data after the object. It reports whether v
// was filled. Every handler that takes a JSON body goes through here, so no
// endpoint is laxer than another.
func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := decodeJSON(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes), a.cfg.MaxBodyBytes, false, v); err != nil {
		writeError(w, err.status, "%s", err.msg)
		return false
	}
	return true
}

// noBody is decodeBody for endpoints that take no parameters in their
// body: an empty body or {} is accepted, anything else refused.
func (a *API) noBody(w http.ResponseWriter, r *http.Request) bool {
	if err := decodeJSON(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes), a.cfg.MaxBodyBytes, true, &struct{}{}); err != nil {
		writeError(w, err.status, "%s", err.msg)
		return false
	}
	return true
}

// decodeJSON is decodeBody's rules over any reader; limit is only named in
// the message of a body that is too large.
func decodeJSON(body io.Reader, limit int64, emptyOK bool, v any) *bodyError {
	bad := func(format string, args ...any) *bodyError {
		return &bodyError{status: http.StatusBadRequest, msg: "body: " + fmt.Sprintf(format, args...)}
	}
	b, err := io.ReadAll(body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &bodyError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("body: larger than %d bytes (admin.max_body_bytes)", limit)}
	}
	if err != nil {
		return bad("read: %v", err)
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	switch {
	case len(trimmed) == 0 && emptyOK:
		return nil
	case len(trimmed) == 0:
		return bad("empty; want a JSON object")
	case trimmed[0] != '{':
		return bad("want a JSON object, got %s", jsonKind(trimmed[0]))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bad("%v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("trailing data after the JSON object at offset %d", dec.InputOffset())
	}
	return nil
}

// jsonKind names the JSON value a byte starts, for messages.
func jsonKind(c byte) string {
	switch {
	case c == 'n':
		return "null"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return fmt.Sprintf("%q, which is not JSON", c)
}
