package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/trustamp/trustamp/internal/atomicfile"
)

// RotateRoot replaces the root, in the way that strands no agent:
//
//  1. a new root is made (root-next.pem, its key stored first);
//  2. a new intermediate is made under the new root;
//  3. the roots swap (the old one becomes root-previous.pem);
//  4. the intermediates swap, and the previous root cross-signs the new
//     intermediate (bridge.pem: same subject and key, issued by the previous
//     root).
//
// New certificates are sent with both the intermediate and the bridge, so
// they verify under the new root (leaf → intermediate → new root) and under
// the previous one (leaf → bridge → previous root, one intermediate, within
// the path length the previous root allows). Every offer's ca_cert (and
// /v1/ca.pem) carries both roots, so agents learn the new one. FinishRootRollover ends the overlap once agents
// have it. Each step leaves files a rerun picks up, so an interrupted
// rollover is finished by running it again.
func (a *Authority) RotateRoot(ctx context.Context) (old, next *x509.Certificate, err error) {
	f := a.cfg.Files
	cur := a.cur.Load()
	if fileExists(f.RootPrevious()) && !fileExists(f.RootNext()) {
		// Either a rollover is waiting to be finished, or it was interrupted
		// after the roots swapped: finish the intermediate swap.
		if fileExists(f.Next()) {
			prev, _, err := readCert(f.RootPrevious())
			if err != nil {
				return nil, nil, err
			}
			if _, _, err := a.RotateIntermediate(ctx); err != nil {
				return nil, nil, err
			}
			return prev, a.cur.Load().root, nil
		}
		return nil, nil, errors.New("ca: a root rollover is in its overlap: run it with --finish once agents trust the new root, before starting another")
	}
	old = cur.root
	next, _, err = readCert(f.RootNext())
	if errors.Is(err, os.ErrNotExist) {
		next, err = a.makeRoot(ctx, old)
	}
	if err != nil {
		return nil, nil, err
	}
	nextKey, err := a.rootKey(ctx, next)
	if err != nil {
		return nil, nil, err
	}
	if inter, _, err := readCert(f.Next()); err != nil || inter.CheckSignatureFrom(next) != nil {
		if _, err := a.makeIntermediateUnder(ctx, next, nextKey); err != nil {
			return nil, nil, err
		}
	}
	oldPEM, err := os.ReadFile(f.Root())
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if err := atomicfile.Write(f.RootPrevious(), oldPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if err := os.Rename(f.RootNext(), f.Root()); err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	// load accepts an intermediate under either root, so the server keeps
	// issuing between the two swaps.
	if err := a.load(ctx); err != nil {
		return nil, nil, err
	}
	if _, _, err := a.RotateIntermediate(ctx); err != nil {
		return nil, nil, err
	}
	return old, next, nil
}

// FinishRootRollover ends a root rollover's overlap: the previous root and
// the bridge are no longer sent or trusted. Certificates still chaining only
// to the previous root (issued before the rollover and not yet rotated)
// stop verifying, so finish after at least one certificate lifetime.
func (a *Authority) FinishRootRollover(ctx context.Context) error {
	f := a.cfg.Files
	if !fileExists(f.RootPrevious()) {
		return errors.New("ca: no root rollover to finish")
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	for _, p := range []string{f.RootPrevious(), f.Bridge()} {
		if fileExists(p) {
			if err := os.Rename(p, p+".retired-"+stamp); err != nil {
				return fmt.Errorf("ca: %w", err)
			}
		}
	}
	return a.load(ctx)
}

func (a *Authority) makeRoot(ctx context.Context, old *x509.Certificate) (*x509.Certificate, error) {
	tmpl := caTemplate(pkix.Name{CommonName: "trustamp root CA", Organization: old.Subject.Organization}, a.cfg.Clock(), rootLifetime, 1)
	return a.mintCA(ctx, rootKeyPrefix, tmpl, nil, nil, a.cfg.Files.RootNext())
}

// makeBridge writes inter's subject and key certified by the previous root:
// the path by which agents that trust only the previous root reach it.
func (a *Authority) makeBridge(prevRoot *x509.Certificate, prevKey crypto.Signer, inter *x509.Certificate) error {
	tmpl := caTemplate(inter.Subject, a.cfg.Clock(), intermediateLifetime, 0)
	tmpl.SubjectKeyId = inter.SubjectKeyId
	tmpl.NotAfter = inter.NotAfter
	if tmpl.NotAfter.After(prevRoot.NotAfter) {
		tmpl.NotAfter = prevRoot.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, prevRoot, inter.PublicKey, prevKey)
	if err != nil {
		return fmt.Errorf("ca: cross-sign the new intermediate: %w", err)
	}
	return atomicfile.Write(a.cfg.Files.Bridge(), pemCert(der), 0o644)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
