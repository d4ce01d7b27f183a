package opamp_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/tokens"
)

func hashOf(secret string) []byte { return tokens.Hash(secret) }

func urlValues(q string) (url.Values, error) { return url.ParseQuery(q) }

// dialWS opens a raw OpAMP WebSocket with a bearer token.
func (e *env) dialWS(t *testing.T, token string) *websocket.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	c, resp, err := d.Dial(e.url("websocket"), hdr)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wsExchange sends one message in OpAMP's WebSocket framing (a varint
// header, 0, then the protobuf) and reads one reply.
func wsExchange(t *testing.T, c *websocket.Conn, msg *protobufs.AgentToServer) *protobufs.ServerToAgent {
	t.Helper()
	body, _ := proto.Marshal(msg)
	if err := c.WriteMessage(websocket.BinaryMessage, append(binary.AppendUvarint(nil, 0), body...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	hdr, n := binary.Uvarint(data)
	if n <= 0 || hdr != 0 {
		t.Fatalf("bad OpAMP WebSocket header in %x", data[:min(8, len(data))])
	}
	var out protobufs.ServerToAgent
	if err := proto.Unmarshal(data[n:], &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// mtlsClient is a plain HTTP client presenting an enrolled agent's
// certificate.
func (e *env) mtlsClient(t *testing.T, a *loadgen.Agent) *http.Client {
	t.Helper()
	return e.tlsClient(t, a.Cert(), a.KeyPEM())
}

func (e *env) tlsClient(t *testing.T, certPEM, keyPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
