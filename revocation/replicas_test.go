package revocation_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/revocation"
)

// TestRevocationReachesEveryReplica runs two replicas on one PostgreSQL
// database: an agent connected to replica 1 is revoked through replica 2,
// and replica 1 closes its connection, refuses it at handshake and serves
// the new CRL, with nothing but the shared database between them.
func TestRevocationReachesEveryReplica(t *testing.T) {
	pg := testenv.StartPostgres(t)
	env := map[string]string{"TRUSTAMP_POSTGRES_DSN": pg.NewDatabase(t)}
	root := filepath.Join(t.TempDir(), "data")
	r1 := servertest.StartInWithEnv(t, root, "state:\n  driver: postgres\nopamp:\n  replica_id: r1\n", env)
	f1 := &fleet{t: t, env: r1, ctx: context.Background(), http: newFleetHTTP(r1)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f1.ctx = ctx
	a := f1.agent(nil)
	serial := leaf(t, a.Cert()).SerialNumber

	r2 := servertest.StartInWithEnv(t, root, "state:\n  driver: postgres\nopamp:\n  replica_id: r2\n", env)
	res, err := r2.Admin.Revoke(ctx, api.RevocationRequest{UIDs: []string{a.UID.String()}, Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ClosedConnections != 0 {
		t.Fatalf("replica 2 closed %d connections; the agent is on replica 1", res.ClosedConnections)
	}
	f1.eventually("replica 1 closes the revoked agent's connection", func() bool {
		return r1.Server.OpAMP.Connected(a.UID.String()) == 0
	})
	if err := f1.reconnect(a); !isRefused(err) {
		t.Fatalf("reconnect to replica 1: %v, want 401", err)
	}
	f1.eventually("replica 1 serves the new CRL", func() bool {
		_, ok := crlEntry(f1.crl(), serial)
		return ok
	})
	rep := waitReport(t, f1, r2.Admin, time.Now().Add(-time.Hour), func(rep revocation.Report) bool {
		return len(rep.Revocations) == 1 && rep.Revocations[0].LastDisconnectAt != nil
	})
	if row := rep.Revocations[0]; row.ClosedConnections != 1 || row.PropagationMillis == nil {
		t.Fatalf("report row %+v: want the close on replica 1 recorded", row)
	}
}
