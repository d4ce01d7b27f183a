package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// entry is one tar entry of a test archive.
type entry struct {
	name     string
	typ      byte
	body     string
	size     int64 // declared size when body is empty (0: len(body))
	link     string
	mode     int64
	pax      map[string]string
	zeroBody int64 // a body of this many zero bytes, compressed to almost nothing
}

// tarGz builds a gzip-compressed tar of entries. Headers are written as
// given, so archives can declare what the writer would refuse to produce
// (a size it never delivers).
func tarGz(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, PAXRecords: e.pax,
			Size: int64(len(e.body)) + e.zeroBody}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if h.Typeflag != tar.TypeReg && e.size == 0 {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: h.Typeflag, PAXRecords: h.PAXRecords}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		tw.Write([]byte(e.body))
		if e.zeroBody > 0 {
			tw.Write(make([]byte, e.zeroBody))
		}
	}
	tw.Flush() // not Close: a declared size may be left undelivered on purpose
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// fuzzLimits are small enough that every bound is reachable by the fuzzer.
var fuzzLimits = extractLimits{maxBytes: 64 << 10, maxEntries: 64}

// extractInto extracts archive into <TempDir>/pkg and returns the error and
// the temp dir, after checking what every extraction must leave behind,
// whatever the archive: nothing outside pkg, only regular files and
// directories, at most lim's bytes, no group/world write or special bits.
func extractInto(t *testing.T, archive []byte, lim extractLimits) (string, error) {
	t.Helper()
	parent := t.TempDir()
	target := filepath.Join(parent, "pkg")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	err := extractTarGz(bytes.NewReader(archive), target, lim)
	var total int64
	werr := filepath.WalkDir(parent, func(path string, d fs.DirEntry, werr error) error {
		if werr != nil {
			return werr
		}
		if path == parent {
			return nil
		}
		if rel, _ := filepath.Rel(target, path); rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			t.Errorf("extraction wrote %s, outside the target %s (archive error: %v)", path, target, err)
		}
		fi, ierr := d.Info()
		if ierr != nil {
			return ierr
		}
		switch m := fi.Mode(); {
		case m.IsRegular():
			total += fi.Size()
		case m.IsDir():
		default:
			t.Errorf("extraction created %s with mode %v: only regular files and directories are allowed", path, m)
		}
		if m := fi.Mode(); m.Perm()&0o022 != 0 || m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("extraction created %s with mode %v: group/world-writable or special bits", path, m)
		}
		return nil
	})
	if werr != nil {
		t.Fatal(werr)
	}
	if total > lim.bytes() {
		t.Errorf("extraction wrote %d bytes of files, over the %d-byte cap (archive error: %v)", total, lim.bytes(), err)
	}
	return parent, err
}

// archiveSeeds are the hostile archives a publisher's mistake or a
// compromised build could produce, and a valid one.
func archiveSeeds(t testing.TB) map[string][]byte {
	valid := tarGz(t, entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/agent", typ: tar.TypeReg, body: "#!/bin/sh\nexit 0\n", mode: 0o755},
		entry{name: "README", typ: tar.TypeReg, body: "hello\n"})
	return map[string][]byte{
		"valid":          valid,
		"dotdot":         tarGz(t, entry{name: "../evil", typ: tar.TypeReg, body: "x"}),
		"nested dotdot":  tarGz(t, entry{name: "a/../../evil", typ: tar.TypeReg, body: "x"}),
		"absolute":       tarGz(t, entry{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}),
		"content sum":    tarGz(t, entry{name: contentSum, typ: tar.TypeReg, body: "00\n"}),
		"symlink":        tarGz(t, entry{name: "link", typ: tar.TypeSymlink, link: "/etc"}, entry{name: "link/passwd", typ: tar.TypeReg, body: "x"}),
		"symlink up":     tarGz(t, entry{name: "up", typ: tar.TypeSymlink, link: ".."}),
		"hardlink":       tarGz(t, entry{name: "hard", typ: tar.TypeLink, link: "/etc/passwd"}),
		"char device":    tarGz(t, entry{name: "null", typ: tar.TypeChar}),
		"block device":   tarGz(t, entry{name: "sda", typ: tar.TypeBlock}),
		"fifo":           tarGz(t, entry{name: "fifo", typ: tar.TypeFifo}),
		"setuid":         tarGz(t, entry{name: "suid", typ: tar.TypeReg, body: "x", mode: 0o4777}),
		"huge declared":  tarGz(t, entry{name: "big", typ: tar.TypeReg, size: 1 << 40}),
		"over the cap":   tarGz(t, entry{name: "a", typ: tar.TypeReg, zeroBody: 40 << 10}, entry{name: "b", typ: tar.TypeReg, zeroBody: 40 << 10}),
		"gzip bomb":      tarGz(t, entry{name: "zeros", typ: tar.TypeReg, zeroBody: 1 << 20}),
		"header bomb":    tarGz(t, headerBomb(4, 256<<10)...),
		"many entries":   tarGz(t, manyDirs(200)...),
		"file then dir":  tarGz(t, entry{name: "a", typ: tar.TypeReg, body: "x"}, entry{name: "a/b", typ: tar.TypeReg, body: "y"}),
		"duplicate":      tarGz(t, entry{name: "a", typ: tar.TypeReg, body: "x"}, entry{name: "a", typ: tar.TypeReg, body: "y"}),
		"truncated":      valid[:len(valid)/2],
		"not gzip":       []byte("PK\x03\x04 a zip, not a tar.gz"),
		"empty":          {},
		"global pax hdr": tarGz(t, entry{name: "g", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": "global"}}),
	}
}

// headerBomb is n empty files, each with a PAX comment of size bytes:
// nothing on disk, much to decompress.
func headerBomb(n, size int) []entry {
	es := make([]entry, n)
	for i := range es {
		es[i] = entry{name: strings.Repeat("f", i+1), typ: tar.TypeReg, pax: map[string]string{"comment": strings.Repeat("a", size)}}
	}
	return es
}

func manyDirs(n int) []entry {
	es := make([]entry, n)
	for i := range es {
		es[i] = entry{name: strings.Repeat("d", i%50+1) + "/", typ: tar.TypeDir, mode: 0o755}
	}
	return es
}

// TestExtractArchive: the valid archive unpacks with its modes capped; each
// hostile one is refused with an error naming why, and (extractInto checks)
// nothing lands outside the target, no link or device exists, and no more
// than the cap is written.
func TestExtractArchive(t *testing.T) {
	seeds := archiveSeeds(t)
	parent, err := extractInto(t, seeds["valid"], fuzzLimits)
	if err != nil {
		t.Fatalf("valid archive: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(parent, "pkg", "bin", "agent"))
	fi, _ := os.Stat(filepath.Join(parent, "pkg", "bin", "agent"))
	if err != nil || string(b) != "#!/bin/sh\nexit 0\n" || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/agent after extraction: %q %v %v", b, fi.Mode(), err)
	}
	refused := map[string]string{
		"dotdot":         "escapes the package directory",
		"nested dotdot":  "escapes the package directory",
		"absolute":       "escapes the package directory",
		"content sum":    "escapes the package directory",
		"symlink":        "type 2 not allowed",
		"symlink up":     "type 2 not allowed",
		"hardlink":       "type 1 not allowed",
		"char device":    "type 3 not allowed",
		"block device":   "type 4 not allowed",
		"fifo":           "type 6 not allowed",
		"huge declared":  "unpacks to more than 65536 bytes",
		"over the cap":   "unpacks to more than 65536 bytes",
		"gzip bomb":      "unpacks to more than 65536 bytes",
		"header bomb":    "decompresses to more than",
		"many entries":   "more than 64 entries",
		"file then dir":  "not a directory",
		"duplicate":      "file exists",
		"truncated":      "unexpected EOF",
		"not gzip":       "not a gzip archive",
		"empty":          "not a gzip archive",
		"global pax hdr": "type g not allowed",
	}
	for name, want := range refused {
		t.Run(name, func(t *testing.T) {
			if _, err := extractInto(t, seeds[name], fuzzLimits); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
		})
	}
	// Setuid and world-writable bits are dropped, not refused.
	parent, err = extractInto(t, seeds["setuid"], fuzzLimits)
	if fi, _ := os.Stat(filepath.Join(parent, "pkg", "suid")); err != nil || fi.Mode() != 0o755 {
		t.Fatalf("setuid entry: %v, mode %v; want extracted as 0755", err, fi.Mode())
	}
	// The default cap holds 4 GiB; the header bomb is refused under it too
	// only by the stream bound, so check that bound scales with the limits.
	if d := (extractLimits{}); d.bytes() != maxUnpacked || d.entries() != maxEntries {
		t.Fatalf("zero limits: %d bytes, %d entries; want the defaults", d.bytes(), d.entries())
	}
}

// FuzzExtractArchive feeds arbitrary bytes to the agent's archive
// extraction. Whatever the input: no panic, nothing written outside the
// target directory, no symlink, hardlink or device created, no more than
// the cap written, no group/world-writable or setuid file.
func FuzzExtractArchive(f *testing.F) {
	seeds := archiveSeeds(f)
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		f.Add(seeds[name])
	}
	f.Fuzz(func(t *testing.T, archive []byte) {
		extractInto(t, archive, fuzzLimits)
	})
}
