package opamp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"testing"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/ca/catest"
	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/storage/state"
)

// FuzzDestinationCSR: any bytes as the data of an io.trustamp.csr "csr"
// custom message from an enrolled agent, through the server's handler
// (JSON, destination, CSR parse and check, issuance, recording). It never
// panics; the answer is exactly one of an error and an offer; an offer's
// certificate is recorded for that destination before it is sent and
// carries nothing of the request but its key.
func FuzzDestinationCSR(f *testing.F) {
	s := benchServer(f)
	s.cfg.Destinations = map[string]Destination{"own_metrics": {Endpoint: "https://metrics.example"}, "vendor": {Endpoint: "https://vendor.example"}}
	uid := uuid.MustParse("01a2279c-0000-7000-8000-000000000002")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	valid := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	seed := func(m extension.CSRMessage) {
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	seed(extension.CSRMessage{Destination: "own_metrics", CSR: valid})
	seed(extension.CSRMessage{Destination: "vendor", Rotation: "r1", CSR: valid})
	seed(extension.CSRMessage{Destination: "opamp", CSR: valid})
	seed(extension.CSRMessage{Destination: "nowhere", CSR: valid})
	for _, c := range catest.Cases() {
		p, err := catest.CSR(c, key, uid, "bench.local")
		if err != nil {
			f.Fatal(err)
		}
		seed(extension.CSRMessage{Destination: "own_metrics", CSR: string(p)})
	}
	f.Add([]byte(`{"destination":"own_metrics","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"destination":"own_metrics"}`))
	ctx := context.Background()
	c := &conn{s: s, kind: kindAgent, uid: uid, uidSet: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		resp := &protobufs.ServerToAgent{}
		c.destinationCSR(ctx, &protobufs.CustomMessage{Capability: CSRCapability, Type: extension.CSRReplyType, Data: data}, resp)
		if (resp.ErrorResponse == nil) == (resp.ConnectionSettings == nil) {
			t.Fatalf("answer has error %v and offer %v: want exactly one", resp.ErrorResponse, resp.ConnectionSettings)
		}
		if resp.ConnectionSettings == nil {
			return
		}
		var m extension.CSRMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("offer for data that is not a CSR message: %v", err)
		}
		var cert *protobufs.TLSCertificate
		switch o := resp.ConnectionSettings; m.Destination {
		case "own_metrics":
			cert = o.GetOwnMetrics().GetCertificate()
		default:
			cert = o.GetOtherConnections()[m.Destination].GetCertificate()
		}
		chain, err := ca.ParseCertificates(cert.GetCert())
		if err != nil {
			t.Fatalf("offer for %q carries no certificate: %v", m.Destination, err)
		}
		if err := catest.ProfileOnly(chain[0], catest.Want{UID: uid, TrustDomain: "bench.local"}); err != nil {
			t.Fatal(err)
		}
		err = s.cfg.Store.View(ctx, func(tx *state.Tx) error {
			rec, err := tx.CertificateBySerial(ctx, hex.EncodeToString(chain[0].SerialNumber.Bytes()))
			if err == nil && (rec.Destination != m.Destination || rec.UID != uid.String()) {
				t.Fatalf("recorded for %s/%s, offered for %s/%s", rec.UID, rec.Destination, uid, m.Destination)
			}
			return err
		})
		if err != nil {
			t.Fatalf("offered certificate not recorded: %v", err)
		}
	})
}
