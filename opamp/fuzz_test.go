package opamp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/loadgen"
)

// FuzzAgentToServer sends fuzzed AgentToServer bytes to a live server from
// an enrolled agent over mTLS (plain HTTP: one request per input). When the
// bytes parse and keepUID is set, the message is sent with the agent's own
// instance_uid so it reaches the registry, CSR, package and destination
// paths rather than the impersonation check. After each input: the server
// answered (a panic closes the connection), a normal message is still
// served, and the agent's record and the fleet listing still encode.
func FuzzAgentToServer(f *testing.F) {
	se := servertest.Start(f, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := se.Admin.CreateToken(ctx, api.TokenRequest{Uses: 1, TTL: "1h"})
	if err != nil {
		f.Fatal(err)
	}
	a, err := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: se.URL("http"), CAPEM: se.CAPEM})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Stop(context.Background()) })
	if err := a.Enroll(ctx, tok.Token); err != nil {
		f.Fatal(err)
	}
	uid := a.UID[:]
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(se.CAPEM)
	pair, err := tls.X509KeyPair(a.Cert(), a.KeyPEM())
	if err != nil {
		f.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	post := func(t *testing.T, body []byte) (int, *protobufs.ServerToAgent) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, se.URL("http"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("no answer (a server panic closes the connection): %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode, nil
		}
		var out protobufs.ServerToAgent
		if err := proto.Unmarshal(b, &out); err != nil {
			t.Fatalf("HTTP 200 with an undecodable ServerToAgent: %v", err)
		}
		return resp.StatusCode, &out
	}

	for _, m := range fuzzSeeds(f, uid) {
		b, _ := proto.Marshal(m)
		f.Add(b, true)
	}
	f.Add([]byte{0x0a, 0x10}, false)
	f.Fuzz(func(t *testing.T, data []byte, keepUID bool) {
		body := data
		var msg protobufs.AgentToServer
		if keepUID && proto.Unmarshal(data, &msg) == nil {
			msg.InstanceUid = uid
			body, _ = proto.Marshal(&msg)
		}
		switch code, _ := post(t, body); code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("fuzzed message answered HTTP %d", code)
		}
		hb, _ := proto.Marshal(&protobufs.AgentToServer{InstanceUid: uid, SequenceNum: 1})
		code, out := post(t, hb)
		if code != http.StatusOK || out.ErrorResponse != nil {
			t.Fatalf("normal message after a fuzzed one: HTTP %d %v", code, out.GetErrorResponse())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := se.Admin.Agent(ctx, a.UID.String()); err != nil {
			t.Fatalf("agent record unreadable after a fuzzed message: %v", err)
		}
		if list, err := se.Admin.Agents(ctx, nil); err != nil || len(list) != 1 {
			t.Fatalf("fleet listing after a fuzzed message: %d rows, %v", len(list), err)
		}
	})
}

// fuzzSeeds are valid messages of every kind an agent sends.
func fuzzSeeds(f *testing.F, uid []byte) []*protobufs.AgentToServer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	desc := &protobufs.AgentDescription{
		IdentifyingAttributes:    []*protobufs.KeyValue{strAttr("service.name", "otelcol"), strAttr("service.version", "0.149.0")},
		NonIdentifyingAttributes: []*protobufs.KeyValue{strAttr("os.type", "linux"), {Key: "nested", Value: deepValue(3)}},
	}
	return []*protobufs.AgentToServer{
		{InstanceUid: uid, SequenceNum: 1, Capabilities: 0x3fff, AgentDescription: desc,
			Health: &protobufs.ComponentHealth{Healthy: true, ComponentHealthMap: map[string]*protobufs.ComponentHealth{"pipeline": {Healthy: true}}}},
		{InstanceUid: uid, SequenceNum: 2, AgentDescription: desc},
		{InstanceUid: uid, SequenceNum: 3, ConnectionSettingsRequest: &protobufs.ConnectionSettingsRequest{
			Opamp: &protobufs.OpAMPConnectionSettingsRequest{CertificateRequest: &protobufs.CertificateRequest{Csr: csr}}}},
		{InstanceUid: uid, SequenceNum: 4, PackageStatuses: &protobufs.PackageStatuses{Packages: map[string]*protobufs.PackageStatus{
			"": {Name: "", AgentHasVersion: "1.0.0", Status: protobufs.PackageStatusEnum_PackageStatusEnum_InstallFailed, ErrorMessage: "boom"}}}},
		{InstanceUid: uid, SequenceNum: 5, EffectiveConfig: &protobufs.EffectiveConfig{ConfigMap: &protobufs.AgentConfigMap{
			ConfigMap: map[string]*protobufs.AgentConfigFile{"": {Body: []byte("receivers: {}"), ContentType: "text/yaml"}}}}},
		{InstanceUid: uid, SequenceNum: 6, ConnectionSettingsStatus: &protobufs.ConnectionSettingsStatus{
			LastConnectionSettingsHash: []byte{1, 2, 3}, Status: protobufs.ConnectionSettingsStatuses_ConnectionSettingsStatuses_FAILED}},
		{InstanceUid: uid, SequenceNum: 7, CustomMessage: &protobufs.CustomMessage{Capability: "io.trustamp.csr", Type: "csr", Data: csr}},
		{InstanceUid: uid, SequenceNum: 8, Flags: uint64(protobufs.AgentToServerFlags_AgentToServerFlags_RequestInstanceUid)},
		{InstanceUid: uid, SequenceNum: 9, AgentDisconnect: &protobufs.AgentDisconnect{}},
	}
}
