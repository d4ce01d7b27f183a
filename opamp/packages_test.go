package opamp_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/open-telemetry/opamp-go/protobufs"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"golang.org/x/mod/semver"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/signing"
)

// publisher is a release engineer's key, registered with the server.
type publisher struct {
	signer *signing.Signer
	pub    crypto.PublicKey
}

func newPublisher(t *testing.T, e *env, name string, types ...string) publisher {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	if _, err := e.Admin.AddPublisher(ctx10(t), api.PublisherRequest{Name: name, PublicKey: string(pemBytes), Types: types}); err != nil {
		t.Fatal(err)
	}
	return publisher{s, k.Public()}
}

func (p publisher) publish(t *testing.T, e *env, typ, version string, content []byte) api.Release {
	t.Helper()
	signed, err := p.signer.Sign(context.Background(), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Admin.Publish(ctx10(t), typ, version, "linux/amd64", signed.Bundle, bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fleetAgent is a real opamp-go client that accepts packages and checks
// each the way an agent must: hash (loadgen), then the Sigstore bundle
// against the publisher key, then the downgrade mark.
type fleetAgent struct {
	*loadgen.Agent
	mu     sync.Mutex
	offers []*protobufs.PackagesAvailable
	failed []string
}

func (e *env) fleetAgent(t *testing.T, version string, pub crypto.PublicKey) *fleetAgent {
	t.Helper()
	fa := &fleetAgent{}
	running := version
	var runMu sync.Mutex
	a, err := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.url("ws"), CAPEM: e.CAPEM, Heartbeat: time.Second,
		Packages: &loadgen.PackagesConfig{Type: "otelcol", Version: version, OS: "linux", Arch: "amd64",
			OnOffer: func(pa *protobufs.PackagesAvailable) {
				fa.mu.Lock()
				fa.offers = append(fa.offers, pa)
				fa.mu.Unlock()
			},
			Verify: func(offer *protobufs.PackageAvailable, content []byte) (err error) {
				defer func() {
					if err != nil {
						fa.mu.Lock()
						fa.failed = append(fa.failed, err.Error())
						fa.mu.Unlock()
					}
				}()
				if _, err := signing.Verify(offer.File.Signature, pub, bytes.NewReader(content)); err != nil {
					return fmt.Errorf("signature: %w", err)
				}
				runMu.Lock()
				defer runMu.Unlock()
				if semver.Compare("v"+offer.Version, "v"+running) < 0 {
					mark := ""
					for _, h := range offer.File.GetHeaders().GetHeaders() {
						if h.Key == extension.DowngradeHeader {
							mark = h.Value
						}
					}
					if mark != extension.DowngradeMark(running, offer.Version) {
						return fmt.Errorf("refusing unmarked downgrade %s -> %s", running, offer.Version)
					}
				}
				running = offer.Version
				return nil
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })
	if err := a.Enroll(ctx10(t), e.token(1, "1h", map[string]string{"env": "prod"})); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx10(t), a.UID, nil); err != nil {
		t.Fatal(err)
	}
	fa.Agent = a
	return fa
}

func (fa *fleetAgent) lastOffer() *protobufs.PackageAvailable {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.offers) == 0 {
		return nil
	}
	return fa.offers[len(fa.offers)-1].Packages[""]
}

func (fa *fleetAgent) offerCount() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return len(fa.offers)
}

// waitInstalled waits until the agent runs version with exactly content.
func (fa *fleetAgent) waitInstalled(t *testing.T, version string, content []byte) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if v, b := fa.Installed(); v == version && bytes.Equal(b, content) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	v, _ := fa.Installed()
	fa.mu.Lock()
	defer fa.mu.Unlock()
	t.Fatalf("agent runs %q, want %s (offers %d, refusals %v)", v, version, len(fa.offers), fa.failed)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testPackageOffers(t *testing.T, e *env, presigned bool) {
	pub := newPublisher(t, e, "release-team", "otelcol")
	v1 := bytes.Repeat([]byte("otelcol 1.0.0 build "), 5000)
	v2 := bytes.Repeat([]byte("otelcol 1.1.0 build "), 6000)
	pub.publish(t, e, "otelcol", "1.0.0", v1)
	r2 := pub.publish(t, e, "otelcol", "1.1.0", v2)

	fa := e.fleetAgent(t, "1.0.0", pub.pub)
	// Nothing pinned yet: nothing offered.
	time.Sleep(1500 * time.Millisecond)
	if n := fa.offerCount(); n != 0 {
		t.Fatalf("%d offers before any promotion", n)
	}

	// Upgrade: promote 1.1.0, the connected agent is offered it at once.
	if _, err := e.Admin.Promote(ctx10(t), "otelcol", "1.1.0", nil); err != nil {
		t.Fatal(err)
	}
	fa.waitInstalled(t, "1.1.0", v2)
	offer := fa.lastOffer()
	sum := sha256.Sum256(v2)
	if !bytes.Equal(offer.File.ContentHash, sum[:]) || hex.EncodeToString(offer.File.ContentHash) != r2.SHA256 {
		t.Fatalf("content_hash %x, want %x", offer.File.ContentHash, sum)
	}
	if _, err := signing.Verify(offer.File.Signature, pub.pub, bytes.NewReader(v2)); err != nil {
		t.Fatalf("offered signature does not verify with the publisher key: %v", err)
	}
	if offer.Type != protobufs.PackageType_PackageType_TopLevel || len(offer.Hash) == 0 {
		t.Fatalf("offer %v", offer)
	}
	if isPresigned := strings.Contains(offer.File.DownloadUrl, "X-Amz-Signature="); isPresigned != presigned {
		t.Fatalf("download URL %s: presigned %v, want %v", offer.File.DownloadUrl, isPresigned, presigned)
	}
	waitFor(t, "rollout status installed", func() bool {
		ro, err := e.Admin.Rollout(ctx10(t), "otelcol", "1.1.0")
		return err == nil && ro.Counts["installed"] == 1
	})
	// Heartbeats do not resend an unchanged offer.
	n := fa.offerCount()
	time.Sleep(2500 * time.Millisecond)
	if got := fa.offerCount(); got != n {
		t.Fatalf("offer resent %d times without a change", got-n)
	}

	// Yank: the agent moves back to the previous release, marked as a
	// deliberate downgrade.
	if _, err := e.Admin.Yank(ctx10(t), "otelcol", "1.1.0", "crashes on start"); err != nil {
		t.Fatal(err)
	}
	fa.waitInstalled(t, "1.0.0", v1)
	if off := fa.lastOffer(); off.Version != "1.0.0" || off.File.GetHeaders() == nil {
		t.Fatalf("offer after yank %v, want 1.0.0 marked as a downgrade", off)
	}
	got := e.waitAgent(fa.UID, func(a api.Agent) bool {
		return len(a.Packages) == 1 && a.Packages[0].Version == "1.0.0" && a.Packages[0].State == "installed"
	})
	if p := got.Packages[0]; !p.Downgrade || !strings.Contains(p.Rule, "previous release") {
		t.Fatalf("agent package record %+v, want a downgrade by the yank fallback rule", p)
	}
	if !e.hasAudit("release.promote", "1.1.0") || !e.hasAudit("release.yank", "crashes on start") {
		t.Fatal("promote and yank not audited")
	}
}

func TestPackageOffersFS(t *testing.T) {
	testPackageOffers(t, start(t, ""), false)
}

func TestPackageOffersMinIO(t *testing.T) {
	m := testenv.StartMinIO(t)
	e := startMinIO(t, m, "")
	testPackageOffers(t, e, true)
}

func startMinIO(t *testing.T, m *testenv.MinIO, extra string) *env {
	cfg := fmt.Sprintf("blobs:\n  driver: s3\n  s3:\n    endpoint: %q\n    bucket: releases\n    insecure: true\n%s", m.Endpoint, extra)
	se := servertest.StartWithEnv(t, cfg, map[string]string{"TRUSTAMP_S3_ACCESS_KEY": m.AccessKey, "TRUSTAMP_S3_SECRET_KEY": m.SecretKey})
	return &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
}

// A blob swapped in MinIO after publishing is never offered: the stored
// bytes are hashed before the first offer, the release is quarantined.
func TestTamperedBlobNeverOffered(t *testing.T) {
	m := testenv.StartMinIO(t)
	e := startMinIO(t, m, "")
	pub := newPublisher(t, e, "release-team", "otelcol")
	content := []byte("genuine build")
	r := pub.publish(t, e, "otelcol", "1.2.0", content)
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	evil := []byte("backdoored build")
	if _, err := mc.PutObject(ctx10(t), "releases", "sha256/"+r.SHA256, bytes.NewReader(evil), int64(len(evil)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	fa := e.fleetAgent(t, "1.0.0", pub.pub)
	if _, err := e.Admin.Promote(ctx10(t), "otelcol", "1.2.0", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release quarantined", func() bool {
		rs, err := e.Admin.Packages(ctx10(t), nil)
		return err == nil && len(rs) == 1 && rs[0].State == "quarantined"
	})
	time.Sleep(1500 * time.Millisecond)
	if n := fa.offerCount(); n != 0 {
		t.Fatalf("the tampered release was offered %d times", n)
	}
	if !e.hasAudit("release.quarantine", r.SHA256) {
		t.Fatal("quarantine not audited")
	}
}

// An agent that refuses a release (bad signature here) reports
// InstallFailed; past the threshold the rollout halts and later agents are
// not offered it.
func TestRolloutHaltsOnFailures(t *testing.T) {
	e := start(t, "packages:\n  halt_min_failures: 1\n  halt_failure_rate: 0.5\n")
	pub := newPublisher(t, e, "release-team", "otelcol")
	pub.publish(t, e, "otelcol", "2.0.0", []byte("build 2.0.0"))
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// This agent trusts another key: it refuses the release.
	fa := e.fleetAgent(t, "1.0.0", stranger.Public())
	if _, err := e.Admin.Promote(ctx10(t), "otelcol", "2.0.0", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rollout halted", func() bool {
		rs, err := e.Admin.Packages(ctx10(t), nil)
		return err == nil && len(rs) == 1 && rs[0].State == "halted"
	})
	ro, err := e.Admin.Rollout(ctx10(t), "otelcol", "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if ro.Counts["failed"] != 1 || len(ro.Failures) != 1 || !strings.Contains(ro.Failures[0].Message, "signature") {
		t.Fatalf("rollout %+v, want one failure naming the signature", ro)
	}
	if v, _ := fa.Installed(); v != "1.0.0" {
		t.Fatalf("refusing agent runs %q", v)
	}
	if !e.hasAudit("release.halt", "2.0.0") {
		t.Fatal("halt not audited")
	}
	// A new agent is not offered the halted release.
	late := e.fleetAgent(t, "1.0.0", pub.pub)
	time.Sleep(1500 * time.Millisecond)
	if n := late.offerCount(); n != 0 {
		t.Fatalf("halted release offered %d times to a new agent", n)
	}
}
