package opamp

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// This file bounds what the two transports read before opamp-go sees a
// byte. opamp-go v0.23.0 reads a WebSocket message whole (gorilla's
// ReadMessage with no read limit, and opamp-go exposes neither the
// *websocket.Conn nor its Upgrader) and a plain-HTTP body whole (io.ReadAll,
// after gunzipping it itself when Content-Encoding is gzip). So:
//
//   - WebSocket: the hijacked connection is wrapped in a frameLimiter that
//     parses the client's frame headers and fails the read as soon as a
//     header announces a message larger than the limit: the payload is never
//     read, so nothing is allocated past the limit. permessage-deflate is
//     not negotiated (opamp-go's Settings.EnableCompression stays false and
//     gorilla refuses frames with RSV1 set), so frame payload bytes are
//     message bytes.
//   - Plain HTTP: the body is read here, before opamp-go runs OnConnecting,
//     with a read deadline and a size limit applied after gunzipping; the
//     request is passed on with the decoded body and no Content-Encoding. A
//     slow body therefore never holds an enrollment slot: the slot is taken
//     in OnConnecting, after the body is in.

// errMessageTooLarge is the read error of a message over the limit.
var errMessageTooLarge = errors.New("opamp: message over the limit")

// ServeHTTP serves the OpAMP endpoint (mount it at Path).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if transportOf(r) == transportHTTP {
		s.servePlainHTTP(w, r)
		return
	}
	s.handler(&wsLimiter{ResponseWriter: w, limit: s.limits.MessageSize}, r)
}

// servePlainHTTP reads and bounds the body, then hands the request to
// opamp-go. A request with no credentials at all is passed on unread:
// OnConnecting refuses it and opamp-go never reads its body.
func (s *Server) servePlainHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := bearer(r); !ok && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		s.handler(w, r)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout)) // not every ResponseWriter supports it (httptest)
	body, err := readBody(r, s.limits.MessageSize)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		code := http.StatusBadRequest
		var ne net.Error
		switch {
		case errors.Is(err, errMessageTooLarge):
			code = http.StatusRequestEntityTooLarge
			s.metrics.Rejected.WithLabelValues(reasonTooLarge).Inc()
		case errors.As(err, &ne) && ne.Timeout():
			code = http.StatusRequestTimeout
			s.metrics.Rejected.WithLabelValues(reasonReadTimeout).Inc()
		}
		s.log.Info("opamp request body refused", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, err.Error(), code)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Del("Content-Encoding")
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	s.handler(w, r)
}

// readBody reads a request body, gunzipping it when Content-Encoding says
// gzip, and fails as soon as more than limit bytes (after decompression)
// arrive: at most limit+1 bytes are ever held.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	var src io.Reader = r.Body
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
		if r.ContentLength > limit {
			return nil, fmt.Errorf("%w: Content-Length %d > opamp.limits.message_size (%d bytes)", errMessageTooLarge, r.ContentLength, limit)
		}
	case "gzip":
		// The compressed stream is bounded too, so a compressed body cannot
		// make the server read more than limit bytes off the wire.
		zr, err := gzip.NewReader(io.LimitReader(r.Body, limit+1))
		if err != nil {
			return nil, fmt.Errorf("opamp: gzip body: %w", err)
		}
		defer zr.Close()
		src = zr
	default:
		return nil, fmt.Errorf("opamp: unsupported Content-Encoding %q (want gzip or none)", enc)
	}
	b, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		return nil, fmt.Errorf("opamp: read body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: body over opamp.limits.message_size (%d bytes, after decompression)", errMessageTooLarge, limit)
	}
	return b, nil
}

// wsLimiter hands gorilla's Upgrader a connection wrapped in a frameLimiter
// when it hijacks. gorilla asserts http.Hijacker on the writer itself, so
// wsLimiter implements it.
type wsLimiter struct {
	http.ResponseWriter
	limit int64
}

// Hijack takes over the connection and wraps it.
func (w *wsLimiter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 {
		// A client may not send frames before the handshake completes;
		// gorilla refuses this too.
		c.Close()
		return nil, nil, errors.New("opamp: client sent data before the WebSocket handshake completed")
	}
	fl := &frameLimiter{Conn: c, limit: w.limit}
	return fl, bufio.NewReadWriter(bufio.NewReader(fl), brw.Writer), nil
}

// Unwrap lets http.ResponseController reach the original writer.
func (w *wsLimiter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// frameLimiter is a server-side WebSocket connection that watches the
// client's frame headers (RFC 6455 section 5.2) as they are read and fails
// the read at the header of a frame that takes its data message over limit
// bytes. Control frames (at most 125 bytes, checked by gorilla) do not
// count. Reads happen on one goroutine (gorilla's reader), so it needs no
// lock.
type frameLimiter struct {
	net.Conn
	limit int64

	hdr     [14]byte // the frame header being read
	nhdr    int
	payload uint64 // payload bytes of the current frame not yet read
	msg     int64  // payload bytes of the current data message so far
	err     error  // sticky, once the limit is passed
}

func (f *frameLimiter) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.Conn.Read(p)
	for i := 0; i < n; {
		if f.payload > 0 {
			k := min(f.payload, uint64(n-i))
			f.payload -= k
			i += int(k)
			continue
		}
		f.hdr[f.nhdr] = p[i]
		f.nhdr++
		i++
		if f.nhdr < frameHeaderLen(f.hdr[:f.nhdr]) {
			continue
		}
		opcode, length := f.hdr[0]&0x0f, framePayloadLen(f.hdr[:f.nhdr])
		f.nhdr, f.payload = 0, length
		if opcode >= 8 { // control frame
			continue
		}
		if opcode != 0 { // first frame of a message; 0 is a continuation
			f.msg = 0
		}
		if length > uint64(f.limit-f.msg) {
			f.err = fmt.Errorf("%w: WebSocket message over opamp.limits.message_size (%d bytes)", errMessageTooLarge, f.limit)
			// Hand gorilla the bytes up to this header, never its payload.
			return i, nil
		}
		f.msg += int64(length)
	}
	return n, err
}

// tooLarge reports whether the limit was passed on this connection.
func (f *frameLimiter) tooLarge() bool { return f.err != nil }

// frameHeaderLen is the length of a frame header whose first bytes are h
// (at least 2 are needed to know).
func frameHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

// framePayloadLen reads the payload length of a complete frame header.
func framePayloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(h[2])<<8 | uint64(h[3])
	case 127:
		var v uint64
		for _, b := range h[2:10] {
			v = v<<8 | uint64(b)
		}
		return v
	default:
		return uint64(l)
	}
}
