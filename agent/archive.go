package agent

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Default bounds of one package archive. A release is signed by a trusted
// publisher, but a signed archive can still be a mistake or a bomb: the
// agent refuses it rather than fill the disk.
const (
	maxUnpacked = 4 << 30 // bytes of regular files
	maxEntries  = 100_000 // entries of any kind
	// tarOverhead is what one entry may add to the decompressed stream
	// beyond its file's bytes: headers, PAX records, long names, padding.
	tarOverhead = 4 << 10
)

// extractLimits bounds one extraction. The zero value means the defaults
// above; tests use small ones.
type extractLimits struct {
	// maxBytes bounds the sum of the declared sizes of the regular files
	// (0: maxUnpacked). Checked before a file's first byte is written.
	maxBytes int64
	// maxEntries bounds the number of tar entries (0: maxEntries).
	maxEntries int
}

func (l extractLimits) bytes() int64 {
	if l.maxBytes > 0 {
		return l.maxBytes
	}
	return maxUnpacked
}

func (l extractLimits) entries() int {
	if l.maxEntries > 0 {
		return l.maxEntries
	}
	return maxEntries
}

// stream bounds the decompressed tar stream, so that a gzip bomb of
// headers, PAX records or skipped bytes costs no more than the files would.
func (l extractLimits) stream() int64 {
	return l.bytes() + int64(l.entries()+1)*tarOverhead
}

// boundedReader fails once more than n bytes have been read, with an error
// that says so (not io.EOF, which would read as a truncated archive).
type boundedReader struct {
	r     io.Reader
	n     int64 // bytes still allowed
	limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, fmt.Errorf("archive decompresses to more than %d bytes", b.limit)
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// extractTarGz unpacks a gzip-compressed tar stream into dir, an existing
// empty directory. Only regular files and directories are created, each
// strictly inside dir (absolute names, ".." and links are refused, not
// rewritten); modes keep at most rwxr-xr-x. Nothing is fsynced (syncTree
// does that once the whole archive is out). On error dir may hold part of
// the archive: the caller removes it.
func extractTarGz(r io.Reader, dir string, lim extractLimits) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("not a gzip archive: %w", err)
	}
	tr := tar.NewReader(&boundedReader{r: gz, n: lim.stream(), limit: lim.stream()})
	var total int64
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if n >= lim.entries() {
			return fmt.Errorf("archive has more than %d entries", lim.entries())
		}
		name := filepath.Clean(hdr.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) || name == contentSum {
			return fmt.Errorf("archive entry %q escapes the package directory", hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if hdr.Size > lim.bytes()-total {
				return fmt.Errorf("archive unpacks to more than %d bytes", lim.bytes())
			}
			total += hdr.Size
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := writeFile(target, tr, os.FileMode(hdr.Mode)&0o755|0o400); err != nil {
				return err
			}
		default:
			// Links and devices could point outside the package.
			return fmt.Errorf("archive entry %q: type %c not allowed (regular files and directories only)", hdr.Name, hdr.Typeflag)
		}
	}
}

func writeFile(path string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncTree makes every file and directory under dir durable, directories
// after their contents.
func syncTree(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	})
	if err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := syncDir(paths[i]); err != nil { // an fsync of whatever the path is
			return err
		}
	}
	return nil
}
