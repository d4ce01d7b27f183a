package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/opamp/extension"
)

// installedPkgs is a provider with version running installed (no command),
// trusting pub.
func installedPkgs(t *testing.T, pub publisher, running string) *diskPackages {
	t.Helper()
	p, err := openPackages(filepath.Join(t.TempDir(), pkgDir), []crypto.PublicKey{pub.pub})
	if err != nil {
		t.Fatal(err)
	}
	sup := &supervisor{pkgs: p, health: time.Second, logf: t.Logf}
	p.install = sup.install
	if running != "" {
		content := healthy(t, running)
		if err := p.deliver(t, pub, running, content, nil); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// deliver runs an offer of content as version through UpdateContent, as
// opamp-go's syncer would; signer signs it (nil: pub).
func (p *diskPackages) deliver(t *testing.T, signer publisher, version string, content []byte, headers *protobufs.Headers) error {
	t.Helper()
	sum := sha256.Sum256(content)
	bundle := signer.sign(t, content)
	p.offer(&protobufs.PackagesAvailable{Packages: map[string]*protobufs.PackageAvailable{"": {
		Version: version, Type: protobufs.PackageType_PackageType_TopLevel,
		File: &protobufs.DownloadableFile{ContentHash: sum[:], Signature: bundle, Headers: headers}}}})
	return p.UpdateContent(context.Background(), "", bytes.NewReader(content), sum[:], bundle)
}

// Each refusal is an error naming why, installs nothing, and leaves the
// running version as it was.
func TestPackageRefusals(t *testing.T) {
	pub, stranger := newPublisher(t, nil), newPublisher(t, nil)
	content := healthy(t, "2.0.0")
	sum := sha256.Sum256(content)
	tests := []struct {
		name string
		do   func(p *diskPackages) error
		want string
	}{
		{"wrong hash", func(p *diskPackages) error {
			p.offer(&protobufs.PackagesAvailable{Packages: map[string]*protobufs.PackageAvailable{"": {Version: "2.0.0"}}})
			tampered := append(bytes.Clone(content), 0)
			return p.UpdateContent(context.Background(), "", bytes.NewReader(tampered), sum[:], pub.sign(t, content))
		}, "content hash mismatch"},
		{"bad signature", func(p *diskPackages) error {
			p.offer(&protobufs.PackagesAvailable{Packages: map[string]*protobufs.PackageAvailable{"": {Version: "2.0.0"}}})
			return p.UpdateContent(context.Background(), "", bytes.NewReader(content), sum[:], pub.sign(t, []byte("other bytes")))
		}, "signature does not verify"},
		{"unknown publisher key", func(p *diskPackages) error { return p.deliver(t, stranger, "2.0.0", content, nil) },
			"signature does not verify against any configured publisher key"},
		{"no signature", func(p *diskPackages) error {
			p.offer(&protobufs.PackagesAvailable{Packages: map[string]*protobufs.PackageAvailable{"": {Version: "2.0.0"}}})
			return p.UpdateContent(context.Background(), "", bytes.NewReader(content), sum[:], nil)
		}, "no signature"},
		{"unmarked lower version", func(p *diskPackages) error { return p.deliver(t, pub, "0.9.0", healthy(t, "0.9.0"), nil) },
			"refusing downgrade 1.0.0 -> 0.9.0: the offer is not marked"},
		{"mark for another move", func(p *diskPackages) error {
			h := &protobufs.Headers{Headers: []*protobufs.Header{{Key: extension.DowngradeHeader, Value: extension.DowngradeMark("1.5.0", "0.9.0")}}}
			return p.deliver(t, pub, "0.9.0", healthy(t, "0.9.0"), h)
		}, "does not name this move"},
		{"path escape", func(p *diskPackages) error { return p.deliver(t, pub, "2.0.0", tarWith(t, "../evil", "x"), nil) },
			"escapes the package directory"},
		{"not a version", func(p *diskPackages) error { return p.deliver(t, pub, "../1.0", content, nil) }, "not a semantic version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := installedPkgs(t, pub, "1.0.0")
			err := tt.do(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if v, _ := p.Current(); v != "1.0.0" {
				t.Fatalf("running %q after a refusal, want 1.0.0", v)
			}
			ents, _ := os.ReadDir(filepath.Join(p.dir, versionsDir))
			if len(ents) != 1 || ents[0].Name() != "1.0.0" {
				t.Fatalf("versions on disk after a refusal: %v", ents)
			}
		})
	}
	// Without publisher keys nothing is installed at all.
	p, _ := openPackages(filepath.Join(t.TempDir(), pkgDir), nil)
	p.install = func(context.Context, string) error { t.Fatal("installed without publisher keys"); return nil }
	if err := p.deliver(t, pub, "1.0.0", content, nil); err == nil || !strings.Contains(err.Error(), "no publisher keys") {
		t.Fatalf("no publisher keys: %v", err)
	}
	// A marked downgrade passes.
	marked := installedPkgs(t, pub, "1.0.0")
	h := &protobufs.Headers{Headers: []*protobufs.Header{{Key: extension.DowngradeHeader, Value: extension.DowngradeMark("1.0.0", "0.9.0")}}}
	if err := marked.deliver(t, pub, "0.9.0", healthy(t, "0.9.0"), h); err != nil {
		t.Fatal(err)
	}
	if v, _ := marked.Current(); v != "0.9.0" {
		t.Fatalf("after a marked downgrade %s runs", v)
	}
}

// A crash mid-rotation: the offered certificate was saved but the agent
// died before it connected with it. The next start tries it first and,
// once connected, makes it current; a next certificate that cannot connect
// is dropped for the current one.
func TestRestartAfterCrashMidRotation(t *testing.T) {
	env := servertest.Start(t, "")
	dir := t.TempDir()
	r := startAgent(t, env, dir, token(t, env), nil)
	waitFor(t, "connected", func() bool { return r.connected(env) })
	first := r.Serial()
	r.stop(t)

	r = startAgent(t, env, dir, "", nil)
	killed := make(chan struct{})
	r.mu.Lock()
	r.afterSave = func() { r.cancel(); close(killed) } // dies right after persisting
	r.mu.Unlock()
	waitFor(t, "connected", func() bool { return r.connected(env) })
	if _, err := env.Admin.Rotate(ctx(t), api.RotationRequest{UIDs: []string{r.UID().String()}}); err != nil {
		t.Fatal(err)
	}
	<-killed
	r.stop(t)
	d := stateDir{dir}
	next, err := d.load(nextFile)
	if err != nil || next == nil {
		t.Fatalf("no saved offer after the crash: %v", err)
	}
	if cur, _ := d.load(credsFile); cur.serial() != first {
		t.Fatal("the offer became current before any connection with it")
	}

	r = startAgent(t, env, dir, "", nil)
	waitFor(t, "connected with the new certificate", func() bool {
		return r.Serial() == next.serial() && env.Server.OpAMP.Connected(r.UID().String()) == 1
	})
	if _, err := os.Stat(filepath.Join(dir, nextFile)); !os.IsNotExist(err) {
		t.Fatalf("next credentials left after promotion: %v", err)
	}
	r.stop(t)

	// A next certificate the server refuses (self-signed) is dropped.
	cur, _ := d.load(credsFile)
	if err := d.save(nextFile, selfSigned(t, cur.key, r.UID().String())); err != nil {
		t.Fatal(err)
	}
	r = startAgent(t, env, dir, "", nil)
	waitFor(t, "connected with the current certificate", func() bool { return r.connected(env) })
	if r.Serial() != cur.serial() {
		t.Fatalf("serial %s, want the current %s", r.Serial(), cur.serial())
	}
	if _, err := os.Stat(filepath.Join(dir, nextFile)); !os.IsNotExist(err) {
		t.Fatalf("refused next credentials kept: %v", err)
	}
}

func selfSigned(t *testing.T, key crypto.Signer, cn string) *credentials {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCredentials(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tarWith(t *testing.T, name, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	tw.Write([]byte(body))
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// A crash mid-install: the new version was switched to but never proved
// itself. The next start gives it the health window again and rolls it
// back when it fails.
func TestRestartAfterCrashMidInstall(t *testing.T) {
	pub := newPublisher(t, nil)
	p := installedPkgs(t, pub, "1.0.0")
	// Unpack 1.1.0 (broken) and switch to it with a trial on record, as an
	// install that was killed before its health window ended.
	content := broken(t)
	sum := sha256.Sum256(content)
	tmp := filepath.Join(t.TempDir(), "pkg.tgz")
	os.WriteFile(tmp, content, 0o600)
	if err := p.unpack(tmp, "1.1.0", sum[:]); err != nil {
		t.Fatal(err)
	}
	if err := p.startTrial(trial{From: "1.0.0", To: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	if err := p.switchTo("1.1.0"); err != nil {
		t.Fatal(err)
	}
	// A leftover half-unpacked directory from the same crash.
	os.MkdirAll(filepath.Join(p.dir, versionsDir, ".1.2.0.123"), 0o700)

	reopened, err := openPackages(p.dir, []crypto.PublicKey{pub.pub})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(p.dir, versionsDir, ".1.2.0.123")); !os.IsNotExist(err) {
		t.Fatal("half-unpacked directory not cleaned up")
	}
	sup := &supervisor{command: []string{"/bin/sh", PackagePlaceholder + "/bin/run.sh"}, pkgs: reopened, health: time.Second,
		stdout: os.Stderr, stderr: os.Stderr, logf: t.Logf}
	defer sup.close()
	if err := sup.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := reopened.Current(); v != "1.0.0" {
		t.Fatalf("after recovery %s is in force, want the rollback to 1.0.0", v)
	}
	if _, ok := reopened.pendingTrial(); ok {
		t.Fatal("trial left after recovery")
	}
	sup.mu.Lock()
	running := sup.running
	sup.mu.Unlock()
	if running == nil || running.version != "1.0.0" {
		t.Fatalf("running %+v after recovery, want 1.0.0", running)
	}
}

// The renewal timer fires at 2/3 of the certificate's life, less up to 5%
// of it, and never in the past.
func TestUntilRenewal(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := selfSigned(t, key, "u")
	life := c.leaf.NotAfter.Sub(c.leaf.NotBefore)
	a := &Agent{cfg: Config{RenewAt: 2.0 / 3.0}}
	due := c.leaf.NotBefore.Add(life * 2 / 3)
	for range 50 {
		d := a.untilRenewal(c)
		at := time.Now().Add(d)
		if at.After(due.Add(time.Second)) || at.Before(due.Add(-life/20-time.Second)) {
			t.Fatalf("renews at %v, want within 5%% of life before %v", at, due)
		}
	}
	old := selfSigned(t, key, "u")
	old.leaf.NotBefore, old.leaf.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	if d := a.untilRenewal(old); d != time.Second {
		t.Fatalf("an overdue certificate renews in %v, want at once (1s)", d)
	}
}
