package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testStore(t *testing.T) *store {
	t.Helper()
	s, err := newStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// volumeWithSnapshot makes volume pvc-a holding two files and cuts snapshot snap-a of it.
func volumeWithSnapshot(t *testing.T, s *store) (volumeRecord, snapshotRecord) {
	t.Helper()
	v, err := s.createVolume("pvc-a", 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.volumeDir(v.ID), "data.bin"), "bytes a test put here")
	writeFile(t, filepath.Join(s.volumeDir(v.ID), "sub", "nested.txt"), "nested")
	r, err := s.createSnapshot("snap-a", v.ID, t0)
	if err != nil {
		t.Fatal(err)
	}
	return v, r
}

func TestRestoreGivesTheSnapshottedBytes(t *testing.T) {
	s := testStore(t)
	v, r := volumeWithSnapshot(t, s)
	if r.SizeBytes != v.CapacityBytes || r.SHA256 == "" || !r.CreatedAt.Equal(t0) {
		t.Fatalf("snapshot record %+v", r)
	}
	// Later writes to the source do not reach the snapshot.
	writeFile(t, filepath.Join(s.volumeDir(v.ID), "data.bin"), "changed after the snapshot")
	restored, err := s.createVolume("pvc-b", 1<<20, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(s.volumeDir(restored.ID), "data.bin")); got != "bytes a test put here" {
		t.Fatalf("restored data.bin = %q", got)
	}
	if got := readFile(t, filepath.Join(s.volumeDir(restored.ID), "sub", "nested.txt")); got != "nested" {
		t.Fatalf("restored sub/nested.txt = %q", got)
	}
}

func TestRestoreFromACorruptedArchiveFailsAndLeavesNoVolume(t *testing.T) {
	s := testStore(t)
	_, r := volumeWithSnapshot(t, s)
	b, _ := os.ReadFile(s.archive(r.ID))
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(s.archive(r.ID), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.createVolume("pvc-b", 1<<20, r.ID)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("want a checksum mismatch, got %v", err)
	}
	if _, err := os.Stat(s.volumeDir("pvc-b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed restore left a volume directory: %v", err)
	}
	if _, err := s.getVolume("pvc-b"); !errors.Is(err, errNotFound) {
		t.Fatalf("a failed restore left a volume record: %v", err)
	}
}

func TestRestoreFromAMissingArchiveFails(t *testing.T) {
	s := testStore(t)
	_, r := volumeWithSnapshot(t, s)
	os.Remove(s.archive(r.ID))
	if _, err := s.createVolume("pvc-b", 1<<20, r.ID); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("want a missing archive error, got %v", err)
	}
}

func TestRestoreSmallerThanTheSnapshotFails(t *testing.T) {
	s := testStore(t)
	_, r := volumeWithSnapshot(t, s)
	if _, err := s.createVolume("pvc-b", 1<<10, r.ID); !errors.Is(err, errInvalid) {
		t.Fatalf("want errInvalid, got %v", err)
	}
}

func TestSnapshotOfAVolumeWithoutItsDirectoryFails(t *testing.T) {
	s := testStore(t)
	v, err := s.createVolume("pvc-a", 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(s.volumeDir(v.ID))
	if _, err := s.createSnapshot("snap-a", v.ID, t0); !errors.Is(err, errNotFound) || !strings.Contains(err.Error(), "no directory") {
		t.Fatalf("want a missing directory error, got %v", err)
	}
	if got, _ := s.listSnapshots("", ""); len(got) != 0 {
		t.Fatalf("a failed snapshot was recorded: %+v", got)
	}
}

func TestCreatesAreIdempotentAndConflictsRefused(t *testing.T) {
	s := testStore(t)
	v, r := volumeWithSnapshot(t, s)
	again, err := s.createVolume("pvc-a", 1<<20, "")
	if err != nil || again != v {
		t.Fatalf("repeating a create: %+v, %v", again, err)
	}
	if _, err := s.createVolume("pvc-a", 2<<20, ""); !errors.Is(err, errAlreadyExists) {
		t.Fatalf("same name, other capacity: %v", err)
	}
	snapAgain, err := s.createSnapshot("snap-a", v.ID, t0.Add(time.Hour))
	if err != nil || snapAgain != r {
		t.Fatalf("repeating a snapshot: %+v, %v", snapAgain, err)
	}
	other, _ := s.createVolume("pvc-c", 1<<20, "")
	if _, err := s.createSnapshot("snap-a", other.ID, t0); !errors.Is(err, errAlreadyExists) {
		t.Fatalf("same snapshot name, other volume: %v", err)
	}
}

func TestDeletesRemoveFilesAndToleratesUnknownIDs(t *testing.T) {
	s := testStore(t)
	v, r := volumeWithSnapshot(t, s)
	if err := s.deleteSnapshot(r.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.deleteVolume(v.ID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{s.archive(r.ID), s.snapshotMeta(r.ID), s.volumeDir(v.ID), s.volumeMeta(v.ID)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still exists", p)
		}
	}
	if err := s.deleteSnapshot("snapshot-unknown"); err != nil {
		t.Fatal(err)
	}
	if err := s.deleteVolume("../../etc"); err != nil {
		t.Fatal(err)
	}
}

func TestUnsafeNamesGetHashedIDs(t *testing.T) {
	if id := idFor("pvc-0a1b"); id != "pvc-0a1b" {
		t.Fatalf("a safe name is its own id: %s", id)
	}
	id := idFor("../Escape/ME")
	if !safeID.MatchString(id) || strings.Contains(id, "/") {
		t.Fatalf("unsafe id %q", id)
	}
}

func tarGz(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		h := h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestExtractRefusesEntriesOutsideTheVolume(t *testing.T) {
	for name, archive := range map[string][]byte{
		"dot-dot":      tarGz(t, tar.Header{Name: "../outside", Typeflag: tar.TypeReg, Mode: 0o644}),
		"absolute":     tarGz(t, tar.Header{Name: "/etc/outside", Typeflag: tar.TypeReg, Mode: 0o644}),
		"through-link": tarGz(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, tar.Header{Name: "l/x", Typeflag: tar.TypeReg, Mode: 0o644}),
	} {
		if err := extractArchive(bytes.NewReader(archive), t.TempDir()); err == nil {
			t.Errorf("%s: extracted", name)
		}
	}
}
