package release

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/signing"
	"github.com/trustamp/trustamp/storage/blob"
	"github.com/trustamp/trustamp/storage/state"
)

type key struct {
	signer *signing.Signer
	pubPEM []byte
}

func newKey(t testing.TB) key {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	return key{s, pub}
}

func (k key) sign(t testing.TB, artifact []byte) []byte {
	signed, err := k.signer.Sign(context.Background(), bytes.NewReader(artifact))
	if err != nil {
		t.Fatal(err)
	}
	return signed.Bundle
}

func newService(t *testing.T, blobs blob.Store) (*Service, *state.Store) {
	return newServiceTB(t, blobs)
}

func newServiceTB(t testing.TB, blobs blob.Store) (*Service, *state.Store) {
	store, err := state.Open(context.Background(), state.Config{SQLitePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	_, ak, _ := ed25519.GenerateKey(rand.Reader)
	s, err := New(Config{Store: store, Audit: audit.New(audit.Config{Key: ak}), Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	return s, store
}

func fsBlobs(t *testing.T) blob.Store {
	b, err := blob.NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testPublish(t *testing.T, blobs blob.Store) {
	ctx := context.Background()
	s, _ := newService(t, blobs)
	team, stranger, fluent := newKey(t), newKey(t), newKey(t)
	if _, err := s.AddPublisher(ctx, "release-team", team.pubPEM, []string{"otelcol"}, "admin:x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPublisher(ctx, "fluent-team", fluent.pubPEM, []string{"fluent-bit"}, "admin:x"); err != nil {
		t.Fatal(err)
	}
	artifact := bytes.Repeat([]byte("otelcol-0.115.0 "), 50_000)
	pub := Publish{Type: "otelcol", Version: "0.115.0", Platform: "linux/amd64", Bundle: team.sign(t, artifact), Actor: "admin:r"}
	r, err := s.Publish(ctx, pub, bytes.NewReader(artifact))
	if err != nil {
		t.Fatal(err)
	}
	if r.Publisher != "release-team" || r.Size != int64(len(artifact)) || r.State != state.ReleaseActive {
		t.Fatalf("release %+v", r)
	}
	rc, err := blobs.Get(ctx, r.SHA256, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(stored, artifact) {
		t.Fatal("stored blob differs from the artifact")
	}
	// Same release again: idempotent.
	if again, err := s.Publish(ctx, pub, bytes.NewReader(artifact)); err != nil || again.ID != r.ID {
		t.Fatalf("republish: %+v %v", again, err)
	}

	refused := func(name string, p Publish, body []byte, want error) {
		t.Helper()
		_, err := s.Publish(ctx, p, bytes.NewReader(body))
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", name, err, want)
		}
		d, _ := signing.BundleDigest(p.Bundle)
		if d != nil {
			if _, err := blobs.Stat(ctx, signing.DigestHex(d)); !errors.Is(err, blob.ErrNotFound) && want != ErrConflict {
				t.Fatalf("%s left a blob: %v", name, err)
			}
		}
		rs, _ := s.List(ctx, state.ReleaseFilter{Version: p.Version})
		if len(rs) != 0 && p.Version != "0.115.0" {
			t.Fatalf("%s left a release record: %+v", name, rs)
		}
	}
	other := []byte("otelcol-0.116.0")
	refused("unknown publisher", Publish{Type: "otelcol", Version: "0.116.0", Platform: "linux/amd64",
		Bundle: stranger.sign(t, other), Actor: "a"}, other, ErrUntrusted)
	refused("publisher of another type", Publish{Type: "otelcol", Version: "0.116.0", Platform: "linux/amd64",
		Bundle: fluent.sign(t, other), Actor: "a"}, other, ErrWrongType)
	refused("bytes not the signed ones", Publish{Type: "otelcol", Version: "0.116.0", Platform: "linux/amd64",
		Bundle: team.sign(t, other), Actor: "a"}, []byte("otelcol-0.116.0 with a backdoor"), ErrHashMismatch)
	refused("same version, other bytes", Publish{Type: "otelcol", Version: "0.115.0", Platform: "linux/amd64",
		Bundle: team.sign(t, other), Actor: "a"}, other, ErrConflict)
	refused("not semver", Publish{Type: "otelcol", Version: "latest", Platform: "linux/amd64",
		Bundle: team.sign(t, other), Actor: "a"}, other, ErrInvalid)
	refused("bad platform", Publish{Type: "otelcol", Version: "0.117.0", Platform: "linux",
		Bundle: team.sign(t, other), Actor: "a"}, other, ErrInvalid)
	refused("garbage bundle", Publish{Type: "otelcol", Version: "0.117.0", Platform: "linux/amd64",
		Bundle: []byte("{}"), Actor: "a"}, other, ErrInvalid)

	// Yank.
	if _, err := s.Yank(ctx, "otelcol", "0.115.0", "", "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("yank without a reason: %v", err)
	}
	y, err := s.Yank(ctx, "otelcol", "0.115.0", "crashes on arm", "security:s")
	if err != nil || len(y) != 1 || y[0].State != state.ReleaseYanked {
		t.Fatalf("yank: %+v %v", y, err)
	}
	if _, err := s.Yank(ctx, "otelcol", "9.9.9", "x", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("yank of an unknown version: %v", err)
	}
}

func TestPublishFS(t *testing.T) { testPublish(t, fsBlobs(t)) }

// TestPublishMinIO runs the same against a real MinIO.
func TestPublishMinIO(t *testing.T) {
	m := testenv.StartMinIO(t)
	b, err := blob.NewS3(context.Background(), blob.S3Config{Endpoint: m.Endpoint, Bucket: "releases",
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	testPublish(t, b)
}

// failingBlobs fails every Put, as a storage outage does.
type failingBlobs struct{ blob.Store }

func (failingBlobs) Put(context.Context, io.Reader, blob.PutOptions) (blob.Object, error) {
	return blob.Object{}, errors.New("connection refused")
}

func TestStorageOutageLeavesNoRecord(t *testing.T) {
	ctx := context.Background()
	fs := fsBlobs(t)
	s, _ := newService(t, failingBlobs{fs})
	team := newKey(t)
	s.AddPublisher(ctx, "team", team.pubPEM, nil, "a")
	artifact := []byte("build")
	_, err := s.Publish(ctx, Publish{Type: "otelcol", Version: "1.0.0", Platform: "linux/amd64", Bundle: team.sign(t, artifact), Actor: "a"},
		bytes.NewReader(artifact))
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("publish during an outage: %v", err)
	}
	if rs, _ := s.List(ctx, state.ReleaseFilter{}); len(rs) != 0 {
		t.Fatalf("a release was recorded without its blob: %+v", rs)
	}
}
