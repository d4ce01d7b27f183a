package opamp_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/loadgen"
)

// deepValue is an AnyValue nested n key-value lists deep, as a hostile
// agent description carries it.
func deepValue(n int) *protobufs.AnyValue {
	v := &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: "x"}}
	for i := 0; i < n; i++ {
		v = &protobufs.AnyValue{Value: &protobufs.AnyValue_KvlistValue{KvlistValue: &protobufs.KeyValueList{
			Values: []*protobufs.KeyValue{{Key: "k", Value: v}}}}}
	}
	return v
}

func strAttr(k, v string) *protobufs.KeyValue {
	return &protobufs.KeyValue{Key: k, Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}}}
}

// rawTLS opens a TLS connection to the OpAMP listener without speaking
// HTTP yet: for requests that stall on purpose.
func (e *env) rawTLS(t *testing.T) *tls.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	c, err := tls.Dial("tcp", e.OpAMPAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// slowBody sends an OpAMP plain-HTTP request's headers with a token and
// promises a body it never sends.
func (e *env) slowBody(t *testing.T, token string) *tls.Conn {
	t.Helper()
	c := e.rawTLS(t)
	fmt.Fprintf(c, "POST /v1/opamp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\n"+
		"Authorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", token)
	return c
}

// TestWebSocketFrameOverLimitIsRefusedUnread: a frame header announcing a
// 256 MB message gets a BadRequest naming the limit and the connection is
// closed, without the server waiting for (or allocating) the payload.
func TestWebSocketFrameOverLimitIsRefusedUnread(t *testing.T) {
	e := start(t, "opamp:\n  limits:\n    message_size: 65536\n")
	ws := e.dialWS(t, e.token(1, "10m", nil))
	// A normal message under the limit is answered.
	if got := wsExchange(t, ws, &protobufs.AgentToServer{InstanceUid: uuidBytes()}); got.ErrorResponse != nil {
		t.Fatalf("normal message: %v", got.ErrorResponse)
	}
	// A masked binary frame header announcing 256 MB, and no payload.
	hdr := []byte{0x82, 0x80 | 127}
	hdr = binary.BigEndian.AppendUint64(hdr, 256<<20)
	hdr = append(hdr, 1, 2, 3, 4)
	if _, err := ws.UnderlyingConn().Write(hdr); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("no answer to an oversized frame (the server waits for its payload): %v", err)
	}
	var out protobufs.ServerToAgent
	if err := proto.Unmarshal(data[1:], &out); err != nil {
		t.Fatal(err)
	}
	if out.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest ||
		!strings.Contains(out.ErrorResponse.GetErrorMessage(), "opamp.limits.message_size") {
		t.Fatalf("oversized frame answered %v, want BadRequest naming opamp.limits.message_size", out.ErrorResponse)
	}
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("connection still open after an oversized message")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed after an oversized message")
	}
}

// TestWebSocketFragmentedMessageOverLimit: the limit applies to the whole
// message, across continuation frames.
func TestWebSocketFragmentedMessageOverLimit(t *testing.T) {
	e := start(t, "opamp:\n  limits:\n    message_size: 65536\n")
	ws := e.dialWS(t, e.token(1, "10m", nil))
	frame := func(op byte, fin bool, n int) []byte {
		b := op
		if fin {
			b |= 0x80
		}
		h := []byte{b, 0x80 | 126, byte(n >> 8), byte(n), 0, 0, 0, 0} // zero mask: payload as is
		return append(h, make([]byte, n)...)
	}
	var msg []byte
	msg = append(msg, frame(0x2, false, 40000)...)
	msg = append(msg, 0x89, 0x80, 0, 0, 0, 0) // a ping in between does not count
	msg = append(msg, frame(0x0, false, 20000)...)
	msg = append(msg, 0x8a, 0x80, 0, 0, 0, 0) // nor does a pong
	// 60000 bytes so far; the header of this frame takes it to 100000.
	msg = append(msg, 0x80, 0x80|126, byte(40000>>8), byte(40000&0xff), 0, 0, 0, 0)
	if _, err := ws.UnderlyingConn().Write(msg); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no BadRequest for a fragmented message over the limit: %v", err)
		}
		var out protobufs.ServerToAgent
		if proto.Unmarshal(data[1:], &out) == nil && strings.Contains(out.ErrorResponse.GetErrorMessage(), "opamp.limits.message_size") {
			return
		}
	}
}

// TestPlainHTTPBodyLimits: bodies over the limit, plain or gzip (measured
// after decompression: a small bomb), are refused with 413; a gzip body
// under the limit is served.
func TestPlainHTTPBodyLimits(t *testing.T) {
	e := start(t, "opamp:\n  limits:\n    message_size: 65536\n")
	tok := e.token(10, "10m", nil)
	send := func(body []byte, gz bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.url("http"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer "+tok)
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := e.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	gzipped := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	if resp := send(make([]byte, 65537), false); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("plain body over the limit: HTTP %d, want 413", resp.StatusCode)
	}
	bomb := gzipped(make([]byte, 64<<20)) // 64 MiB of zeros in ~64 KiB
	if resp := send(bomb, true); resp.StatusCode != http.StatusRequestEntityTooLarge {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("gzip bomb: HTTP %d %s, want 413", resp.StatusCode, b)
	}
	ok, _ := proto.Marshal(&protobufs.AgentToServer{InstanceUid: uuidBytes()})
	if got := decode(t, send(gzipped(ok), true)); got.ErrorResponse != nil {
		t.Fatalf("gzip message under the limit: %v", got.ErrorResponse)
	}
	if resp := send(ok, false); resp.StatusCode != http.StatusOK {
		t.Fatalf("plain message under the limit: HTTP %d", resp.StatusCode)
	}
}

// TestIdleSocketsDoNotHoldEnrollmentSlots: as many idle WebSockets and
// slow-body requests as there are enrollment slots, all with a valid token,
// do not keep a legitimate agent from enrolling. The timeouts are set long
// so that it is not them doing the work.
func TestIdleSocketsDoNotHoldEnrollmentSlots(t *testing.T) {
	e := start(t, "opamp:\n  max_concurrent_enrollments: 4\n  enroll_timeout: 1h\n  read_timeout: 1h\n")
	tok := e.token(100, "10m", nil)
	for i := 0; i < 4; i++ {
		e.dialWS(t, tok)
		e.slowBody(t, tok)
	}
	ctx := ctxMinute(t)
	for _, transport := range []string{"websocket", "http"} {
		a := e.agent(transport)
		if err := a.Enroll(ctx, tok); err != nil {
			t.Fatalf("%s enrollment refused while idle sockets are open: %v", transport, err)
		}
	}
}

// TestEnrollTimeoutClosesEnrollingSocket: an enrolling WebSocket that sends
// no CSR is closed at enroll_timeout, idle or chatty.
func TestEnrollTimeoutClosesEnrollingSocket(t *testing.T) {
	e := start(t, "opamp:\n  enroll_timeout: 100ms\n")
	tok := e.token(10, "10m", nil)
	idle := e.dialWS(t, tok)
	chatty := e.dialWS(t, tok)
	wsExchange(t, chatty, &protobufs.AgentToServer{InstanceUid: uuidBytes()})
	for name, ws := range map[string]*websocket.Conn{"idle": idle, "chatty": chatty} {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s enrolling socket not closed by enroll_timeout: %v", name, err)
		}
	}
}

// TestSlowBodyTimesOut: a plain-HTTP body that does not arrive within
// read_timeout gets 408 and the connection closed.
func TestSlowBodyTimesOut(t *testing.T) {
	e := start(t, "opamp:\n  read_timeout: 100ms\n")
	c := e.slowBody(t, e.token(1, "10m", nil))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: HTTP %d, want 408", resp.StatusCode)
	}
}

// TestMessageLimitsRefuseAndKeepState: over-limit descriptions, health,
// effective config and package statuses are refused with a BadRequest
// naming the limit; the agent's record is unchanged and the fleet listing
// still serves it.
func TestMessageLimitsRefuseAndKeepState(t *testing.T) {
	e := start(t, "")
	ctx := ctxMinute(t)
	a := e.agent("http")
	if err := a.Enroll(ctx, e.token(2, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	uid := a.UID[:]
	good := &protobufs.AgentDescription{IdentifyingAttributes: []*protobufs.KeyValue{strAttr("service.name", "otelcol")}}
	if got := e.mtlsPost(t, a, &protobufs.AgentToServer{InstanceUid: uid, SequenceNum: 1, AgentDescription: good}); got.ErrorResponse != nil {
		t.Fatal(got.ErrorResponse)
	}
	before := e.waitAgent(a.UID, func(g api.Agent) bool { return len(g.Description) > 0 })

	many := &protobufs.AgentDescription{}
	for i := 0; i < 600; i++ {
		many.NonIdentifyingAttributes = append(many.NonIdentifyingAttributes, strAttr(fmt.Sprint("k", i), "v"))
	}
	deepHealth := &protobufs.ComponentHealth{}
	for h, i := deepHealth, 0; i < 40; i++ {
		h.ComponentHealthMap = map[string]*protobufs.ComponentHealth{"c": {}}
		h = h.ComponentHealthMap["c"]
	}
	pkgs := &protobufs.PackageStatuses{Packages: map[string]*protobufs.PackageStatus{}}
	for i := 0; i < 300; i++ {
		pkgs.Packages[fmt.Sprint("p", i)] = &protobufs.PackageStatus{Name: fmt.Sprint("p", i)}
	}
	cases := []struct {
		name, key string
		msg       *protobufs.AgentToServer
	}{
		{"description 3,300 deep", "opamp.limits.nesting_depth", &protobufs.AgentToServer{AgentDescription: &protobufs.AgentDescription{
			NonIdentifyingAttributes: []*protobufs.KeyValue{{Key: "deep", Value: deepValue(3300)}}}}},
		{"description 600 attributes", "opamp.limits.description_attributes", &protobufs.AgentToServer{AgentDescription: many}},
		{"description 100 KiB", "opamp.limits.description_size", &protobufs.AgentToServer{AgentDescription: &protobufs.AgentDescription{
			NonIdentifyingAttributes: []*protobufs.KeyValue{strAttr("big", strings.Repeat("x", 100<<10))}}}},
		{"health 40 deep", "opamp.limits.nesting_depth", &protobufs.AgentToServer{Health: deepHealth}},
		{"effective config 2 MiB", "opamp.limits.effective_config_size", &protobufs.AgentToServer{EffectiveConfig: &protobufs.EffectiveConfig{
			ConfigMap: &protobufs.AgentConfigMap{ConfigMap: map[string]*protobufs.AgentConfigFile{"": {Body: make([]byte, 2<<20)}}}}}},
		{"300 package statuses", "opamp.limits.package_statuses", &protobufs.AgentToServer{PackageStatuses: pkgs}},
		{"package status 10 KiB", "opamp.limits.package_status_size", &protobufs.AgentToServer{PackageStatuses: &protobufs.PackageStatuses{
			Packages: map[string]*protobufs.PackageStatus{"p": {Name: "p", ErrorMessage: strings.Repeat("e", 10<<10)}}}}},
	}
	for i, tc := range cases {
		tc.msg.InstanceUid, tc.msg.SequenceNum = uid, uint64(i+2)
		got := e.mtlsPost(t, a, tc.msg)
		if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest ||
			!strings.Contains(got.ErrorResponse.GetErrorMessage(), tc.key) {
			t.Errorf("%s: answered %v, want BadRequest naming %s", tc.name, got.ErrorResponse, tc.key)
		}
	}
	after, err := e.Admin.Agent(ctx, a.UID.String())
	if err != nil {
		t.Fatal(err)
	}
	if string(after.Description) != string(before.Description) || len(after.Health) > 0 || len(after.PackageStatuses) > 0 {
		t.Fatalf("refused messages changed the record: %s / %s / %s", after.Description, after.Health, after.PackageStatuses)
	}
	// The enrolling path refuses too, before any certificate is issued.
	resp := e.post(t, e.token(1, "10m", nil), &protobufs.AgentToServer{InstanceUid: uuidBytes(),
		AgentDescription: &protobufs.AgentDescription{NonIdentifyingAttributes: []*protobufs.KeyValue{{Key: "deep", Value: deepValue(3300)}}}})
	if got := decode(t, resp); !strings.Contains(got.ErrorResponse.GetErrorMessage(), "opamp.limits.nesting_depth") {
		t.Fatalf("enrolling connection with a deep description: %v", got.ErrorResponse)
	}
}

// TestListingSurvivesHostileRows: one agent whose stored description is
// nested past encoding/json's limit (old data, written straight into the
// database) and one 5 MB description do not blank the fleet listing: it
// answers 200 with every row, the hostile ones marked.
func TestListingSurvivesHostileRows(t *testing.T) {
	e := start(t, "")
	ctx := ctxMinute(t)
	var agents []*loadgen.Agent
	tok := e.token(3, "10m", nil)
	for i := 0; i < 3; i++ {
		a := e.agent("http")
		if err := a.Enroll(ctx, tok); err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	storeRawDescription(t, e.dir.Layout.Root, agents[0].UID.String(), strings.Repeat("[", 11000)+strings.Repeat("]", 11000))
	storeRawDescription(t, e.dir.Layout.Root, agents[1].UID.String(), `{"a":"`+strings.Repeat("x", 5<<20)+`"}`)
	list, err := e.Admin.Agents(ctx, nil)
	if err != nil {
		t.Fatalf("listing with hostile rows: %v", err)
	}
	marked := 0
	for _, g := range list {
		if g.EncodeError != "" {
			marked++
		}
	}
	if len(list) != 3 || marked != 2 {
		t.Fatalf("listing has %d rows (%d marked), want 3 with 2 marked: %+v", len(list), marked, list)
	}
	if g, err := e.Admin.Agent(ctx, agents[0].UID.String()); err != nil || g.EncodeError == "" {
		t.Fatalf("single hostile agent: %v %+v", err, g)
	}
}

// storeRawDescription writes an agent's description straight into the
// SQLite state database, past every check: data from before the limits.
func storeRawDescription(t *testing.T, root, uid, desc string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(root, "state.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(context.Background(), "UPDATE agents SET description = ? WHERE uid = ?", desc, uid)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("no agent row %s", uid)
	}
}

// ctxMinute bounds a test that enrolls several agents: generous, as the
// race detector on a busy machine is slow; nothing asserts on the time.
func ctxMinute(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestWebSocketCompressionNotNegotiated: the size limit counts frame
// payload bytes, which are message bytes only while permessage-deflate is
// off; a client asking for it must not get it.
func TestWebSocketCompressionNotNegotiated(t *testing.T) {
	e := start(t, "")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+e.token(1, "10m", nil))
	c, resp, err := d.Dial(e.url("websocket"), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("server negotiated %q: compressed frames would bypass the size limit", ext)
	}
}
