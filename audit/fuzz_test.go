package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"
)

// fuzzKey is a fixed audit key, so the seed export is the same on every run.
func fuzzKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

// seedExport is a real export: six entries, two signed checkpoints.
func seedExport(f *testing.F) []byte {
	ctx := context.Background()
	s, _ := openSQLite(f)
	key := fuzzKey()
	l := New(Config{Clock: fixedClock(), Key: key})
	appendN(f, l, s, 3)
	l.Checkpoint(ctx, s)
	appendN(f, l, s, 3)
	l.Checkpoint(ctx, s)
	var buf bytes.Buffer
	if _, err := Export(ctx, &buf, s, ExportOptions{PublicKey: key.Public().(ed25519.PublicKey), Now: time.Unix(1e9, 0)}); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzVerifyExport feeds arbitrary bytes to the export parser and verifier,
// with the right key, with none (the header's key) and with another key.
// It must never panic, never accept an export that does not verify under
// the key it was given, and hold at most one line plus the checkpoints.
func FuzzVerifyExport(f *testing.F) {
	good := seedExport(f)
	f.Add(good)
	lines := strings.Split(string(good), "\n")
	f.Add([]byte(strings.Join(lines[:len(lines)-2], "\n")))                                    // last entry cut
	f.Add([]byte(strings.Join(append(lines[:3:3], lines[4:]...), "\n")))                       // one line removed
	f.Add([]byte(strings.Replace(string(good), "agent-1", "agent-7", 1)))                      // one entry edited
	f.Add([]byte(strings.Replace(string(good), `"seq":2`, `"seq":9`, 1)))                      // a checkpoint moved
	f.Add([]byte(lines[0] + "\n" + lines[0]))                                                  // two headers
	f.Add([]byte(lines[0] + "\n" + `{"type":"entry","seq":1,"details":[[[[[[[[[[]]]]]]]]]]}`)) // details not an object
	f.Add([]byte(lines[0] + "\n" + `{"type":"checkpoint","seq":-1,"head_hash":"zz"}`))
	f.Add([]byte(`{"type":"header","format":"trustamp-audit/v1","public_key":"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"}`))
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	pub := fuzzKey().Public().(ed25519.PublicKey)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, embedded, err := VerifyExport(bytes.NewReader(data), pub)
		if err == nil && (embedded != nil || !rep.SignaturesChecked) {
			t.Fatalf("verified with a given key but reported embedded=%v signatures=%v", embedded, rep.SignaturesChecked)
		}
		if err == nil && rep.Checkpoints > 0 {
			// A checkpoint that verified under pub cannot verify under another key.
			if _, _, err := VerifyExport(bytes.NewReader(data), other); err == nil {
				t.Fatal("checkpoints verified under two different keys")
			}
		}
		VerifyExport(bytes.NewReader(data), nil)
	})
}
